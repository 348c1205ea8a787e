"""invariant_matmul's pinned tiles and launch choices (kernels/matmul.py).

The invariance rule: the order of operations that produces one output element may depend on K,
the dtype and the constants below, never on M, the batch, the SM count or timing. Parallelism may
still follow the batch where the arithmetic is identical by construction, and only the functions
named for it read the output's size: split-K over the fixed K chunks and the tall launch shape
(64-row warpgroup slabs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from . import _device

# What invariant_matmul accepts; complex operands run as one real matmul of their parts
# (kernels/matmul.py _complex_matmul).
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
COMPLEX_DTYPES = (torch.complex64, torch.complex128)


@dataclass(frozen=True)
class MatmulConfig:
    # Output tile. Rows: on CUDA a program's BLOCK_M rows are split between its warpgroups
    # (4 warps each) in 64-row slabs, and each warpgroup runs the same MMA instruction sequence on
    # its slab; so BLOCK_M (with num_warps) sets how much of the output one program computes, not
    # how an element is computed. BLOCK_N does set the MMA instruction (its N width): pinned.
    block_m: int
    block_n: int
    # K step of one tl.dot: the innermost unit of the accumulation order.
    block_k: int
    # Fixed K chunk: each chunk of K is accumulated from zero in fp32, and the chunk partials are
    # added in ascending order. Because the chunks are fixed by K alone, a small-M call may run
    # the chunks in separate programs (split-K) and merge them in the same order: same bits.
    k_chunk: int
    num_warps: int
    num_stages: int
    # Row tiles that share one column tile in launch order, so the B tile is still in L2 when
    # the next program needs it. It only decides which program computes which tile, never how.
    group_m: int = 8


# CUDA tiles per operand dtype. The arithmetic (BLOCK_N, BLOCK_K, K chunk: the MMA instruction
# m64n128k16 and its order) is one per dtype, never chosen from M or N (in ``w @ x.T`` the tokens
# are the columns). The short shape (64 rows, one warpgroup) fills the GPU with more programs when
# the output is small; its 128-wide K step is eight m64n128k16 MMAs chained on one accumulator, the
# tall shape's two 64-wide steps of four: the same MMA sequence per K chunk (MATMUL_MMA_K).
MATMUL_CUDA = {
    torch.float16: MatmulConfig(block_m=64, block_n=128, block_k=128, k_chunk=1024, num_warps=4, num_stages=4),
    torch.bfloat16: MatmulConfig(block_m=64, block_n=128, block_k=128, k_chunk=1024, num_warps=4, num_stages=4),
    torch.float32: MatmulConfig(block_m=64, block_n=64, block_k=32, k_chunk=512, num_warps=4, num_stages=3),
    torch.float64: MatmulConfig(block_m=32, block_n=32, block_k=16, k_chunk=512, num_warps=4, num_stages=2),
}
# The tall shape: 128 rows, two warpgroups each running the short tile's instruction sequence on
# its own 64 rows (identical floating-point PTX, tests/test_kernels_sm90_codegen), for large
# outputs. Its stage count sets how many K steps are in flight, not the order of the adds.
MATMUL_CUDA_TALL = {
    torch.float16: MatmulConfig(block_m=128, block_n=128, block_k=64, k_chunk=1024, num_warps=8, num_stages=5),
    torch.bfloat16: MatmulConfig(block_m=128, block_n=128, block_k=64, k_chunk=1024, num_warps=8, num_stages=5),
}
# Rows of output per warpgroup's MMA slab on Hopper (wgmma's M): a tall tile must be a whole
# number of such slabs with one warpgroup (4 warps) per slab, so each slab's arithmetic is the
# short tile's.
MATMUL_ROWS_PER_WARPGROUP = 64
# The tall shape pays once its tiles alone keep most SMs busy and the rows fill a tall tile;
# with fewer tiles the short shape's extra programs win.
MATMUL_TALL_MIN_SM_FRACTION = 0.75
# The tall shape's argument is Hopper's (wgmma works on 64-row slabs, one per warpgroup); other
# architectures split a tile between warps differently, so they keep the short tile only.
MATMUL_TALL_CAPABILITY_MAJOR = 9

# Interpreter tiles (CPU reference mode): the interpreter's cost is per program, so tiles are
# moderate; they are pinned for the same reason as on CUDA (tl.dot becomes one numpy matmul of
# a fixed [BLOCK_M, BLOCK_K] x [BLOCK_K, BLOCK_N] shape, so every row sees the same BLAS call).
MATMUL_INTERPRETER = MatmulConfig(block_m=32, block_n=32, block_k=32, k_chunk=128, num_warps=1, num_stages=1)

# Split-K for small M: run each fixed K chunk in its own program when the output tiles alone
# would leave most SMs idle. Only *whether* to split depends on M; the bits never do.
MATMUL_SPLIT_K_MAX_TILES = 64  # split when the output has fewer tiles than this (CUDA only)

# Pipeline depth decides how many K steps are in flight, not the order of the adds. GPUs with less
# shared memory per block than the H100's (consumer parts: ~99 KiB) get fewer stages instead of a
# launch failure; at least 2.
MATMUL_MIN_STAGES = 2

# K of one Hopper MMA instruction (wgmma ...k16 for fp16 / bf16). A tl.dot over BLOCK_K is
# BLOCK_K / 16 of them chained on one accumulator in ascending k, so two launch shapes whose K
# steps differ but are whole numbers of MMAs inside one K chunk issue the same sequence per chunk
# (tests/test_kernels_sm90_codegen). Not so in the interpreter (one numpy matmul per dot), which
# uses one tile for every shape.
MATMUL_MMA_K = 16

# The split-K merge inside the split launch: the chunk program of a tile that finishes last (a
# per-tile arrival counter, acq_rel at GPU scope) adds the partials in the same ascending order
# and with the same epilogue as the separate MERGE launch (the same PTX float ops,
# tests/test_kernels_sm90_codegen), so the bits are the same and a launch is saved.
MATMUL_MERGE_IN_LAST_PROGRAM = True

# One compiled binary for every batch size: Triton compiles a variant of a kernel per value class
# of each integer argument (1 becomes a constant, multiples of 16 carry an alignment fact), so with
# M specialized a matmul at M = 1, 8 and 64 runs three binaries whose float ops are equal only as a
# checked fact (tests/test_kernels_sm90_codegen). On, the matmul takes M unspecialized
# (_launch.sizes_follow_the_batch): one binary per launch shape for every batch size, by
# construction. Strides keep their alignment facts (the loads' vector width rests on them).
ONE_BINARY_FOR_ANY_BATCH = True

# This table's knobs: they choose how fast, never whether a row is invariant (kernels/knobs.py).
SPEED_KNOBS = {
    "MATMUL_MERGE_IN_LAST_PROGRAM": "split-K partials merged by the tile's last chunk program",
    "ONE_BINARY_FOR_ANY_BATCH": "the matmul takes M unspecialized: one compiled binary per launch shape for every batch size",
}


def matmul_use_tma(a: torch.Tensor, device: torch.device) -> bool:
    """Whether this call may fetch tiles by TMA: a question of hardware only (layout: _launch)."""
    return _device.tma_available(a.dtype, device)


def matmul_config(dtype: torch.dtype, device: torch.device, interpreted: bool, output: tuple[int, int, int] = (0, 0, 0)) -> MatmulConfig:
    """The pinned tile config of (dtype, device). ``output`` (batches, rows, columns) picks
    between the two launch shapes that share one arithmetic: how many output rows a program
    computes may follow the batch, how each element is computed may not."""
    if interpreted:
        return MATMUL_INTERPRETER
    tall = MATMUL_CUDA_TALL.get(dtype)
    batches, rows, cols = output
    if tall is not None and rows >= tall.block_m:
        gpu = _device.gpu(device)
        tiles = batches * -(-rows // tall.block_m) * -(-cols // tall.block_n)
        if gpu.capability_major == MATMUL_TALL_CAPABILITY_MAJOR and tiles >= MATMUL_TALL_MIN_SM_FRACTION * gpu.sm_count:
            return tall
    return _stages_that_fit(MATMUL_CUDA[dtype], dtype, device)


def _stages_that_fit(cfg: MatmulConfig, dtype: torch.dtype, device: torch.device) -> MatmulConfig:
    if not torch.cuda.is_available():  # explain reports the CUDA configs from a CPU machine
        return cfg
    stage_bytes = (cfg.block_m * cfg.block_k + cfg.block_k * cfg.block_n) * dtype.itemsize
    stages = max(MATMUL_MIN_STAGES, min(cfg.num_stages, _device.gpu(device).shared_bytes // stage_bytes))
    return cfg if stages == cfg.num_stages else dataclasses.replace(cfg, num_stages=stages)


def tall_shares_arithmetic(short: MatmulConfig, tall: MatmulConfig) -> bool:
    slabs = tall.block_m // MATMUL_ROWS_PER_WARPGROUP
    return (
        (tall.block_n, tall.k_chunk) == (short.block_n, short.k_chunk)
        and all(cfg.block_k % MATMUL_MMA_K == 0 and cfg.k_chunk % cfg.block_k == 0 for cfg in (short, tall))
        and short.block_m == MATMUL_ROWS_PER_WARPGROUP and short.num_warps == 4
        and tall.block_m % MATMUL_ROWS_PER_WARPGROUP == 0 and tall.num_warps == 4 * slabs
    )


def matmul_k_chunk(cfg: MatmulConfig, k: int) -> int:
    """The fixed K chunk for this K: ``cfg.k_chunk``, shrunk (to a BLOCK_K multiple) when K is
    smaller so a short K does not loop over masked steps. A function of K alone."""
    return max(cfg.block_k, min(cfg.k_chunk, -(-k // cfg.block_k) * cfg.block_k))


def matmul_use_split_k(output_tiles: int, n_chunks: int, device: torch.device) -> bool:
    """Whether to run the K chunks in separate programs: only a question of filling the GPU."""
    return device.type == "cuda" and n_chunks > 1 and output_tiles < MATMUL_SPLIT_K_MAX_TILES
