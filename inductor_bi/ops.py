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

from .kernels import attention as _attention
from .kernels import reduction
from .kernels.attention import fixed_split_attention as _fixed_split_attention_kernel
from .kernels.matmul import invariant_matmul as _invariant_matmul_kernel

LIBRARY = "inductor_bi"


# ---------------------------------------------------------------------------------------------
# invariant_matmul: mm, addmm, bmm, baddbmm
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op(f"{LIBRARY}::invariant_matmul", mutates_args=())
def invariant_matmul(
    a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor], beta: float, alpha: float
) -> torch.Tensor:
    """``alpha * (a @ b) + beta * bias``; 2-D or 3-D (batched) operands, floating or complex; fixed K order."""
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
    # conjugate transposes, as aten.mm's formula (for real tensors .mH is .mT)
    if ctx.needs_input_grad[0]:
        grad_a = invariant_matmul(grad, b.mH.resolve_conj(), None, 1.0, ctx.alpha)
    if ctx.needs_input_grad[1]:
        grad_b = invariant_matmul(a.mH.resolve_conj(), grad, None, 1.0, ctx.alpha)
    if ctx.bias_shape is not None and ctx.needs_input_grad[2]:
        grad_bias = (grad * ctx.beta).sum_to_size(ctx.bias_shape)
    return grad_a, grad_b, grad_bias, None, None


invariant_matmul.register_autograd(_matmul_backward, setup_context=_matmul_setup_context)


# ---------------------------------------------------------------------------------------------
# fixed_split_attention: scaled_dot_product_attention
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op(f"{LIBRARY}::fixed_split_attention", mutates_args=())
def fixed_split_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: Optional[torch.Tensor],
    is_causal: bool,
    scale: Optional[float],
    enable_gqa: bool,
    kv_rows: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """SDPA with fixed KV splits: a query's bits do not depend on batch, Lq, or decode vs prefill.
    ``kv_rows``: k / v are whole caches and batch row b reads slot kv_rows[b] (no gather copy)."""
    return _fixed_split_attention_kernel(
        q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa, kv_rows=kv_rows
    )


@fixed_split_attention.register_fake
def _(q, k, v, attn_mask, is_causal, scale, enable_gqa, kv_rows=None):
    lead, heads, squeeze = _attention.output_layout(q, k, v, enable_gqa, kv_rows)
    out = _attention.empty_output(lead, heads, q.shape[-2], v.shape[-1], q.dtype, q.device)
    return out.select(0, 0) if squeeze else out


def _attention_setup_context(ctx, inputs, output):
    q, k, v, attn_mask, is_causal, scale, enable_gqa, *rest = inputs
    if rest and rest[0] is not None:
        raise NotImplementedError("fixed_split_attention: kv_rows (a cache read in place) is for inference; it has no backward")
    ctx.save_for_backward(q, k, v, attn_mask)
    ctx.is_causal, ctx.scale, ctx.enable_gqa = is_causal, scale, enable_gqa


