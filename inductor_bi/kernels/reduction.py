"""Batch-invariant row reductions: sum, mean, var_mean, softmax, log_softmax, RMSNorm rows, layer_norm.

Every function views its input as ``[rows, R]`` (reduced elements last, one row per output
position) and launches one program per row. Inside a program the row is read in BLOCK_R steps;
element ``j`` is accumulated into lane ``j % BLOCK_R`` of an fp32 (fp64 for float64) vector, in
ascending step order, and one ``tl.sum`` closes the row. BLOCK_R and num_warps come from
``reduction_table.reduction_config(R, dtype, device)``, so the order of operations that makes a row's
result depends on R, the dtype and pinned constants only, never on how many rows share the
launch: a row computed alone has the same bits as that row inside any batch.

Never: atomics, a row split across programs, a block size or warp count chosen from rows.

These are plain launchers (no torch.library registration). Inputs may be non-contiguous; they are
copied to a contiguous, 16-byte-aligned ``[rows, R]`` buffer first when needed. Outputs are
contiguous. Integer/bool inputs raise TypeError: their reductions are exact and stay on aten.

Traced for Inductor (``tracing_for_inductor``, lowerings/reductions.py) they run on fake CUDA
tensors whose row count may be symbolic: R must be static (it sets BLOCK_R and num_warps), the
grid is the symbolic row count, nothing reads a value on the host, and an operand is copied when
its layout or alignment is not known at compile time to be the one the kernel needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from torch._prims_common import is_contiguous_or_false
from torch.fx.experimental.symbolic_shapes import statically_known_true

from ._launch import dense_aligned, float_arg, interpreter_dtype, launch, runs_interpreted, tracing_for_inductor
from .reduction_table import REDUCTION_POINTER_ALIGN, SUPPORTED_DTYPES, reduction_config


# ---------------------------------------------------------------------------------------------
# Kernels: one row per program, row offsets in int64 so rows * R may exceed 2**31. The two row
# loops they share are jit helpers (inlined: the compiled code for an H100 is the same as with
# the loops written out, checked with benchmarks/inspect_kernels.py).
# ---------------------------------------------------------------------------------------------


@triton.jit
def _load_row(x_row, y_row, cols, mask, ADD: tl.constexpr, ACC: tl.constexpr):
    """x, or with ADD x + y rounded to x's dtype as the graph's add stores it (one correctly
    rounded add: the sum of two 16-bit or fp32 values is exact in ACC or rounds once)."""
    x = tl.load(x_row + cols, mask=mask, other=0.0)
    if ADD:
        x = (x.to(ACC) + tl.load(y_row + cols, mask=mask, other=0.0).to(ACC)).to(x.dtype)
    return x


@triton.jit
def _lane_sum(x_row, y_row, R, BLOCK_R: tl.constexpr, ACC: tl.constexpr, SQUARE: tl.constexpr, ADD: tl.constexpr):
    """Sum of the row (of its squares with SQUARE, each squared in ACC): lane j adds elements
    j, j + BLOCK_R, j + 2 BLOCK_R, ... in that order, then one tl.sum closes the row. With ADD
    the row is x + y (``_load_row``)."""
    lanes = tl.arange(0, BLOCK_R)
    acc = tl.zeros([BLOCK_R], dtype=ACC)
    for start in range(0, R, BLOCK_R):
        cols = start + lanes
        x = _load_row(x_row, y_row, cols, cols < R, ADD, ACC).to(ACC)
        if SQUARE:
            x = x * x
        acc += x
    return tl.sum(acc, axis=0)


@triton.jit
def _lane_sum_sq_dev(x_row, R, mean, scale, BLOCK_R: tl.constexpr, ACC: tl.constexpr):
    """Sum of (x * scale - mean)**2 over the row, in the same lane-then-tl.sum order as
    ``_lane_sum`` (two passes: more accurate than E[x^2] - E[x]^2). ``scale`` is a power of two
    (``_pow2_scale``): each x * scale is exact."""
    lanes = tl.arange(0, BLOCK_R)
    m2 = tl.zeros([BLOCK_R], dtype=ACC)
    for start in range(0, R, BLOCK_R):
        cols = start + lanes
        mask = cols < R
        d = tl.load(x_row + cols, mask=mask, other=0.0).to(ACC) * scale - mean
        m2 += tl.where(mask, d * d, 0.0)
    return tl.sum(m2, axis=0)


@triton.jit
def _lane_sum_abs_max(x_row, R, scale, BLOCK_R: tl.constexpr, ACC: tl.constexpr):
    """(sum of x * scale in ``_lane_sum``'s order, max |x|) over the row. ``scale`` is a power of
    two, so each product is exact; a max is exact in any order."""
    lanes = tl.arange(0, BLOCK_R)
    acc = tl.zeros([BLOCK_R], dtype=ACC)
    amax = tl.zeros([BLOCK_R], dtype=ACC)
    for start in range(0, R, BLOCK_R):
        cols = start + lanes
        x = tl.load(x_row + cols, mask=cols < R, other=0.0).to(ACC)
        acc += x * scale
        amax = tl.maximum(amax, tl.abs(x))
    return tl.sum(acc, axis=0), tl.max(amax, axis=0)


@triton.jit
def _pow2_scale(amax, DOWN_ONLY: tl.constexpr, ACC: tl.constexpr):
    """(scaled, s, u) for a row whose largest magnitude is ``amax``.

    Squared deviations of a row with max |x| >= 2**32 (2**256 in fp64) can overflow, and with
    max |x| < 2**-32 (2**-256) underflow, where the variance itself is representable. Such a row
    (only the large ones with DOWN_ONLY) is reduced as x * s, s = 2**-e with 2**e <= max |x| <
    2**(e+1), and its results scaled back by u = 2**e. Powers of two make every product exact, so
    where neither form over- or underflows both give the same bits; the choice depends on the
    row's own values only. Other rows, rows of zeros and rows holding inf / NaN: s = u = 1."""
    if ACC == tl.float64:
        bits = amax.to(tl.int64, bitcast=True)
        field = (bits >> 52) & 0x7FF
        e = field - 1023
        scaled = (field != 0x7FF) & (bits != 0) & (e >= 256)
        if not DOWN_ONLY:
            scaled = scaled | ((bits != 0) & (e < -256))
        e = tl.minimum(tl.maximum(e, -1022), 1022)
        s = ((1023 - e) << 52).to(tl.float64, bitcast=True)
        u = ((1023 + e) << 52).to(tl.float64, bitcast=True)
    else:
        bits = amax.to(tl.int32, bitcast=True)
        field = (bits >> 23) & 0xFF
        e = field - 127
        scaled = (field != 0xFF) & (bits != 0) & (e >= 32)
        if not DOWN_ONLY:
            scaled = scaled | ((bits != 0) & (e < -32))
        e = tl.minimum(tl.maximum(e, -126), 126)
        s = ((127 - e) << 23).to(tl.float32, bitcast=True)
        u = ((127 + e) << 23).to(tl.float32, bitcast=True)
    return scaled, tl.where(scaled, s, 1.0).to(ACC), tl.where(scaled, u, 1.0).to(ACC)


@triton.jit
def _row_mean_and_sq_dev(x_row, R, DOWN_ONLY: tl.constexpr, BLOCK_R: tl.constexpr, ACC: tl.constexpr):
    """(mean, m2, s, u) of the row as x * s: the mean of x * s and the sum of its squared
    deviations, in two fixed-order passes (``_pow2_scale``: a row that needs no scaling reads
    x once for the sum and once for the deviations; one that does, once more)."""
    total, amax = _lane_sum_abs_max(x_row, R, 1.0, BLOCK_R, ACC)
    scaled, s, u = _pow2_scale(amax, DOWN_ONLY, ACC)
    if scaled:
        total, amax = _lane_sum_abs_max(x_row, R, s, BLOCK_R, ACC)
    mean = total / R
    m2 = _lane_sum_sq_dev(x_row, R, mean, s, BLOCK_R, ACC)
    return mean, m2, s, u


@triton.jit
def _row_sum_kernel(
    x_ptr, y_ptr, out_ptr, R, DIVIDE_BY_R: tl.constexpr, SQUARE: tl.constexpr, ADD: tl.constexpr, BLOCK_R: tl.constexpr, ACC: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    total = _lane_sum(x_ptr + row * R, y_ptr + row * R, R, BLOCK_R, ACC, SQUARE, ADD)
    if DIVIDE_BY_R:
        total = total / R
    tl.store(out_ptr + row, total)


@triton.jit
def _row_var_mean_kernel(x_ptr, var_ptr, mean_ptr, R, divisor, SQRT: tl.constexpr, BLOCK_R: tl.constexpr, ACC: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * R
    # Two passes in a fixed order: the mean, then the sum of squared deviations from it.
    mean, m2, s, u = _row_mean_and_sq_dev(x_row, R, False, BLOCK_R, ACC)
    # divisor = max(R - correction, 0) as torch: 0 gives inf (or nan when m2 == 0), like torch.
    var = m2 / float_arg(divisor)
    if SQRT:
        # The standard deviation scaled back once: finite wherever it is, even when the
        # variance is not (|x| ~ 1e20..1e37 in fp32), and not 0 where the variance underflows.
        if ACC == tl.float64:
            var = tl.sqrt(var) * u  # fp64 square roots round to nearest (sqrt_rn is fp32-only)
        else:
            var = tl.sqrt_rn(var) * u  # correctly rounded, as torch.sqrt (tl.sqrt may approximate)
    else:
        var = var * u * u
    tl.store(var_ptr + row, var)
    tl.store(mean_ptr + row, mean * u)


@triton.jit
def _row_softmax_kernel(x_ptr, out_ptr, R, LOG: tl.constexpr, BLOCK_R: tl.constexpr, ACC: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * R
    out_row = out_ptr + row * R
    lanes = tl.arange(0, BLOCK_R)
    # Pass 1: row max (max is exact, its order cannot change bits).
    run_max = tl.full([BLOCK_R], float("-inf"), ACC)
    for start in range(0, R, BLOCK_R):
        cols = start + lanes
        x = tl.load(x_row + cols, mask=cols < R, other=float("-inf")).to(ACC)
        run_max = tl.maximum(run_max, x)
    row_max = tl.max(run_max, axis=0)
    # Pass 2: sum of exp(x - max), lane accumulation then one tl.sum.
    acc = tl.zeros([BLOCK_R], dtype=ACC)
    for start in range(0, R, BLOCK_R):
        cols = start + lanes
        mask = cols < R
        x = tl.load(x_row + cols, mask=mask, other=float("-inf")).to(ACC)
        acc += tl.where(mask, tl.exp(x - row_max), 0.0)
    denom = tl.sum(acc, axis=0)
    log_denom = tl.log(denom)
    # Pass 3: write. Elementwise, so no order question.
    for start in range(0, R, BLOCK_R):
        cols = start + lanes
        mask = cols < R
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(ACC)
        if LOG:
            y = (x - row_max) - log_denom
        else:
            y = tl.exp(x - row_max) / denom
        tl.store(out_row + cols, y, mask=mask)


@triton.jit
def _row_rms_normalize_kernel(
    x_ptr, y_ptr, eps, w_ptr, out_ptr, h_ptr, R,
    ADD: tl.constexpr, HAS_WEIGHT: tl.constexpr, NORMALIZED_DTYPE: tl.constexpr, EPS_FROM_POINTER: tl.constexpr,
    BLOCK_R: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """A hand-written RMSNorm in one program per row, op for op as the graph writes it (HF
    Llama's): h = x (+ y, rounded to x's dtype and stored with ADD); rstd = rsqrt(mean(h^2) + eps)
    with the mean of ``_row_sum_kernel`` (same lanes, same order); n = h * rstd, rounded to
    NORMALIZED_DTYPE when the graph casts it; out = weight * n, rounded once to out's dtype.
    eps is an fp32 argument, or with EPS_FROM_POINTER a pointer to that fp32 value (computed on the
    GPU, so that a launch Inductor makes reads no host value): the same add either way."""
    row = tl.program_id(0).to(tl.int64)
    x_row, y_row, out_row, h_row = x_ptr + row * R, y_ptr + row * R, out_ptr + row * R, h_ptr + row * R
    if EPS_FROM_POINTER:
        eps_value = tl.load(eps).to(ACC)
    else:
        eps_value = tl.cast(float_arg(eps), ACC)
    rstd = tl.rsqrt(_lane_sum(x_row, y_row, R, BLOCK_R, ACC, True, ADD) / R + eps_value)
    lanes = tl.arange(0, BLOCK_R)
    for start in range(0, R, BLOCK_R):
        cols = start + lanes
        mask = cols < R
        h = _load_row(x_row, y_row, cols, mask, ADD, ACC)
        if ADD:
            tl.store(h_row + cols, h, mask=mask)
        n = h.to(ACC) * rstd
        if NORMALIZED_DTYPE is not None:
            n = n.to(NORMALIZED_DTYPE).to(ACC)
        if HAS_WEIGHT:
            n = tl.load(w_ptr + cols, mask=mask, other=0.0).to(ACC) * n
        tl.store(out_row + cols, n, mask=mask)


@triton.jit
def _row_layer_norm_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    mean_ptr,
    rstd_ptr,
    R,
    eps,
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    ACC: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * R
    out_row = out_ptr + row * R
    lanes = tl.arange(0, BLOCK_R)
    # Pass 1: mean. Pass 2: biased variance from deviations. Pass 3: normalize and write. A row
    # of large values is reduced as x * s (``_pow2_scale``; tiny rows need nothing: eps dominates).
    mean, m2, s, u = _row_mean_and_sq_dev(x_row, R, True, BLOCK_R, ACC)
    var_s = m2 / R
    var = var_s * u * u
    finite = var < float("inf")
    rstd = tl.rsqrt(var + float_arg(eps))
    # y = (x - mean) * rstd = (x * s - mean) * (rstd * u). A variance past the dtype's range is far
    # above eps: its rstd is rsqrt(var_s) * s, and y needs rsqrt(var_s).
    rstd_s = tl.rsqrt(tl.where(finite, 1.0, var_s))
    y_scale = tl.where(finite, rstd * u, rstd_s)
    rstd = tl.where(finite, rstd, rstd_s * s)
    for start in range(0, R, BLOCK_R):
        cols = start + lanes
        mask = cols < R
        y = (tl.load(x_row + cols, mask=mask, other=0.0).to(ACC) * s - mean) * y_scale
        if HAS_WEIGHT:
            y = y * tl.load(w_ptr + cols, mask=mask, other=0.0).to(ACC)
        if HAS_BIAS:
            y = y + tl.load(b_ptr + cols, mask=mask, other=0.0).to(ACC)
        tl.store(out_row + cols, y, mask=mask)
    tl.store(mean_ptr + row, mean * u)
    tl.store(rstd_ptr + row, rstd)


# ---------------------------------------------------------------------------------------------
# Host-side helpers
# ---------------------------------------------------------------------------------------------


def _require_float(x: torch.Tensor, op: str) -> None:
    if x.is_floating_point() and x.dtype in SUPPORTED_DTYPES:
        return
    if x.is_floating_point() or x.is_complex():
        raise TypeError(f"inductor_bi.{op}: dtype {x.dtype} is not supported (float16/bfloat16/float32/float64 only)")
    raise TypeError(
        f"inductor_bi.{op}: got a {x.dtype} tensor. Integer and bool reductions are exact (their "
        "result cannot depend on the order of additions), so they should stay on aten; this "
        "kernel handles floating dtypes only."
    )


def _acc_dtype(*dtypes: torch.dtype):
    """fp64 accumulates in fp64; everything else in fp32."""
    return tl.float64 if torch.float64 in dtypes else tl.float32


def _kernel_operand(t: torch.Tensor) -> torch.Tensor:
    """``t`` as the kernel reads it: contiguous, 16-byte aligned, in a dtype its runner handles.

    Alignment is not cosmetic: Triton compiles a different kernel variant for unaligned pointers,
    with a different register layout and so a different tl.sum tree (see reduction_table).
    """
    if runs_interpreted(t.device):
        t = t.to(interpreter_dtype(t.dtype))
    return dense_aligned(t, REDUCTION_POINTER_ALIGN)
    if not t.is_contiguous() or t.data_ptr() % REDUCTION_POINTER_ALIGN:
        t = t.clone(memory_format=torch.contiguous_format)
    return t


def _kernel_operand_dtype(t: torch.Tensor) -> torch.dtype:
    return interpreter_dtype(t.dtype) if runs_interpreted(t.device) else t.dtype


def _kernel_out_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    return interpreter_dtype(dtype) if runs_interpreted(device) else dtype


def _empty(n) -> bool:
    """``n == 0``. Traced, a row count may be symbolic: only a count known to be 0 takes the empty
    path (no guard); one that turns out 0 at run time launches an empty grid, which does nothing."""
    return statically_known_true(n == 0) if tracing_for_inductor() else n == 0


def _launch_rows(kernel, rows, r: int, dtype: torch.dtype, device: torch.device, *args, **kwargs):
    """One program per row. BLOCK_R and num_warps follow R (static) and the dtype alone; the row
    count only sets the grid, so it may be symbolic when Inductor launches the kernel."""
    cfg = reduction_config(r, dtype, device)
    launch(kernel, (rows,), device, *args, BLOCK_R=cfg.block_r, num_warps=cfg.num_warps, **kwargs)


def _canonical_dims(x: torch.Tensor, dims) -> list[int]:
    """Sorted reduced dims; None / [] mean all dims (aten.sum.dim_IntList semantics)."""
    if dims is None:
        dims = []
    elif isinstance(dims, int):
        dims = [dims]
    nd = x.dim()
    rank = max(nd, 1)  # a 0-dim tensor accepts dim 0 / -1
    out = []
    for d in dims:
        if not -rank <= d < rank:
            raise IndexError(f"dim {d} out of range for a tensor of {nd} dims")
        d = d % rank
        if d in out:
            raise RuntimeError(f"dim {d} appears multiple times in the list of dims")
        out.append(d)
    if nd == 0 or not out:
        return list(range(nd))
    return sorted(out)


def _reduced_last(x: torch.Tensor, dims) -> tuple[torch.Tensor, list[int], list[int]]:
    """``x`` as ``[rows, R]`` with the reduced dims last (ascending), plus the output shapes
    without and with keepdim. Row order is the kept dims' order, so ``[rows]`` reshapes to both."""
    red = _canonical_dims(x, dims)
    kept = [d for d in range(x.dim()) if d not in red]
    rows = math.prod(x.shape[d] for d in kept)
    r = math.prod(x.shape[d] for d in red)
    x2 = x.permute(kept + red).reshape(rows, r)
    out_shape = [x.shape[d] for d in kept]
    keep_shape = [1 if d in red else x.shape[d] for d in range(x.dim())]
    return x2, out_shape, keep_shape


def _normalized_extent(x: torch.Tensor, normalized_ndim, params: Sequence[torch.Tensor | None]) -> int:
    """R for a norm over the last dims. ``normalized_ndim`` is an int (number of trailing dims) or
    a shape (aten's normalized_shape), which must match x's trailing dims."""
    if isinstance(normalized_ndim, int):
        n = normalized_ndim
    else:
        shape = tuple(normalized_ndim)
        n = len(shape)
        if tuple(x.shape[x.dim() - n :]) != shape:
            raise RuntimeError(f"normalized_shape {list(shape)} does not match input shape {list(x.shape)}")
    if not 0 < n <= x.dim():
        raise RuntimeError(f"cannot normalize the last {n} dims of a {x.dim()}-dim tensor")
    norm_shape = tuple(x.shape[x.dim() - n :])
    for p in params:
        if p is not None and p.numel() != math.prod(norm_shape):
            raise RuntimeError(f"weight/bias of shape {list(p.shape)} does not match normalized shape {list(norm_shape)}")
    return math.prod(norm_shape)


# ---------------------------------------------------------------------------------------------
# Public launchers
# ---------------------------------------------------------------------------------------------


def _row_sum(x: torch.Tensor, dims, keepdim: bool, dtype: torch.dtype | None, divide_by_r: bool, op: str, square: bool, addend: torch.Tensor | None):
    _require_float(x, op)
    if addend is not None and (addend.shape != x.shape or addend.dtype != x.dtype or addend.device != x.device):
        raise RuntimeError(
            f"inductor_bi.{op}: addend must match x in shape, dtype and device, got {tuple(addend.shape)} {addend.dtype} "
            f"{addend.device} for {tuple(x.shape)} {x.dtype} {x.device}"
        )
    out_dtype = dtype or x.dtype
    if out_dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"inductor_bi.{op}: output dtype {out_dtype} is not a supported float dtype")
    x2, out_shape, keep_shape = _reduced_last(x, dims)
    rows, r = x2.shape
    shape = keep_shape if keepdim else out_shape
    if _empty(rows) or r == 0:
        # Empty rows: sum 0, mean 0/0 = nan, as torch.
        return torch.full(shape, math.nan if divide_by_r else 0.0, dtype=out_dtype, device=x.device)
    if addend is not None and _kernel_operand_dtype(x) != x.dtype:
        # The interpreter runs bf16 as fp32: the add's rounding to bf16 has to happen here.
        x2, addend = _reduced_last(x + addend, dims)[0], None
    xk = _kernel_operand(x2)
    yk = xk if addend is None else _kernel_operand(_reduced_last(addend, dims)[0])
    out = torch.empty(rows, dtype=_kernel_out_dtype(out_dtype, x.device), device=x.device)
    acc = _acc_dtype(x.dtype, out_dtype)
    _launch_rows(
        _row_sum_kernel, rows, r, xk.dtype, x.device, xk, yk, out, r, DIVIDE_BY_R=divide_by_r, SQUARE=square, ADD=addend is not None, ACC=acc
    )
    return out.to(out_dtype).reshape(shape)


def invariant_sum(
    x: torch.Tensor, dims=None, keepdim: bool = False, dtype: torch.dtype | None = None, square: bool = False, addend: torch.Tensor | None = None
):
    """aten.sum.dim_IntList: sum over ``dims`` (None / [] = all), fp32 accumulation (fp64 when
    the input or output is float64), result in ``dtype or x.dtype``. ``square``: the sum of
    ``x * x``, each element widened to the accumulator dtype and squared there (what
    ``x.to(dtype).pow(2).sum(...)`` computes, without writing the squares to memory).
    ``addend``: reduce ``x + addend`` (same shape and dtype, the sum rounded to x's dtype as
    ``x + addend`` would store it) without the sum going to memory first."""
    return _row_sum(x, dims, keepdim, dtype, divide_by_r=False, op="invariant_sum", square=square, addend=addend)


def invariant_mean(
    x: torch.Tensor, dims=None, keepdim: bool = False, dtype: torch.dtype | None = None, square: bool = False, addend: torch.Tensor | None = None
):
    """aten.mean.dim: the fp32 row sum divided by R in fp32, then cast to ``dtype or x.dtype``;
    ``square`` and ``addend`` as in ``invariant_sum`` (RMSNorm's mean of squares of a residual sum)."""
    return _row_sum(x, dims, keepdim, dtype, divide_by_r=True, op="invariant_mean", square=square, addend=addend)


def invariant_var_mean(x: torch.Tensor, dims=None, correction=1, keepdim: bool = False):
    """torch.var_mean(x, dims, correction=correction, keepdim=keepdim) -> (var, mean).

    Two passes inside one program (mean, then squared deviations); var = m2 / max(R - correction, 0),
    so R <= correction gives inf (nan for a constant row), as torch. A row of very large or very
    small values is reduced scaled by a power of two (``_pow2_scale``), so the variance is finite
    and nonzero wherever the dtype can hold it.
    """
    return _var_mean(x, dims, correction, keepdim, False, "invariant_var_mean")


def invariant_std_mean(x: torch.Tensor, dims=None, correction=1, keepdim: bool = False):
    """torch.std_mean(x, dims, correction=correction, keepdim=keepdim) -> (std, mean): the
    square root taken in the kernel before scaling back, so std is finite where the variance
    would overflow (fp32 values ~1e20..1e37) and nonzero where it would underflow (~1e-30)."""
    return _var_mean(x, dims, correction, keepdim, True, "invariant_std_mean")


def _var_mean(x: torch.Tensor, dims, correction, keepdim: bool, sqrt: bool, op: str):
    _require_float(x, op)
    correction = 1 if correction is None else correction
    x2, out_shape, keep_shape = _reduced_last(x, dims)
    rows, r = x2.shape
    shape = keep_shape if keepdim else out_shape
    if _empty(rows) or r == 0:
        nan = torch.full(shape, math.nan, dtype=x.dtype, device=x.device)
        return nan, nan.clone()
    xk = _kernel_operand(x2)
    kdtype = _kernel_out_dtype(x.dtype, x.device)
    var = torch.empty(rows, dtype=kdtype, device=x.device)
    mean = torch.empty(rows, dtype=kdtype, device=x.device)
    divisor = float(max(r - correction, 0))
    acc = _acc_dtype(x.dtype)
    _launch_rows(_row_var_mean_kernel, rows, r, xk.dtype, x.device, xk, var, mean, r, divisor, SQRT=sqrt, ACC=acc)
    return var.to(x.dtype).reshape(shape), mean.to(x.dtype).reshape(shape)


def _softmax(x: torch.Tensor, dim: int, half_to_float: bool, log: bool, op: str) -> torch.Tensor:
    _require_float(x, op)
    out_dtype = torch.float32 if half_to_float and x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    if x.dim() == 0:
        return _softmax(x.reshape(1), 0, half_to_float, log, op).reshape(())
    dim = _canonical_dims(x, [dim])[0]
    # x.movedim(dim, -1) as a permute, and .contiguous() as a clone: the composite forms ask for a
    # CUDA device guard, which fake CUDA tensors traced on a CPU-only machine cannot give
    to_last = [d for d in range(x.dim()) if d != dim] + [dim]
    xm = x.permute(to_last)
    r = xm.shape[-1]
    rows = xm.numel() // r if r else 0
    if r == 0 or _empty(rows):
        return torch.empty(x.shape, dtype=out_dtype, device=x.device)
    xk = _kernel_operand(xm.reshape(rows, r))
    out = torch.empty(rows, r, dtype=_kernel_out_dtype(out_dtype, x.device), device=x.device)
    _launch_rows(_row_softmax_kernel, rows, r, xk.dtype, x.device, xk, out, r, LOG=log, ACC=_acc_dtype(x.dtype))
    back = sorted(range(x.dim()), key=to_last.__getitem__)
    y = out.to(out_dtype).reshape(xm.shape).permute(back)
    return y if is_contiguous_or_false(y) else y.clone(memory_format=torch.contiguous_format)


def invariant_softmax(x: torch.Tensor, dim: int, half_to_float: bool = False) -> torch.Tensor:
    """aten._softmax: exp(x - max) / sum, fp32 inside, output in x.dtype (fp32 if half_to_float)."""
    return _softmax(x, dim, half_to_float, log=False, op="invariant_softmax")


def invariant_log_softmax(x: torch.Tensor, dim: int, half_to_float: bool = False) -> torch.Tensor:
    """aten._log_softmax: x - max - log(sum exp(x - max)), fp32 inside, output in x.dtype."""
    return _softmax(x, dim, half_to_float, log=True, op="invariant_log_softmax")


_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


def invariant_rms_norm_rows(
    x: torch.Tensor,
    eps: float,
    weight: torch.Tensor | None,
    normalized_dtype: torch.dtype | None,
    out_dtype: torch.dtype,
    addend: torch.Tensor | None = None,
    eps_tensor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A hand-written RMSNorm over the last dim, as the backend finds it in a graph:
    ``weight * (h.float() * rsqrt(mean(h.float() ** 2, -1) + eps)).to(normalized_dtype)`` with
    ``h = x`` or ``x + addend`` (rounded to x's dtype). eps is added in fp32 as a kernel argument:
    ``eps``, or the value of ``eps_tensor`` when given, a 0-dim CPU tensor (how Dynamo passes a
    float it does not specialize, e.g. under ``dynamic=True``), read on the host (no GPU sync).
    Traced for Inductor, ``eps_tensor`` is not read on the host: its fp32 value is computed on x's
    device in the graph (``_eps_on_device``) and the kernel loads it.
    Returns ``(out, h)``; ``h`` is the stored residual sum with ``addend``, else an empty tensor.
    fp16 / bf16 / fp32 inputs, fp32 arithmetic."""
    _require_float(x, "invariant_rms_norm_rows")
    if x.dtype not in _TL_DTYPES or x.dim() == 0:
        raise TypeError(f"inductor_bi.invariant_rms_norm_rows: fp16 / bf16 / fp32 tensors with a last dim, got {x.dtype} {tuple(x.shape)}")
    r = x.shape[-1]
    if addend is not None and (addend.shape != x.shape or addend.dtype != x.dtype):
        raise RuntimeError(f"inductor_bi.invariant_rms_norm_rows: addend must match x, got {tuple(addend.shape)} {addend.dtype}")
    if weight is not None and tuple(weight.shape) != (r,):
        raise RuntimeError(f"inductor_bi.invariant_rms_norm_rows: weight of shape {tuple(weight.shape)} for rows of {r}")
    eps_arg = float(eps)
    if eps_tensor is not None:
        if eps_tensor.numel() != 1 or eps_tensor.device.type != "cpu":
            raise RuntimeError(f"inductor_bi.invariant_rms_norm_rows: eps_tensor must be one value on the CPU, got {tuple(eps_tensor.shape)} on {eps_tensor.device}")
        eps_arg = _eps_on_device(eps_tensor, x.device) if tracing_for_inductor() else float(eps_tensor.float())
    if r == 0 or _empty(x.numel()):
        out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
        return out, torch.empty(x.shape if addend is not None else (0,), dtype=x.dtype, device=x.device)
    rows = x.numel() // r
    dtypes = {x.dtype, out_dtype, normalized_dtype or x.dtype, x.dtype if weight is None else weight.dtype}
    if runs_interpreted(x.device) and any(interpreter_dtype(d) != d for d in dtypes):
        # The interpreter cannot round to bf16: the row sum in the kernel, the per-element rest
        # in torch (elementwise, so a row's bits still depend on that row alone).
        h = x if addend is None else x + addend
        n = h.float() * torch.rsqrt(_row_sum(h, [-1], True, torch.float32, True, "invariant_rms_norm_rows", True, None) + eps_arg)
        n = n if normalized_dtype is None else n.to(normalized_dtype)
        out = (n if weight is None else weight * n).to(out_dtype)
        return out, h if addend is not None else torch.empty(0, dtype=x.dtype, device=x.device)
    xk = _kernel_operand(x.reshape(rows, r))
    yk = xk if addend is None else _kernel_operand(addend.reshape(rows, r))
    wk = xk if weight is None else _kernel_operand(weight)
    out = torch.empty(rows, r, dtype=out_dtype, device=x.device)
    h = torch.empty((rows, r) if addend is not None else (0,), dtype=x.dtype, device=x.device)
    _launch_rows(
        _row_rms_normalize_kernel, rows, r, xk.dtype, x.device,
        xk, yk, eps_arg, wk, out, h if addend is not None else out, r,
        ADD=addend is not None, HAS_WEIGHT=weight is not None,
        NORMALIZED_DTYPE=None if normalized_dtype is None else _TL_DTYPES[normalized_dtype],
        EPS_FROM_POINTER=isinstance(eps_arg, torch.Tensor), ACC=tl.float32,
    )  # fmt: skip
    return out.reshape(x.shape), h.reshape(x.shape) if addend is not None else h


def _eps_on_device(eps_tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``float(eps_tensor.float())`` as a 0-dim fp32 tensor on ``device``, computed there: a CUDA
    add that reads the 0-dim CPU tensor as a scalar argument (as Inductor reads Dynamo's
    unspecialized floats for its own kernels), so no CPU tensor reaches a launch and no CPU kernel
    runs. The add is exact in fp64 and one cast rounds to fp32: the value the custom op passes."""
    return (torch.zeros((), dtype=torch.float64, device=device) + eps_tensor).to(torch.float32)


def layer_norm_stats_dtype(x_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """dtype of native_layer_norm's mean/rstd as torch's meta/fake kernel reports it: fp32 for
    fp16/bf16 on CUDA, the input dtype on CPU."""
    if device.type == "cuda" and x_dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return x_dtype


def invariant_layer_norm(
    x: torch.Tensor,
    normalized_ndim,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
):
    """aten.native_layer_norm -> (out, mean, rstd); mean/rstd have x's shape with the normalized
    dims kept as 1 (dtype: ``layer_norm_stats_dtype``). Biased variance from deviations, fp32 inside."""
    _require_float(x, "invariant_layer_norm")
    r = _normalized_extent(x, normalized_ndim, [weight, bias])
    n = normalized_ndim if isinstance(normalized_ndim, int) else len(tuple(normalized_ndim))
    stats_shape = list(x.shape[: x.dim() - n]) + [1] * n
    stats_dtype = layer_norm_stats_dtype(x.dtype, x.device)
    rows = math.prod(x.shape[: x.dim() - n])
    if _empty(rows) or r == 0:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        # Empty normalized dims: mean 0, rstd nan, as aten on CPU.
        mean = torch.zeros(stats_shape, dtype=stats_dtype, device=x.device)
        rstd = torch.full(stats_shape, math.nan, dtype=stats_dtype, device=x.device)
        return out, mean, rstd
    xk = _kernel_operand(x.reshape(rows, r))
    wk = _kernel_operand(weight.reshape(r)) if weight is not None else xk
    bk = _kernel_operand(bias.reshape(r)) if bias is not None else xk
    out = torch.empty(rows, r, dtype=_kernel_out_dtype(x.dtype, x.device), device=x.device)
    mean = torch.empty(rows, dtype=_kernel_out_dtype(stats_dtype, x.device), device=x.device)
    rstd = torch.empty(rows, dtype=_kernel_out_dtype(stats_dtype, x.device), device=x.device)
    acc = _acc_dtype(x.dtype)
    _launch_rows(
        _row_layer_norm_kernel, rows, r, xk.dtype, x.device, xk, wk, bk, out, mean, rstd, r, float(eps),
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, ACC=acc,
    )  # fmt: skip
    return (
        out.to(x.dtype).reshape(x.shape),
        mean.to(stats_dtype).reshape(stats_shape),
        rstd.to(stats_dtype).reshape(stats_shape),
    )
