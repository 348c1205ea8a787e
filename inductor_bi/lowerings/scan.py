"""invariant_cumsum / invariant_cumprod / invariant_logcumsumexp launched by Inductor
(kernels/scan.py): one program per row walks the row in pinned blocks, so the scanned length L
sets the order; it must be static (and at least 2: Inductor passes an L of 1 as a constexpr, a
binary of its own). The rows may be symbolic: they are only the grid."""

from __future__ import annotations

import torch

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import scan as scan_kernel
from ..passes._rewrite import fake_value, static_int
from ._launches import Lowering, on_cuda


def _traceable(node: torch.fx.Node) -> bool:
    """A CUDA input, an output dtype the kernel scans in, a static scanned length of 2 or more."""
    x, out = fake_value(node.args[0]), fake_value(node)
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or not on_cuda(node, 0):
        return False
    if out.dtype not in scan_kernel.SUPPORTED_DTYPES or x.dim() == 0:
        return False
    dim = node.args[1] if len(node.args) > 1 else node.kwargs["dim"]
    length = static_int(x.shape[dim % x.dim()])
    return length is not None and length >= 2


LOWERINGS = {
    torch.ops.inductor_bi.invariant_cumsum.default: Lowering(scan_kernel.invariant_cumsum, _traceable),
    torch.ops.inductor_bi.invariant_cumprod.default: Lowering(scan_kernel.invariant_cumprod, _traceable),
    torch.ops.inductor_bi.invariant_logcumsumexp.default: Lowering(scan_kernel.invariant_logcumsumexp, _traceable),
}