def _attention_backward(ctx, grad_out):
    """Plain (math) backward in fp32: recompute P = softmax(QK^T * scale + mask), then the usual
    formulas. Not fused, but correct; inside torch.compile its matmuls and sums are rewritten to
    the invariant kernels like any other. Each input's gradient is summed to its own shape over
    what the forward broadcast it to (batch dims, a single head, a GQA group's heads, a mask's
    broadcast dims): sums over a fixed extent, rewritten to invariant_sum under torch.compile."""
    q, k, v, attn_mask = ctx.saved_tensors
    lead, heads, _ = _attention.output_layout(q, k, v, ctx.enable_gqa, None)
    rank = max(q.dim(), k.dim(), v.dim(), 3)
    qf, kf, vf = (x.float()[(None,) * (rank - x.dim())] for x in (q, k, v))
    go = grad_out.float().reshape(*lead, heads, q.shape[-2], v.shape[-1])
    # GQA: a K/V head serves its group of query heads (a single head broadcasts as it is).
    kf, vf = (x if x.shape[-3] in (1, heads) else x.repeat_interleave(heads // x.shape[-3], dim=-3) for x in (kf, vf))
    scale = ctx.scale if ctx.scale is not None else q.shape[-1] ** -0.5
    scores = (qf @ kf.transpose(-1, -2)) * scale
    if ctx.is_causal:
        lq, lk = scores.shape[-2:]
        visible = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~visible, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask.float()
    # A row that sees no key has output 0 whatever q, k, v are (the forward's, torch's): p = 0,
    # not softmax's NaN over a row of -inf. (A NaN score is not -inf: it still propagates.)
    sees = ~(scores == float("-inf")).all(dim=-1, keepdim=True)  # a bool reduction: exact
    p = torch.softmax(scores.masked_fill(~sees, 0.0), dim=-1).masked_fill(~sees, 0.0)
    grad_v = p.transpose(-1, -2) @ go
    grad_p = go @ vf.transpose(-1, -2)
    grad_s = p * (grad_p - (grad_p * p).sum(dim=-1, keepdim=True))
    grad_q = (grad_s @ kf) * scale
    grad_k = (grad_s.transpose(-1, -2) @ qf) * scale

    def to_input(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-3] if x.dim() >= 3 else 1
        if h not in (1, heads):  # GQA: the group's query heads
            grad = grad.reshape(*grad.shape[:-3], h, heads // h, *grad.shape[-2:]).sum(-3)
        return grad.sum_to_size((1,) * (rank - x.dim()) + tuple(x.shape)).reshape(x.shape).to(x.dtype)

    grad_mask = None
    if attn_mask is not None and attn_mask.dtype != torch.bool and ctx.needs_input_grad[3]:
        # A learned additive mask (a position bias): d loss / d scores, summed to its shape.
        grad_mask = grad_s.sum_to_size(attn_mask.shape).to(attn_mask.dtype)
    return to_input(grad_q, q), to_input(grad_k, k), to_input(grad_v, v), grad_mask, None, None, None, None


fixed_split_attention.register_autograd(_attention_backward, setup_context=_attention_setup_context)


# ---------------------------------------------------------------------------------------------
# Reductions: sum, mean, var_mean, softmax, log_softmax, layer_norm
# ---------------------------------------------------------------------------------------------
# The fake implementations call the aten op itself on fake tensors: shapes and dtypes then match
# aten's exactly (keepdim, dtype promotion, layer norm's stats dtype per device).


@torch.library.custom_op(f"{LIBRARY}::invariant_sum", mutates_args=())
def invariant_sum(
    x: torch.Tensor, dims: Optional[list[int]], keepdim: bool, dtype: Optional[torch.dtype], square: bool = False, addend: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """aten.sum with a fixed per-row order (of ``x * x`` squared in the accumulator dtype with
    ``square``; of ``x + addend`` as that add rounds it, with ``addend``)."""
    return reduction.invariant_sum(x, dims, keepdim, dtype, square, addend)


@invariant_sum.register_fake
def _(x, dims, keepdim, dtype, square=False, addend=None):
    return torch.sum(x, dims or list(range(x.dim())), keepdim, dtype=dtype)


@torch.library.custom_op(f"{LIBRARY}::invariant_mean", mutates_args=())
def invariant_mean(
    x: torch.Tensor, dims: Optional[list[int]], keepdim: bool, dtype: Optional[torch.dtype], square: bool = False, addend: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """aten.mean with a fixed per-row order (``square`` and ``addend`` as in invariant_sum)."""
    return reduction.invariant_mean(x, dims, keepdim, dtype, square, addend)


@invariant_mean.register_fake
def _(x, dims, keepdim, dtype, square=False, addend=None):
    return torch.mean(x, dims or list(range(x.dim())), keepdim, dtype=dtype)


@torch.library.custom_op(f"{LIBRARY}::invariant_rms_norm_rows", mutates_args=())
def invariant_rms_norm_rows(
    x: torch.Tensor,
    eps: float,
    weight: Optional[torch.Tensor],
    normalized_dtype: Optional[torch.dtype],
    out_dtype: torch.dtype,
    addend: Optional[torch.Tensor] = None,
    eps_tensor: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A hand-written RMSNorm (and the residual add before it) in one row kernel: (out, h)."""
    return reduction.invariant_rms_norm_rows(x, eps, weight, normalized_dtype, out_dtype, addend, eps_tensor)


@invariant_rms_norm_rows.register_fake
def _(x, eps, weight, normalized_dtype, out_dtype, addend=None, eps_tensor=None):
    return x.new_empty(x.shape, dtype=out_dtype), x.new_empty(x.shape if addend is not None else (0,))


@torch.library.custom_op(f"{LIBRARY}::invariant_var_mean", mutates_args=())
def invariant_var_mean(
    x: torch.Tensor, dims: Optional[list[int]], correction: float, keepdim: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """aten.var_mean (correction form) with a fixed two-pass per-row order."""
    return reduction.invariant_var_mean(x, dims, correction, keepdim)


@invariant_var_mean.register_fake
def _(x, dims, correction, keepdim):
    return torch.var_mean(x, dims or list(range(x.dim())), correction=correction, keepdim=keepdim)


@torch.library.custom_op(f"{LIBRARY}::invariant_softmax", mutates_args=())
def invariant_softmax(x: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor:
    """aten._softmax with a fixed per-row order."""
    return reduction.invariant_softmax(x, dim, half_to_float)


@invariant_softmax.register_fake
def _(x, dim, half_to_float):
    return torch.ops.aten._softmax(x, dim, half_to_float)


@torch.library.custom_op(f"{LIBRARY}::invariant_log_softmax", mutates_args=())
def invariant_log_softmax(x: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor:
    """aten._log_softmax with a fixed per-row order."""
    return reduction.invariant_log_softmax(x, dim, half_to_float)


@invariant_log_softmax.register_fake
def _(x, dim, half_to_float):
    return torch.ops.aten._log_softmax(x, dim, half_to_float)


@torch.library.custom_op(f"{LIBRARY}::invariant_layer_norm", mutates_args=())
def invariant_layer_norm(
    x: torch.Tensor, normalized_shape: list[int], weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """aten.native_layer_norm -> (out, mean, rstd) with a fixed per-row order."""
    out, mean, rstd = reduction.invariant_layer_norm(x, list(normalized_shape), weight, bias, eps)
    return out, mean, rstd


@invariant_layer_norm.register_fake
def _(x, normalized_shape, weight, bias, eps):
    return torch.ops.aten.native_layer_norm(x, normalized_shape, weight, bias, eps)


# =============================================================================================
# MoE routing (passes/moe.py, kernels/moe.py): invariant_grouped_mm, exact_histc.
# A separate block, appended; nothing above depends on it.
# =============================================================================================

from .kernels import moe as _moe  # noqa: E402


@torch.library.custom_op(f"{LIBRARY}::invariant_grouped_mm", mutates_args=())
def invariant_grouped_mm(a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """aten._grouped_mm's [S, K] x [G, K, N] form: each group's rows through invariant_matmul."""
    return _moe.invariant_grouped_mm(a, b, offs)


@invariant_grouped_mm.register_fake
def _(a, b, offs):
    torch._check(a.dtype == b.dtype, lambda: f"invariant_grouped_mm: dtypes differ: {a.dtype} vs {b.dtype}")
    torch._check(a.shape[1] == b.shape[1], lambda: f"invariant_grouped_mm: cannot multiply {a.shape} by {b.shape}")
    return a.new_empty((a.shape[0], b.shape[2]))


def _grouped_mm_setup_context(ctx, inputs, output):
    a, b, offs = inputs
    ctx.save_for_backward(a, b, offs)


def _grouped_mm_backward(ctx, grad):
    a, b, offs = ctx.saved_tensors
    grad_a = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_a = invariant_grouped_mm(grad, b.transpose(1, 2), offs)
    if ctx.needs_input_grad[1]:
        grad_b = _moe.grouped_mm_weight_grad(a, grad, offs, b.shape[0])
    return grad_a, grad_b, None


invariant_grouped_mm.register_autograd(_grouped_mm_backward, setup_context=_grouped_mm_setup_context)


@torch.library.custom_op(f"{LIBRARY}::exact_histc", mutates_args=())
def exact_histc(x: torch.Tensor, bins: int, min: float, max: float) -> torch.Tensor:
    """aten.histc over float32 / float64, counted in int64 (exact in any order)."""
    return _moe.exact_histc(x, bins, min, max)


@exact_histc.register_fake
def _(x, bins, min, max):
    return x.new_empty((bins,))


# =============================================================================================
# Scans (passes/scan.py, kernels/scan.py): invariant_cumsum, invariant_cumprod,
# invariant_logcumsumexp. A separate block, appended; nothing above depends on it.
# Their backward formulas are aten's, with every scan and sum in them on the invariant kernels.
# =============================================================================================

from .kernels import scan as _scan  # noqa: E402


def _scan_fake(out: torch.Tensor) -> torch.Tensor:
    """aten's output shape and dtype (from the aten op on fake tensors); contiguous, as the kernel's."""
    return out.new_empty(out.shape)


def _reversed(scan, t: torch.Tensor, dim: int) -> torch.Tensor:
    """``scan`` from the end of ``dim`` to its start (a backward's reversed cumsum / logcumsumexp)."""
    return scan(t.flip(dim), dim).flip(dim)


@torch.library.custom_op(f"{LIBRARY}::invariant_cumsum", mutates_args=())
def invariant_cumsum(x: torch.Tensor, dim: int, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """aten.cumsum (x converted to ``dtype`` first, when given) in a fixed per-row order."""
    return _scan.invariant_cumsum(x, dim, dtype)


@invariant_cumsum.register_fake
def _(x, dim, dtype=None):
    return _scan_fake(torch.cumsum(x, dim, dtype=dtype))


def _scan_setup_context(ctx, inputs, output):
    x, dim, *_ = inputs
    ctx.dim, ctx.x_dtype = dim, x.dtype
    ctx.save_for_backward(x, output)


def _cumsum_backward(ctx, grad):
    # aten's cumsum_backward: the grad in x's dtype, summed from the end.
    if grad.dim() == 0 or grad.numel() <= 1:
        return grad.to(ctx.x_dtype), None, None
    return _reversed(lambda t, d: invariant_cumsum(t, d, None), grad.to(ctx.x_dtype), ctx.dim), None, None


invariant_cumsum.register_autograd(_cumsum_backward, setup_context=_scan_setup_context)


@torch.library.custom_op(f"{LIBRARY}::invariant_cumprod", mutates_args=())
def invariant_cumprod(x: torch.Tensor, dim: int, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """aten.cumprod (x converted to ``dtype`` first, when given) in a fixed per-row order."""
    return _scan.invariant_cumprod(x, dim, dtype)


@invariant_cumprod.register_fake
def _(x, dim, dtype=None):
    return _scan_fake(torch.cumprod(x, dim, dtype=dtype))


def _cumprod_backward(ctx, grad):
    """aten's cumprod_backward (its form for any input, zeros included), on invariant scans and sums.

    Before a row's first zero: reversed_cumsum(out * grad) / x. At the first zero z: the product
    before z times sum_{z <= j < next zero} grad[j] * prod_{z < k <= j} x[k]. After it: 0."""
    x, out = ctx.saved_tensors
    grad = grad.to(ctx.x_dtype)
    x = x.to(grad.dtype)
    out = out.to(grad.dtype)
    dim = ctx.dim % max(x.dim(), 1)
    if x.dim() == 0 or x.numel() <= 1 or x.shape[dim] == 1:
        return grad, None, None
    cumsum = lambda t, d: invariant_cumsum(t, d, None)  # noqa: E731
    zeros_so_far = torch.cumsum(x == 0, dim)  # an integer scan: exact
    before = zeros_so_far == 0
    w = (out * grad).masked_fill(~before, 0)
    grad_x = torch.where(before, _reversed(cumsum, w, dim) / x, torch.zeros_like(x))
    first_zero = (zeros_so_far == 1) & (x == 0)
    between = (zeros_so_far == 1) & ~first_zero
    tail = invariant_cumprod(x.masked_fill(~between, 1), dim, None) * grad.masked_fill(zeros_so_far != 1, 0)
    tail_sum = torch.ops.inductor_bi.invariant_sum(tail, [dim], True, None)
    z = first_zero.to(torch.int64).argmax(dim, keepdim=True)  # exact: picks an index
    before_z = torch.gather(out, dim, (z - 1).clamp(min=0)).masked_fill(z == 0, 1)
    grad_x = torch.where(first_zero, tail_sum * before_z, grad_x)
    return grad_x, None, None


invariant_cumprod.register_autograd(_cumprod_backward, setup_context=_scan_setup_context)


@torch.library.custom_op(f"{LIBRARY}::invariant_logcumsumexp", mutates_args=())
def invariant_logcumsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """aten.logcumsumexp in a fixed per-row order."""
    return _scan.invariant_logcumsumexp(x, dim)


@invariant_logcumsumexp.register_fake
def _(x, dim):
    return _scan_fake(torch.logcumsumexp(x, dim))


def _logcumsumexp_backward(ctx, grad):
    """aten's logcumsumexp_backward: the positive and negative parts of grad in the log domain,
    each through a reversed logcumsumexp, exponentiated, subtracted."""
    x, out = ctx.saved_tensors
    if grad.dim() == 0 or grad.numel() == 0:
        return grad, None
    lcse = lambda t, d: invariant_logcumsumexp(t, d)  # noqa: E731
    lowest = torch.tensor(torch.finfo(grad.dtype).min, dtype=grad.dtype, device=grad.device)
    log_abs = grad.abs().log()
    positive = torch.where(grad > 0, log_abs, lowest)
    negative = torch.where(grad < 0, log_abs, lowest)
    pos = (_reversed(lcse, positive - out, ctx.dim) + x).exp()
    neg = (_reversed(lcse, negative - out, ctx.dim) + x).exp()
    return pos - neg, None


invariant_logcumsumexp.register_autograd(_logcumsumexp_backward, setup_context=_scan_setup_context)


# =============================================================================================
# invariant_std_mean (passes/reductions.py): sqrt(var) with the root taken in the row kernel.
# A separate block, appended; nothing above depends on it.
# =============================================================================================


@torch.library.custom_op(f"{LIBRARY}::invariant_std_mean", mutates_args=())
def invariant_std_mean(
    x: torch.Tensor, dims: Optional[list[int]], correction: float, keepdim: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """aten.std_mean (correction form) with var_mean's fixed two-pass per-row order; the square
    root is taken before a rescaled row's scale is put back (finite where var would overflow)."""
    return reduction.invariant_std_mean(x, dims, correction, keepdim)


@invariant_std_mean.register_fake
def _(x, dims, correction, keepdim):
    return torch.std_mean(x, dims or list(range(x.dim())), correction=correction, keepdim=keepdim)


# =============================================================================================
# Accumulating index puts of gradients (passes/index_accumulate.py, kernels/index_accumulate.py):
# fixed_order_index_put_accumulate, fixed_order_embedding_dense_backward, fixed_order_scatter_add.
# A separate block, appended; nothing above depends on it.
# =============================================================================================

from .kernels import index_accumulate as _index_accumulate  # noqa: E402


@torch.library.custom_op(f"{LIBRARY}::fixed_order_index_put_accumulate", mutates_args=())
def fixed_order_index_put_accumulate(
    dest: torch.Tensor, indices: list[torch.Tensor], values: torch.Tensor, mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """index_put(accumulate=True) over dest's leading dims (with ``mask``: aten's
    _unsafe_masked_index_put_accumulate), each destination summed in ascending source position."""
    return _index_accumulate.fixed_order_index_put_accumulate(dest, indices, values, mask)


@fixed_order_index_put_accumulate.register_fake
def _(dest, indices, values, mask=None):
    torch._check(values.dtype == dest.dtype, lambda: f"fixed_order_index_put_accumulate: {values.dtype} values, {dest.dtype} dest")
    torch._check(1 <= len(indices) <= dest.dim(), lambda: f"fixed_order_index_put_accumulate: {len(indices)} indices, {dest.dim()}-d dest")
    return dest.new_empty(dest.shape)  # contiguous, as the kernel's


def _index_put_setup_context(ctx, inputs, output):
    dest, indices, values, mask = inputs
    ctx.save_for_backward(*indices, *(() if mask is None else (mask,)))
    ctx.index_count, ctx.has_mask, ctx.values_shape = len(indices), mask is not None, values.shape


def _index_put_backward(ctx, grad):
    saved = ctx.saved_tensors
    indices, mask = saved[: ctx.index_count], (saved[ctx.index_count] if ctx.has_mask else None)
    grad_values = None
    if ctx.needs_input_grad[2]:
        gathered = grad[tuple(indices)]  # each value's destination, as aten's index_put formula
        if mask is not None:
            gathered = gathered.masked_fill(~mask, 0)
        grad_values = gathered.sum_to_size(ctx.values_shape)
    return grad, [None] * ctx.index_count, grad_values, None


fixed_order_index_put_accumulate.register_autograd(_index_put_backward, setup_context=_index_put_setup_context)


@torch.library.custom_op(f"{LIBRARY}::fixed_order_embedding_dense_backward", mutates_args=())
def fixed_order_embedding_dense_backward(
    grad_output: torch.Tensor, indices: torch.Tensor, num_weights: int, padding_idx: int, scale_grad_by_freq: bool
) -> torch.Tensor:
    """aten.embedding_dense_backward, each weight row's gradient summed in ascending token position."""
    return _index_accumulate.fixed_order_embedding_dense_backward(grad_output, indices, num_weights, padding_idx, scale_grad_by_freq)


@fixed_order_embedding_dense_backward.register_fake
def _(grad_output, indices, num_weights, padding_idx, scale_grad_by_freq):
    return grad_output.new_empty((num_weights, *grad_output.shape[indices.dim() :]))


@torch.library.custom_op(f"{LIBRARY}::fixed_order_scatter_add", mutates_args=())
def fixed_order_scatter_add(dest: torch.Tensor, dim: int, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """aten.scatter_add (a gather's gradient), each destination element summed in ascending position of index."""
    return _index_accumulate.fixed_order_scatter_add(dest, dim, index, src)


@fixed_order_scatter_add.register_fake
def _(dest, dim, index, src):
    torch._check(src.dtype == dest.dtype, lambda: f"fixed_order_scatter_add: {src.dtype} src, {dest.dtype} dest")
    return dest.new_empty(dest.shape)  # contiguous, as the kernel's


# =============================================================================================
# Sums across ranks (passes/collectives.py, kernels/collectives.py): fixed_order_all_reduce,
# fixed_order_reduce_scatter, chunk_ordered_all_reduce_matmul.
# =============================================================================================

from .kernels import collectives as _collectives  # noqa: E402


@torch.library.custom_op(f"{LIBRARY}::fixed_order_all_reduce", mutates_args=())
def fixed_order_all_reduce(x: torch.Tensor, op: str, group_name: str) -> torch.Tensor:
    """all_reduce(x, op, group) for a sum or an average: added in ascending rank order."""
    return _collectives.fixed_order_all_reduce(x, op, group_name)


@fixed_order_all_reduce.register_fake
def _(x, op, group_name):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op(f"{LIBRARY}::fixed_order_reduce_scatter", mutates_args=())
def fixed_order_reduce_scatter(x: torch.Tensor, op: str, group_size: int, group_name: str) -> torch.Tensor:
    """reduce_scatter_tensor(x, op, group_size, group) along dim 0: added in ascending rank order."""
    return _collectives.fixed_order_reduce_scatter(x, op, group_size, group_name)


@fixed_order_reduce_scatter.register_fake
def _(x, op, group_size, group_name):
    return x.new_empty((x.shape[0] // group_size, *x.shape[1:]))


@torch.library.custom_op(f"{LIBRARY}::chunk_ordered_all_reduce_matmul", mutates_args=())
def chunk_ordered_all_reduce_matmul(a: torch.Tensor, b: torch.Tensor, group_name: str) -> torch.Tensor:
    """all_reduce(a @ b, "sum", group) of a row-parallel matmul: the unsplit matmul's bits."""
    return _collectives.chunk_ordered_all_reduce_matmul(a, b, group_name)


@chunk_ordered_all_reduce_matmul.register_fake
def _(a, b, group_name):
    return a.new_empty((a.shape[0], b.shape[1]))
