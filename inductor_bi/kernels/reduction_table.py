"""The row reductions' pinned launch shapes and graph knobs (kernels/reduction.py, kernels/scan.py,
passes/reductions.py, passes/rms_norm.py).

A row's order of operations is fixed by (R, BLOCK_R, num_warps), and BLOCK_R and num_warps by
(R, dtype, device): never by the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# What the reduction kernels accept.
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class ReductionConfig:
    # Width of the fp32 accumulator vector: a row is read in BLOCK_R steps, element j of every
    # step is added into lane j % BLOCK_R, and one tl.sum closes the row. So the order that
    # makes a row's result is fixed by (R, BLOCK_R, num_warps), and BLOCK_R by (R, dtype).
    block_r: int
    # The final tl.sum's tree follows the register layout, which follows num_warps: pinned as a
    # function of block_r only.
    num_warps: int


# Widest accumulator vector per program on CUDA. A row of a common hidden size (<= 4096) fits in
# one step; longer rows loop. fp64 halves it to keep the same register budget.
REDUCTION_BLOCK_CAP_CUDA = {
    torch.float16: 4096,
    torch.bfloat16: 4096,
    torch.float32: 4096,
    torch.float64: 2048,
}
# Interpreter (CPU reference mode): small, so that rows of a few hundred elements already run the
# multi-step loop in tests, and a program's numpy vectors stay cheap.
REDUCTION_BLOCK_CAP_INTERPRETER = 64
# One warp per 256 accumulator lanes, 1..8 warps: enough threads to stream a row, few enough that
# each keeps several lanes. Only block_r decides it, never the number of rows.
REDUCTION_LANES_PER_WARP = 256
REDUCTION_MAX_WARPS = 8
# Triton compiles a separate kernel variant for pointers that are / are not 16-byte aligned, and
# the variant's load vector width sets the register layout, hence the tl.sum tree. A row must
# not change bits because its tensor is an offset view, so unaligned inputs are copied first.
REDUCTION_POINTER_ALIGN = 16

# RMSNorm after a residual add (h = x + r; mean(h.float() ** 2)): the row kernel reads x and r and
# adds them itself (rounded to h's dtype, as the add stores h), so the add need not run as its own
# kernel before the row-sum call. Same row sums by construction (CPU tests check bitwise against
# the unfolded graph); one launch fewer per norm.
REDUCTION_FOLD_RESIDUAL_ADD = True
REDUCTION_FOLD_ADD_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# A hand-written RMSNorm (HF Llama's: mean of squares, + eps, rsqrt, normalize, cast, weight) as
# one row kernel (passes/rms_norm.py) instead of the row-sum kernel plus Inductor's pointwise
# normalize: with REDUCTION_FOLD_RESIDUAL_ADD, one launch per norm where there were three. The
# row sum is invariant_mean's (same lanes, same order); the normalize is per element, so a row's
# bits depend on that row only.
REDUCTION_FUSE_RMS_NORM = True

# This table's knobs: they choose how fast, never whether a row is invariant (kernels/knobs.py).
SPEED_KNOBS = {
    "REDUCTION_FOLD_RESIDUAL_ADD": "the residual add before a norm done by the row kernel",
    "REDUCTION_FUSE_RMS_NORM": "a hand-written RMSNorm as one row kernel",
}


def reduction_config(r: int, dtype: torch.dtype, device: torch.device) -> ReductionConfig:
    """The pinned launch shape for rows of extent ``r``: a pure function of (r, dtype, device)."""
    cap = REDUCTION_BLOCK_CAP_CUDA[dtype] if device.type == "cuda" else REDUCTION_BLOCK_CAP_INTERPRETER
    block_r = min(_next_power_of_2(max(r, 1)), cap)
    num_warps = min(REDUCTION_MAX_WARPS, max(1, block_r // REDUCTION_LANES_PER_WARP))
    return ReductionConfig(block_r=block_r, num_warps=num_warps)


def _next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()
