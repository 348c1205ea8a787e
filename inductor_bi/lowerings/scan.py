"""invariant_cumsum / invariant_cumprod / invariant_logcumsumexp launched by Inductor
(kernels/scan.py): one program per row walks the row in pinned blocks, so the scanned length L
sets the order, as a loop bound only: it may be symbolic, as the rows may (the grid). L must be
known to be at least 2 (Inductor passes an L of 1 as a constexpr, a binary of its own; Dynamo's
size symbols are at least 2)."""

from __future__ import annotations

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import scan as scan_kernel
from .._fx import fake_value
from ._launches import Lowering, on_cuda


def _traceable(node: torch.fx.Node) -> bool:
    """A CUDA input, an output dtype the kernel scans in, a scanned length known to be 2 or more."""
    x, out = fake_value(node.args[0]), fake_value(node)
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or not on_cuda(node, 0):
        return False
    if out.dtype not in scan_kernel.SUPPORTED_DTYPES or x.dim() == 0:
        return False
    dim = node.args[1] if len(node.args) > 1 else node.kwargs["dim"]
    return statically_known_true(x.shape[dim % x.dim()] >= 2)


LOWERINGS = {
    torch.ops.inductor_bi.invariant_cumsum.default: Lowering(scan_kernel.invariant_cumsum, _traceable),
    torch.ops.inductor_bi.invariant_cumprod.default: Lowering(scan_kernel.invariant_cumprod, _traceable),
    torch.ops.inductor_bi.invariant_logcumsumexp.default: Lowering(scan_kernel.invariant_logcumsumexp, _traceable),
}
