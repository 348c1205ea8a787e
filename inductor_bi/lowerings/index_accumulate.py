"""fixed_order_index_put_accumulate / fixed_order_embedding_dense_backward / fixed_order_scatter_add
launched by Inductor (kernels/index_accumulate.py): a training step's embedding (and gather)
gradient without a Python dispatch.

The stable sort of the destination keys and the masks are aten ops Inductor compiles; the
segment sums are one launch over (source positions x column blocks). The destination's shape
sets the number of rows and columns (the keys' range and the column blocks), so it must be
static (a weight's: vocab x hidden); the source positions (batch x tokens) may be symbolic, a
grid size and a loop bound only. An out-of-range index stops on a device assert, as in the custom
op. ``scale_grad_by_freq`` (its counts by an in-place put) keeps the custom op."""

from __future__ import annotations

import torch

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import index_accumulate as index_accumulate_kernel
from .._fx import fake_value, static_int
from ._launches import Lowering, on_cuda, static_sizes


def _tensors(*values) -> bool:
    return all(isinstance(v, torch.Tensor) for v in values)


def _static_destination(node: torch.fx.Node, *cuda_args: int) -> bool:
    """The tensors at ``cuda_args`` on CUDA, a destination (argument 0) of a kernel dtype with a
    static shape (it sets the keys' range and the column blocks)."""
    dest = fake_value(node.args[0])
    return (
        _tensors(dest)
        and on_cuda(node, 0, *cuda_args)
        and dest.dtype in index_accumulate_kernel.SUPPORTED_DTYPES
        and static_sizes(dest, range(dest.dim()))
    )


def _put_traceable(node: torch.fx.Node) -> bool:
    """(dest, indices, values, mask): CUDA tensors, a static destination."""
    indices = node.args[1]
    on_device = all(isinstance(fake_value(i), torch.Tensor) and fake_value(i).device.type == "cuda" for i in indices)
    return on_device and _tensors(fake_value(node.args[2])) and _static_destination(node, 2, 3)


def _scatter_add_traceable(node: torch.fx.Node) -> bool:
    """(dest, dim, index, src): CUDA tensors, a static destination."""
    return _static_destination(node, 2, 3)


def _embedding_backward_traceable(node: torch.fx.Node) -> bool:
    """CUDA grad and indices, a static weight shape (num_weights and the grad's row width), no
    scale_grad_by_freq."""
    grad, index = fake_value(node.args[0]), fake_value(node.args[1])
    if not _tensors(grad, index) or not on_cuda(node, 0, 1):
        return False
    scale_grad_by_freq = node.args[4] if len(node.args) > 4 else node.kwargs.get("scale_grad_by_freq", False)
    return (
        grad.dtype in index_accumulate_kernel.SUPPORTED_DTYPES
        and scale_grad_by_freq is False
        and static_int(node.args[2]) is not None
        and static_sizes(grad, range(index.dim(), grad.dim()))
    )


LOWERINGS = {
    torch.ops.inductor_bi.fixed_order_index_put_accumulate.default: Lowering(
        index_accumulate_kernel.fixed_order_index_put_accumulate, _put_traceable
    ),
    torch.ops.inductor_bi.fixed_order_embedding_dense_backward.default: Lowering(
        index_accumulate_kernel.fixed_order_embedding_dense_backward, _embedding_backward_traceable
    ),
    torch.ops.inductor_bi.fixed_order_scatter_add.default: Lowering(index_accumulate_kernel.fixed_order_scatter_add, _scatter_add_traceable),
}
