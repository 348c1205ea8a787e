"""Mixture-of-experts routing: grouped matmul and histogram counts, batch-invariant.

Hugging Face's default MoE experts path ("grouped_mm") sorts the (token, expert) pairs by expert,
counts tokens per expert with ``torch.histc``, turns the counts into group offsets with
``cumsum(dtype=int32)`` and runs one grouped matmul (``aten._grouped_mm`` for bf16,
``transformers::grouped_mm_fallback`` otherwise). Two of those are not invariant as aten runs them:

* the grouped matmul runs each expert's rows as one GEMM of M = that expert's token count, which
  follows the batch (cuBLAS / oneDNN pick kernels, split-K and tiles from M);
* ``histc`` over floats accumulates float counts (per-thread partial histograms on CPU, atomics on
  CUDA), so the strict guard cannot accept it as it stands.

``invariant_grouped_mm``: one launch of ``_grouped_matmul_kernel``, whose programs each take one
row tile of one group and compute it with invariant_matmul's arithmetic (kernels/matmul.py: the
same ``_pointer_k_steps`` K loop and ``_epilogue``, the same BLOCK_K, K chunk, accumulator and input
precision, a launch shape of its own that shares that arithmetic). A row's bits depend on K, the
dtype and pinned constants only, never on its group's size, its place in it or the other rows:
a token's expert output is the same whatever other tokens the expert serves, and equal to
``invariant_matmul(a[s:e], b[g])``'s row. The grid covers the worst case of the group sizes
(``cdiv(S, BLOCK_M) + G`` row tiles: each group wastes at most one partial tile); a program finds
its group from the offsets on the device and exits when it has none, so nothing reads the
offsets on the host (one compiled graph for every routing, CUDA graphs allowed). Rows past the
last offset are zero. Eager calls check the offsets on the host (a clear error); a launch
Inductor makes checks them on the device (``torch._assert_async``).

``exact_histc``: ``_histc_kernel`` computes each element's bin with aten's own formula in the
input dtype (``int((x - min) * bins / (max - min))`` with an IEEE division, the top edge folded
into the last bin, elements outside [min, max] and NaN dropped: the same on CPU and CUDA) and
counts it with an integer atomic add (exact in any order); the int64 counts are converted once.
Equal to aten.histc for float32 / float64 whenever a count is below 2**24 / 2**53, where aten's
float counting is exact too; beyond that this is the correctly rounded count. ``min == max``
(the data's range) reads the data's extrema on the host.

Plain launchers (no torch.library registration); ops.py registers the custom ops.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import triton
import triton.language as tl
from torch.fx.experimental.symbolic_shapes import statically_known_true

from . import matmul_table
from ._launch import interpreter_dtype, launch, runs_interpreted, tracing_for_inductor
from .matmul import _epilogue, _input_precision, _pointer_k_steps, invariant_matmul
from .moe_table import HISTC_BLOCK, HISTC_DTYPES, HISTC_WARPS

# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _tile_group(OFFS, tile, S, G, G_PAD: tl.constexpr, BLOCK_M: tl.constexpr):
    """Which group row tile ``tile`` belongs to: group g's rows [offs[g-1], offs[g]) take
    cdiv(rows, BLOCK_M) tiles, groups in order, then the rows past the last offset (group G,
    zeros). Returns (group, its first row, its end row, its first tile); group -1 past the last
    tile. Integer sums and scans only: exact."""
    g = tl.arange(0, G_PAD)
    ends = tl.load(OFFS + g, mask=g < G, other=0).to(tl.int64)
    ends = tl.where(g < G, ends, S)
    starts = tl.load(OFFS + g - 1, mask=(g >= 1) & (g <= G), other=0).to(tl.int64)
    starts = tl.where(g <= G, starts, S)
    tiles = (ends - starts + BLOCK_M - 1) // BLOCK_M
    after = tl.cumsum(tiles, 0)
    hit = (tile >= after - tiles) & (tile < after)
    group = tl.max(tl.where(hit, g, -1), 0)
    first_row = tl.sum(tl.where(hit, starts, 0), 0)
    end_row = tl.sum(tl.where(hit, ends, 0), 0)
    first_tile = tl.sum(tl.where(hit, after - tiles, 0), 0)
    return group, first_row, end_row, first_tile


@triton.jit(do_not_specialize=["S"])
def _grouped_matmul_kernel(
    A, B, C, OFFS,
    S, N, K, G,
    stride_am, stride_ak,
    stride_bg, stride_bk, stride_bn,
    stride_cm, stride_cn,
    G_PAD: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    K_CHUNK: tl.constexpr,
    EVEN_K: tl.constexpr,
):  # fmt: skip
    """One row tile of one group x one column tile. S (the rows) follows the batch and is never
    specialized: one binary for every batch; it only bounds the tile search."""
    group, first_row, end_row, first_tile = _tile_group(OFFS, tl.program_id(0), S, G, G_PAD, BLOCK_M)
    pid_n = tl.program_id(1)
    offs_m = first_row + (tl.program_id(0) - first_tile) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_mn = (offs_m < end_row)[:, None] & (offs_n < N)[None, :]
    c_ptrs = C + offs_m[:, None] * stride_cm + offs_n.to(tl.int64)[None, :] * stride_cn
    if group == G:  # the rows past the last offset
        tl.store(c_ptrs, tl.zeros((BLOCK_M, BLOCK_N), dtype=C.dtype.element_ty), mask=mask_mn)
    elif group >= 0:
        # invariant_matmul's FULL mode, pointer loads: rows / columns past the edge load a valid
        # row / column (each output element reads only its own row and column) and are dropped.
        rows = tl.where(offs_m < end_row, offs_m, first_row)
        cols = (offs_n % N).to(tl.int64)
        offs_k = tl.arange(0, BLOCK_K)
        a_ptrs = A + rows[:, None] * stride_am + offs_k.to(tl.int64)[None, :] * stride_ak
        b_ptrs = B + group.to(tl.int64) * stride_bg + offs_k.to(tl.int64)[:, None] * stride_bk + cols[None, :] * stride_bn
        STEPS: tl.constexpr = K_CHUNK // BLOCK_K
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
        total = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
        total = _pointer_k_steps(a_ptrs, b_ptrs, stride_ak, stride_bk, K, acc, total, 0, tl.cdiv(K, BLOCK_K), STEPS, BLOCK_K, EVEN_K, INPUT_PRECISION, ACC_DTYPE)
        _epilogue(total, c_ptrs, c_ptrs, mask_mn, 1.0, 1.0, False, False, False, ACC_DTYPE)


@triton.jit(do_not_specialize=["n"])
def _histc_kernel(
    X, COUNTS, n,
    BINS: tl.constexpr,
    LO_BITS: tl.constexpr,
    HI_BITS: tl.constexpr,
    BITS: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """aten.histc's bin of each element, counted with an integer atomic add. The edges arrive as
    their bit patterns in x's dtype (a float constexpr would be rounded to fp32 first)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(X + offs, mask=offs < n, other=0.0)
    lo = tl.full([], LO_BITS, BITS).to(X.dtype.element_ty, bitcast=True)
    hi = tl.full([], HI_BITS, BITS).to(X.dtype.element_ty, bitcast=True)
    inside = (offs < n) & (x >= lo) & (x <= hi)  # NaN is never inside
    # aten's (x - min) * bins / (max - min), each op rounded once, the division IEEE's: Triton's
    # plain fp32 division is approximate (div.full), its fp64 one rounds to nearest (div.rn).
    if BITS == tl.int32:
        pos = tl.math.div_rn((x - lo) * BINS, hi - lo)
    else:
        pos = ((x - lo) * BINS) / (hi - lo)
    idx = tl.minimum(tl.where(inside, pos, 0.0).to(tl.int64), BINS - 1)  # x == max: the last bin
    tl.atomic_add(COUNTS + idx, tl.full([BLOCK], 1, tl.int64), mask=inside, sem="relaxed")


