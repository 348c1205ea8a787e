"""invariant_grouped_mm and exact_histc launched by Inductor (kernels/moe.py).

The grouped matmul: K sets the chunking constexprs and must be static; the group count sets the
tile search's width (static: the experts' weights); the rows (tokens x top-k) may be symbolic,
and the group offsets are data, read only on the device: the grid covers the worst case of the
group sizes and its programs find their group themselves, so a launch serves every routing.

The histogram: its range is a compile-time constant (the edges are constexprs); ``min == max``
(the data's range, read on the host) and a range the custom op refuses keep the custom op."""

from __future__ import annotations

import math

import torch

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import moe as moe_kernel
from ..kernels.matmul import SUPPORTED_DTYPES as MATMUL_DTYPES
from .._fx import fake_value
from ._launches import Lowering, on_cuda, static_sizes


def _grouped_mm_traceable(node: torch.fx.Node) -> bool:
    """CUDA operands of a real dtype, int offsets, a static K and a static group count."""
    a, b, offs = (fake_value(arg) for arg in node.args[:3])
    if not all(isinstance(t, torch.Tensor) for t in (a, b, offs)) or not on_cuda(node, 0, 1, 2):
        return False
    return (
        a.dtype == b.dtype in MATMUL_DTYPES
        and offs.dtype in (torch.int32, torch.int64)
        and a.dim() == 2 and b.dim() == 3 and offs.dim() == 1
        and static_sizes(a, [1])
        and static_sizes(b, [0, 1, 2])
    )  # fmt: skip


def _histc_traceable(node: torch.fx.Node) -> bool:
    """A CUDA float32 / float64 input and a finite range given at compile time (min < max)."""
    x = fake_value(node.args[0])
    if not isinstance(x, torch.Tensor) or not on_cuda(node, 0, dtypes=moe_kernel.HISTC_DTYPES):
        return False
    bins, lo, hi = (list(node.args[1:4]) + [0.0, 0.0])[:3]
    return isinstance(bins, int) and bins > 0 and math.isfinite(lo) and math.isfinite(hi) and float(lo) < float(hi)


LOWERINGS = {
    torch.ops.inductor_bi.invariant_grouped_mm.default: Lowering(moe_kernel.invariant_grouped_mm, _grouped_mm_traceable),
    torch.ops.inductor_bi.exact_histc.default: Lowering(moe_kernel.exact_histc, _histc_traceable),
}
