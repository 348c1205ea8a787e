"""Mixture-of-experts routing: grouped matmul and histogram counts, batch-invariant.

Hugging Face's default MoE experts path ("grouped_mm") sorts the (token, expert) pairs by expert,
counts tokens per expert with ``torch.histc``, turns the counts into group offsets with
``cumsum(dtype=int32)`` and runs one grouped matmul (``aten._grouped_mm`` for bf16,
``transformers::grouped_mm_fallback`` otherwise). Two of those are not invariant as aten runs them:

* the grouped matmul runs each expert's rows as one GEMM of M = that expert's token count, which
  follows the batch (cuBLAS / oneDNN pick kernels, split-K and tiles from M);
* ``histc`` over floats accumulates float counts (per-thread partial histograms on CPU, atomics on
  CUDA), so the strict guard cannot accept it as it stands.

``invariant_grouped_mm``: each group's rows go through ``invariant_matmul`` (kernels/matmul.py),
whose contract is that a row's bits depend on K, the dtype and pinned constants only, never on M,
the row's position or its neighbours. So a token's expert output is the same whatever other tokens
the expert serves. The offsets are read on the host (one sync per call, as transformers' own
fallback does); rows past the last offset are zero.

``exact_histc``: the bin of each element is computed with aten's own formula in the input dtype
(``int((x - min) * bins / (max - min))``, the top edge folded into the last bin, elements outside
[min, max] and NaN dropped: the same on CPU and CUDA), then counted in int64 (integer addition:
exact in any order) and converted once. Equal to aten.histc for float32 / float64 whenever a count
is below 2**24 / 2**53, where aten's float counting is exact too; beyond that this is the correctly
rounded count.

Plain launchers (no torch.library registration); ops.py registers the custom ops.
"""

from __future__ import annotations

import torch

from .matmul import SUPPORTED_DTYPES as _MATMUL_DTYPES
from .matmul import invariant_matmul

HISTC_DTYPES = (torch.float32, torch.float64)


def _group_bounds(offs: torch.Tensor, groups: int, rows: int) -> list[tuple[int, int]]:
    if offs.dim() != 1 or offs.shape[0] != groups:
        raise RuntimeError(f"invariant_grouped_mm: offs must have shape ({groups},), got {tuple(offs.shape)}")
    if offs.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"invariant_grouped_mm: offs must be int32 or int64, got {offs.dtype}")
    ends = [int(e) for e in offs.tolist()]  # one host sync
    bounds, start = [], 0
    for end in ends:
        if end < start or end > rows:
            raise RuntimeError(f"invariant_grouped_mm: offsets must be non-decreasing and <= {rows}, got {ends}")
        bounds.append((start, end))
        start = end
    return bounds


def invariant_grouped_mm(a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """``out[s:e] = a[s:e] @ b[g]`` for group g spanning rows [s, e) = [offs[g-1], offs[g]).

    a: [S, K]; b: [G, K, N]; offs: [G] cumulative row ends (int32 / int64). Returns [S, N] in
    a's dtype; rows from offs[-1] on are zero. Every row's bits are independent of the groups'
    sizes and of the other rows.
    """
    if a.dim() != 2 or b.dim() != 3:
        raise RuntimeError(f"invariant_grouped_mm: expected a [S, K] and b [G, K, N], got {tuple(a.shape)}, {tuple(b.shape)}")
    if a.dtype != b.dtype or a.dtype not in _MATMUL_DTYPES:
        raise TypeError(f"invariant_grouped_mm: dtypes {a.dtype}, {b.dtype} (need one of {_MATMUL_DTYPES})")
    if a.shape[1] != b.shape[1]:
        raise RuntimeError(f"invariant_grouped_mm: cannot multiply {tuple(a.shape)} by groups of {tuple(b.shape[1:])}")
    out = torch.zeros(a.shape[0], b.shape[2], dtype=a.dtype, device=a.device)
    for g, (start, end) in enumerate(_group_bounds(offs, b.shape[0], a.shape[0])):
        if end > start:
            out[start:end] = invariant_matmul(a[start:end], b[g])
    return out


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
    if not (torch.isfinite(torch.tensor([lo, hi], dtype=torch.float64)).all()):
        raise RuntimeError(f"exact_histc: range of [{lo}, {hi}] is not finite")
    if lo > hi:
        raise RuntimeError(f"exact_histc: max must be larger than min, got min={lo}, max={hi}")
    return lo, hi


def exact_histc(x: torch.Tensor, bins: int, min: float = 0.0, max: float = 0.0) -> torch.Tensor:
    """``torch.histc`` counted in integers: same bins as aten (its formula, in x's dtype), exact
    counts, whatever the order the elements are visited in."""
    if x.dtype not in HISTC_DTYPES:
        raise TypeError(f"exact_histc: dtype {x.dtype} is not supported ({HISTC_DTYPES}); integer histc is exact on aten")
    if bins <= 0:
        raise RuntimeError(f"exact_histc: bins must be > 0, got {bins}")
    lo, hi = histc_range(x, min, max)
    flat = x.reshape(-1)
    # aten keeps the edges in the input dtype (linspace's first / last element are exactly lo / hi
    # rounded to it) and evaluates (x - lo) * bins / (hi - lo) in that dtype, one rounding per op.
    lo_t = torch.tensor(lo, dtype=x.dtype, device=x.device)
    hi_t = torch.tensor(hi, dtype=x.dtype, device=x.device)
    inside = (flat >= lo_t) & (flat <= hi_t)  # NaN is never inside
    pos = ((flat - lo_t) * torch.tensor(float(bins), dtype=x.dtype, device=x.device)) / (hi_t - lo_t)
    idx = pos.masked_fill(~inside, 0).to(torch.int64).clamp_(max=bins - 1)  # x == hi: last bin
    counts = torch.bincount(idx[inside], minlength=bins)  # int64: exact in any order
    return counts.to(x.dtype)
