"""Custom ops (torch.library) that the graph passes rewrite reductions into.

Each op has a fake (meta) implementation for tracing and dynamic shapes, one implementation for
every device (the kernel launcher picks compiled Triton on CUDA and Triton's interpreter on CPU),
and an autograd formula so eager training through the ops works. Inside torch.compile the
backward graph is built from aten's own formulas before our passes run, so the backward's matmuls
are rewritten too.
"""

from __future__ import annotations

from typing import Optional

import torch

from .kernels.matmul import invariant_matmul as _invariant_matmul_kernel

LIBRARY = "inductor_bi"


# ---------------------------------------------------------------------------------------------
# invariant_matmul: mm, addmm, bmm, baddbmm
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op(f"{LIBRARY}::invariant_matmul", mutates_args=())
def invariant_matmul(
    a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor], beta: float, alpha: float
) -> torch.Tensor:
    """``alpha * (a @ b) + beta * bias``; 2-D or 3-D (batched) operands; fixed K order."""
    return _invariant_matmul_kernel(a, b, bias, beta=beta, alpha=alpha)


@invariant_matmul.register_fake
def _(a, b, bias, beta, alpha):
    torch._check(a.dtype == b.dtype, lambda: f"invariant_matmul: dtypes differ: {a.dtype} vs {b.dtype}")
    torch._check(a.shape[-1] == b.shape[-2], lambda: f"invariant_matmul: cannot multiply {a.shape} by {b.shape}")
    return a.new_empty((*a.shape[:-1], b.shape[-1]))


def _matmul_setup_context(ctx, inputs, output):
    a, b, bias, beta, alpha = inputs
    ctx.save_for_backward(a, b)
    ctx.bias_shape = None if bias is None else bias.shape
    ctx.beta, ctx.alpha = beta, alpha


def _matmul_backward(ctx, grad):
    a, b = ctx.saved_tensors
    grad_a = grad_b = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_a = invariant_matmul(grad, b.transpose(-1, -2), None, 1.0, ctx.alpha)
    if ctx.needs_input_grad[1]:
        grad_b = invariant_matmul(a.transpose(-1, -2), grad, None, 1.0, ctx.alpha)
    if ctx.bias_shape is not None and ctx.needs_input_grad[2]:
        grad_bias = (grad * ctx.beta).sum_to_size(ctx.bias_shape)
    return grad_a, grad_b, grad_bias, None, None


invariant_matmul.register_autograd(_matmul_backward, setup_context=_matmul_setup_context)