# ---------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------


def _check_offsets(offs: torch.Tensor, groups: int) -> None:
    if offs.dim() != 1 or offs.shape[0] != groups:
        raise RuntimeError(f"invariant_grouped_mm: offs must have shape ({groups},), got {tuple(offs.shape)}")
    if offs.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"invariant_grouped_mm: offs must be int32 or int64, got {offs.dtype}")


def _group_bounds(offs: torch.Tensor, groups: int, rows: int) -> list[tuple[int, int]]:
    _check_offsets(offs, groups)
    ends = [int(e) for e in offs.tolist()]  # one host sync
    bounds, start = [], 0
    for end in ends:
        if end < start or end > rows:
            raise RuntimeError(f"invariant_grouped_mm: offsets must be non-decreasing and <= {rows}, got {ends}")
        bounds.append((start, end))
        start = end
    return bounds


def _offsets_checked_on_device(offs: torch.Tensor, rows) -> None:
    """The host check's conditions, asserted on the device (no host read): a launch Inductor
    makes stops on bad offsets instead of computing rows with another group's weights."""
    groups = offs.shape[0]
    ok = (offs.select(0, 0) >= 0) & (offs.select(0, groups - 1) <= rows)
    if groups > 1:
        ok = ok & (offs.narrow(0, 1, groups - 1) >= offs.narrow(0, 0, groups - 1)).all()
    torch._assert_async(ok, "invariant_grouped_mm: group offsets must be non-decreasing, from 0, and at most the rows of a")


