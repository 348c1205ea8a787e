"""The row reductions launched by Inductor (kernels/reduction.py): invariant_rms_norm_rows,
invariant_layer_norm, invariant_softmax / invariant_log_softmax, invariant_sum / invariant_mean,
invariant_var_mean / invariant_std_mean. One program per row; the reduced extent R sets BLOCK_R
and num_warps (constexprs), so it must be static, and at least 2 (Inductor's launcher passes an
R of 1 as a constexpr: a binary of its own, left to the custom op rather than trusted to give the
same bits). The row count may be symbolic: it is only the grid.

The kernels read dense ``[rows, R]`` rows. Inductor holds each tensor it passes to a launch to
the exact strides the trace saw (make_fx records them on the launch as ``eager_input_vals``, and
the pattern matcher carries them over), so a padded or strided buffer is copied first, as the
custom op copies a non-contiguous input."""

from __future__ import annotations

import torch
import torch.fx

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import reduction as reduction_kernel
from .._fx import fake_value, static_int
from ._launches import Lowering, on_cuda

bi = torch.ops.inductor_bi


def _arg(node: torch.fx.Node, index: int, name: str, default=None):
    if index < len(node.args):
        return node.args[index]
    return node.kwargs.get(name, default)


def _static_extent(x: torch.Tensor, dims) -> bool:
    """The product of ``x``'s sizes at ``dims`` is static and at least 2."""
    extent = 1
    for d in dims:
        size = static_int(x.shape[d])
        if size is None:
            return False
        extent *= size
    return extent >= 2


def _input(node: torch.fx.Node, dtypes=reduction_kernel.SUPPORTED_DTYPES) -> torch.Tensor | None:
    """The node's input (argument 0) when it is a CUDA tensor of ``dtypes``; else None."""
    x = fake_value(node.args[0])
    return x if isinstance(x, torch.Tensor) and on_cuda(node, 0, dtypes=dtypes) else None


def _reduced_dims(x: torch.Tensor, dims) -> list[int] | None:
    try:
        return reduction_kernel._canonical_dims(x, dims)
    except (IndexError, RuntimeError):
        return None  # the custom op says what is wrong when it runs


def _sum_traceable(node: torch.fx.Node) -> bool:
    """invariant_sum / invariant_mean: a CUDA float input (and addend), a float output dtype, a
    static reduced extent."""
    x = _input(node)
    dtype = _arg(node, 3, "dtype")
    addend = _arg(node, 5, "addend")
    if x is None or (dtype is not None and dtype not in reduction_kernel.SUPPORTED_DTYPES):
        return False
    if addend is not None and not on_cuda(node, 5):
        return False
    dims = _reduced_dims(x, _arg(node, 1, "dims"))
    return dims is not None and _static_extent(x, dims)


def _var_mean_traceable(node: torch.fx.Node) -> bool:
    """invariant_var_mean / invariant_std_mean: a CUDA float input, a static reduced extent."""
    x = _input(node)
    dims = None if x is None else _reduced_dims(x, _arg(node, 1, "dims"))
    return dims is not None and _static_extent(x, dims)


def _softmax_traceable(node: torch.fx.Node) -> bool:
    """invariant_softmax / invariant_log_softmax: a CUDA float input, a static softmax extent."""
    x = _input(node)
    dims = None if x is None else _reduced_dims(x, [node.args[1]])
    return dims is not None and _static_extent(x, dims)


def _layer_norm_traceable(node: torch.fx.Node) -> bool:
    """invariant_layer_norm: CUDA input, weight and bias, static normalized dims."""
    x = _input(node)
    shape = node.args[1]
    if x is None or not on_cuda(node, 2, 3) or not all(isinstance(s, int) for s in shape):
        return False
    n = len(shape)
    return 0 < n <= x.dim() and _static_extent(x, range(x.dim() - n, x.dim()))


def _rms_norm_rows_traceable(node: torch.fx.Node) -> bool:
    """invariant_rms_norm_rows: CUDA fp16 / bf16 / fp32 rows of a static length, CUDA weight and
    addend; eps a number or a 0-dim CPU tensor (its value is then computed on the GPU in-graph)."""
    x = _input(node, dtypes=tuple(reduction_kernel._TL_DTYPES))
    if x is None or x.dim() == 0 or not on_cuda(node, 2, 5):
        return False
    eps_tensor = fake_value(_arg(node, 6, "eps_tensor"))
    if eps_tensor is not None and not (isinstance(eps_tensor, torch.Tensor) and eps_tensor.numel() == 1 and eps_tensor.device.type == "cpu"):
        return False
    return _static_extent(x, [x.dim() - 1])


LOWERINGS = {
    bi.invariant_rms_norm_rows.default: Lowering(reduction_kernel.invariant_rms_norm_rows, _rms_norm_rows_traceable),
    bi.invariant_layer_norm.default: Lowering(reduction_kernel.invariant_layer_norm, _layer_norm_traceable),
    bi.invariant_softmax.default: Lowering(reduction_kernel.invariant_softmax, _softmax_traceable),
    bi.invariant_log_softmax.default: Lowering(reduction_kernel.invariant_log_softmax, _softmax_traceable),
    bi.invariant_sum.default: Lowering(reduction_kernel.invariant_sum, _sum_traceable),
    bi.invariant_mean.default: Lowering(reduction_kernel.invariant_mean, _sum_traceable),
    bi.invariant_var_mean.default: Lowering(reduction_kernel.invariant_var_mean, _var_mean_traceable),
    bi.invariant_std_mean.default: Lowering(reduction_kernel.invariant_std_mean, _var_mean_traceable),
}