def invariant_grouped_mm(a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """``out[s:e] = a[s:e] @ b[g]`` for group g spanning rows [s, e) = [offs[g-1], offs[g]).

    a: [S, K]; b: [G, K, N]; offs: [G] cumulative row ends (int32 / int64). Returns [S, N] in
    a's dtype; rows from offs[-1] on are zero. Every row's bits are independent of the groups'
    sizes and of the other rows.
    """
    if a.dim() != 2 or b.dim() != 3:
        raise RuntimeError(f"invariant_grouped_mm: expected a [S, K] and b [G, K, N], got {tuple(a.shape)}, {tuple(b.shape)}")
    if a.dtype != b.dtype or a.dtype not in matmul_table.SUPPORTED_DTYPES:
        raise TypeError(f"invariant_grouped_mm: dtypes {a.dtype}, {b.dtype} (need one of {matmul_table.SUPPORTED_DTYPES})")
    if a.shape[1] != b.shape[1]:
        raise RuntimeError(f"invariant_grouped_mm: cannot multiply {tuple(a.shape)} by groups of {tuple(b.shape[1:])}")
    if a.device != b.device or offs.device != a.device:
        raise RuntimeError(f"invariant_grouped_mm: a, b and offs must be on one device, got {a.device}, {b.device}, {offs.device}")
    groups, k, n = b.shape
    s = a.shape[0]
    _check_offsets(offs, groups)
    if tracing_for_inductor():
        _offsets_checked_on_device(offs, s)
    else:
        _group_bounds(offs, groups, s)
    device = a.device
    interpreted = runs_interpreted(device)
    compute_dtype = interpreter_dtype(a.dtype) if interpreted else a.dtype
    out = torch.empty(s, n, dtype=compute_dtype, device=device)
    if statically_known_true(n == 0) or groups == 0 or statically_known_true(s == 0):
        return out.zero_().to(a.dtype)
    a_k, b_k = (a.to(compute_dtype), b.to(compute_dtype)) if compute_dtype != a.dtype else (a, b)
    # invariant_matmul's tile config for this dtype: its short launch shape (matmul_table.matmul_config
    # for no rows), whose arithmetic its tall shape shares. Which tiles a program computes
    # follows the routing; how an element is computed does not.
    cfg = matmul_table.matmul_config(compute_dtype, device, interpreted=interpreted)
    k_chunk = matmul_table.matmul_k_chunk(cfg, k)
    row_tiles = (s + cfg.block_m - 1) // cfg.block_m + groups  # the worst case over group sizes
    launch(
        _grouped_matmul_kernel, (row_tiles, triton.cdiv(n, cfg.block_n), 1), device,
        a_k, b_k, out, offs,
        s, n, k, groups,
        *a_k.stride(), *b_k.stride(), *out.stride(),
        G_PAD=triton.next_power_of_2(groups + 1),
        ACC_DTYPE=tl.float64 if compute_dtype == torch.float64 else tl.float32,
        INPUT_PRECISION=_input_precision(compute_dtype),
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        BLOCK_K=cfg.block_k,
        K_CHUNK=k_chunk,
        EVEN_K=k % cfg.block_k == 0,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )  # fmt: skip
    return out.to(a.dtype) if compute_dtype != a.dtype else out


def grouped_mm_weight_grad(a: torch.Tensor, grad: torch.Tensor, offs: torch.Tensor, groups: int) -> torch.Tensor:
    """d(out)/d(b) for ``invariant_grouped_mm``: ``grad_b[g] = a[s:e]^T @ grad[s:e]`` (zero for an
    empty group). A weight gradient sums over its group's tokens, so it depends on which tokens
    the group holds (as any weight gradient depends on its batch); its order is fixed by the
    group's size."""
    grad_b = torch.zeros(groups, a.shape[1], grad.shape[1], dtype=a.dtype, device=a.device)
    for g, (start, end) in enumerate(_group_bounds(offs, groups, a.shape[0])):
        if end > start:
            grad_b[g] = invariant_matmul(a[start:end].transpose(0, 1), grad[start:end])
    return grad_b


def histc_range(x: torch.Tensor, min: float, max: float) -> tuple[float, float]:
    """aten.histc's outer edges: (min, max), or the data's extrema when min == max, widened by 1
    each way when those are equal too."""
    lo, hi = float(min), float(max)
    if lo == hi and x.numel() > 0:
        lo, hi = x.min().item(), x.max().item()  # exact reductions
    if lo == hi:
        lo, hi = lo - 1.0, hi + 1.0
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise RuntimeError(f"exact_histc: range of [{lo}, {hi}] is not finite")
    if lo > hi:
        raise RuntimeError(f"exact_histc: max must be larger than min, got min={lo}, max={hi}")
    return lo, hi


def _bits(value: float, dtype: torch.dtype) -> int:
    """``value`` rounded to ``dtype`` (as torch rounds a Python float), as an integer bit pattern."""
    np_float, np_int = (np.float32, np.int32) if dtype == torch.float32 else (np.float64, np.int64)
    return int(np.array(value, dtype=np_float).view(np_int))


def exact_histc(x: torch.Tensor, bins: int, min: float = 0.0, max: float = 0.0) -> torch.Tensor:
    """``torch.histc`` counted in integers: same bins as aten (its formula, in x's dtype), exact
    counts, whatever the order the elements are visited in."""
    if x.dtype not in HISTC_DTYPES:
        raise TypeError(f"exact_histc: dtype {x.dtype} is not supported ({HISTC_DTYPES}); integer histc is exact on aten")
    if bins <= 0:
        raise RuntimeError(f"exact_histc: bins must be > 0, got {bins}")
    lo, hi = histc_range(x, min, max)
    flat = x.reshape(-1)
    flat = flat if statically_known_true(flat.stride(0) == 1) else flat.contiguous()
    counts = torch.zeros(bins, dtype=torch.int64, device=x.device)
    numel = flat.shape[0]
    if not statically_known_true(numel == 0):
        launch(
            _histc_kernel, ((numel + HISTC_BLOCK - 1) // HISTC_BLOCK,), x.device, flat, counts, numel,
            BINS=bins, LO_BITS=_bits(lo, x.dtype), HI_BITS=_bits(hi, x.dtype),
            BITS=tl.int32 if x.dtype == torch.float32 else tl.int64, BLOCK=HISTC_BLOCK,
            num_warps=HISTC_WARPS, num_stages=1,
        )  # fmt: skip
    return counts.to(x.dtype)
