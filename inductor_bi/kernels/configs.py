"""Every pinned constant of every kernel, in one place, each with the reason it is pinned.

The invariance rule: the order of operations that produces one output element may depend on the
reduced extent (K, hidden size, KV length), the dtype and the constants below, never on the number
of rows, the batch, the SM count or timing. So no arithmetic constant here is a function of M /
rows / batch. Parallelism may still adapt to the batch where the arithmetic is identical by
construction, and only the functions named for it take the batch: split-K over the matmul's fixed
K chunks, the matmul's tall launch shape (64-row warpgroup slabs), attention's fixed KV splits and
GQA head packing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch

# --------------------------------------------------------------------------------------------
# Matmul (kernels/matmul.py)
# --------------------------------------------------------------------------------------------


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


# CUDA tiles, per operand dtype: the arithmetic (BLOCK_N, BLOCK_K, K chunk: the MMA instruction
# m64n128k16 and its order) is one per dtype, never chosen from M or N (in ``w @ x.T`` the tokens
# are the columns). Two launch shapes share it (H100 sweep: benchmarks/results/tune_matmul_h100_v5.txt,
# every candidate bitwise equal to the others on every case):
# - short: 64 rows, one warpgroup, 4 stages: fills the GPU with more programs when the output is
#   small (0.6-1.06x cuBLAS at M <= 256);
# - tall: 128 rows, two warpgroups each running the short tile's instruction sequence on its
#   own 64 rows (identical floating-point PTX, tests/test_kernels_sm90_codegen): 0.81-0.90x
#   cuBLAS at M >= 1024 with TMA, where the short tile reached 0.66-0.71x. 5 stages (v13): the
#   pipeline depth sets how many K steps are in flight, not the order of the adds; H200
#   (tune_matmul_h200_v13.txt at f76d1af, every case bitwise equal) 0-2% over 4 stages at M >= 1024, 3-7%
#   at M = 256 where the tall shape runs (N = 8192..128256), as v9's sweep saw (~1%).
# The short tile's K step is 128 wide (v10), twice the tall tile's: a tl.dot over 128 is eight of
# the same m64n128k16 MMAs chained on one accumulator, where the tall tile issues two dots of
# four, so both run one MMA sequence per K chunk (configs.MATMUL_MMA_K; tests/test_kernels_sm90_codegen).
# H200 sweep (tune_matmul_h200_v9.txt at f76d1af, every candidate bitwise equal): 64x128x128 with 4 stages
# beat 64x128x64 with 6 in 27 of 30 cases, by up to 11% at mid M (M=1024 N=1024 1.08 vs 0.97x of
# cuBLAS; M=256 K=14336 0.99 vs 0.91x; M=1 0.69-0.81 vs 0.67-0.79x).
MATMUL_CUDA = {
    torch.float16: MatmulConfig(block_m=64, block_n=128, block_k=128, k_chunk=1024, num_warps=4, num_stages=4),
    torch.bfloat16: MatmulConfig(block_m=64, block_n=128, block_k=128, k_chunk=1024, num_warps=4, num_stages=4),
    torch.float32: MatmulConfig(block_m=64, block_n=64, block_k=32, k_chunk=512, num_warps=4, num_stages=3),
    torch.float64: MatmulConfig(block_m=32, block_n=32, block_k=16, k_chunk=512, num_warps=4, num_stages=2),
}
MATMUL_CUDA_TALL = {
    torch.float16: MatmulConfig(block_m=128, block_n=128, block_k=64, k_chunk=1024, num_warps=8, num_stages=5),
    torch.bfloat16: MatmulConfig(block_m=128, block_n=128, block_k=64, k_chunk=1024, num_warps=8, num_stages=5),
}
# Rows of output per warpgroup's MMA slab on Hopper (wgmma's M): a tall tile must be a whole
# number of such slabs with one warpgroup (4 warps) per slab, so each slab's arithmetic is the
# short tile's.
MATMUL_ROWS_PER_WARPGROUP = 64
# The tall launch shape is used once its tiles alone keep most SMs busy (H100, v5: 128 tall tiles
# on 132 SMs, M=512 x N=4096, ran the short tile at 0.76x cuBLAS where tall tiles reach ~0.85x;
# with 64 tall tiles the short tile's 128 programs won, 1.06x vs 0.73x at M=256) and the rows
# fill a tall tile (at M=1..64 on the 128256-wide lm_head, tall tiles ran 0.62-0.72x, short ~1.0x).
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


# Hopper and later can fetch tiles with TMA (tensor-memory-accelerator descriptors) where the
# layout allows: fp16 / bf16. It changes only how tiles reach shared memory, not the tiles, the
# MMA instructions or their order (same PTX arithmetic: tests/test_kernels_sm90_codegen).
TMA_DTYPES = (torch.float16, torch.bfloat16)
TMA_MIN_CAPABILITY_MAJOR = 9
# What a TMA descriptor can describe (CUDA's cuTensorMapEncodeTiled): 16-byte aligned base and
# strides (other than the last, which is 1), dims from 1 to 2**32, strides below 2**40 bytes.
# Other tensors use pointer loads.
TMA_ALIGN_BYTES = 16
TMA_MAX_DIM = 2**32
TMA_MAX_STRIDE_BYTES = 2**40

# The matmul's A and B tiles by TMA (one batch).
MATMUL_USE_TMA = True


def tma_available(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the hardware can fetch tiles of this dtype by TMA."""
    return device.type == "cuda" and dtype in TMA_DTYPES and _gpu(device).capability_major >= TMA_MIN_CAPABILITY_MAJOR


def tma_describable(t: torch.Tensor) -> bool:
    """Whether a TMA descriptor can describe ``t`` as it lies in memory (no copy)."""
    size = t.element_size()
    return (
        t.dim() >= 1
        and 0 not in t.shape
        and t.stride(-1) == 1
        and t.data_ptr() % TMA_ALIGN_BYTES == 0
        and max(t.shape) <= TMA_MAX_DIM
        and all(0 < stride * size < TMA_MAX_STRIDE_BYTES and (stride * size) % TMA_ALIGN_BYTES == 0 for stride in t.stride()[:-1])
    )


def matmul_use_tma(a: torch.Tensor, device: torch.device) -> bool:
    """Whether this call may fetch tiles by TMA: a question of hardware and layout only."""
    return MATMUL_USE_TMA and tma_available(a.dtype, device)


# Persistent FULL launches (kernels/matmul.py: _invariant_matmul_persistent_kernel): at most
# MATMUL_PERSISTENT_PROGRAMS_PER_SM x SMs programs walk the output tiles, so a tile's epilogue can
# overlap the next tile's loads and no program waits to be scheduled. Which program computes a
# tile changes; the tile's loads, K loop and epilogue do not (same bits: GPU test and
# tune_matmul). Hopper TMA launches of one batch only. Off: slower on the H200
# (tune_matmul_h200_v9.txt at f76d1af: tall tile 0.66-0.70x of cuBLAS at M >= 1024 vs 0.85-0.91x
# one program per tile; short tile 0.45-0.49x vs 0.69-0.74x), same bits in every case.
MATMUL_PERSISTENT = False
MATMUL_PERSISTENT_PROGRAMS_PER_SM = 1


def matmul_persistent_programs(tiles: int, device: torch.device) -> int | None:
    """How many programs a persistent FULL launch runs (None: launch one program per tile)."""
    if not MATMUL_PERSISTENT or device.type != "cuda" or _gpu(device).capability_major < TMA_MIN_CAPABILITY_MAJOR:
        return None
    return min(tiles, MATMUL_PERSISTENT_PROGRAMS_PER_SM * _gpu(device).sm_count)


def matmul_config(dtype: torch.dtype, device: torch.device, interpreted: bool, output: tuple[int, int, int] = (0, 0, 0)) -> MatmulConfig:
    """The pinned tile config of (dtype, device). ``output`` (batches, rows, columns) picks
    between the two launch shapes that share one arithmetic: how many output rows a program
    computes may follow the batch, how each element is computed may not."""
    if interpreted:
        return MATMUL_INTERPRETER
    tall = MATMUL_CUDA_TALL.get(dtype)
    batches, rows, cols = output
    if tall is not None and rows >= tall.block_m:
        gpu = _gpu(device)
        tiles = batches * -(-rows // tall.block_m) * -(-cols // tall.block_n)
        if gpu.capability_major == MATMUL_TALL_CAPABILITY_MAJOR and tiles >= MATMUL_TALL_MIN_SM_FRACTION * gpu.sm_count:
            return tall
    return _stages_that_fit(MATMUL_CUDA[dtype], dtype, device)


# Pipeline depth (stages) decides how many K steps are in flight, not the order of the adds (v5
# sweep: 4 and 6 stages gave equal bits). GPUs with less shared memory per block than the H100's
# 227 KiB (consumer parts: ~99 KiB) get fewer stages instead of a launch failure; at least 2.
MATMUL_MIN_STAGES = 2


def _stages_that_fit(cfg: MatmulConfig, dtype: torch.dtype, device: torch.device) -> MatmulConfig:
    if not torch.cuda.is_available():  # explain reports the CUDA configs from a CPU machine
        return cfg
    stage_bytes = (cfg.block_m * cfg.block_k + cfg.block_k * cfg.block_n) * dtype.itemsize
    stages = max(MATMUL_MIN_STAGES, min(cfg.num_stages, _gpu(device).shared_bytes // stage_bytes))
    return cfg if stages == cfg.num_stages else dataclasses.replace(cfg, num_stages=stages)


class GpuProperties(NamedTuple):
    sm_count: int
    capability_major: int
    shared_bytes: int  # shared memory one block may use (opt-in maximum)


@functools.lru_cache(maxsize=None)
def _gpu(device: torch.device) -> GpuProperties:
    """What the launch choices read from a CUDA device."""
    import triton

    props = torch.cuda.get_device_properties(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    shared = triton.runtime.driver.active.utils.get_device_properties(index)["max_shared_mem"]
    return GpuProperties(props.multi_processor_count, props.major, shared)


# K of one Hopper MMA instruction (wgmma ...k16 for fp16 / bf16). A tl.dot over BLOCK_K is
# BLOCK_K / 16 of them chained on one accumulator in ascending k, so two launch shapes whose K
# steps differ but are whole numbers of MMAs inside one K chunk issue the same sequence per chunk
# (tests/test_kernels_sm90_codegen; H200 v9 sweep: a 128-wide K step gave the 64-wide step's bits
# in all 30 cases, tune_matmul_h200_v9.txt at f76d1af). Not so in the interpreter (one numpy matmul per
# dot), which uses one tile for every shape.
MATMUL_MMA_K = 16


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


# The split-K merge is elementwise: each output element adds its chunk partials in ascending
# order from zero, then the epilogue. So a separate merge launch may cover any tile (rows,
# columns) without changing an element's arithmetic (interpreter tests; bitwise in every case of
# benchmarks/results/tune_split_k_h200_v7.txt). None: the matmul's own tile. Smaller merge tiles
# were timed twice on the H200 (v7) and the runs disagreed (a 32x64 merge 1-10 us faster at M=64
# in the first, 0.3-2 us slower in the second), so none is pinned; the merge now runs inside the
# split launch (below) wherever it can.
MATMUL_MERGE_TILE: tuple[int, int] | None = None
MATMUL_MERGE_WARPS = 4
# The merge inside the split launch: the chunk program of a tile that finishes last (a per-tile
# arrival counter, acq_rel at GPU scope) adds the partials, in the same ascending order and with
# the same epilogue as the MERGE launch (the same PTX float ops, tests/test_kernels_sm90_codegen),
# so the bits are the same and the second launch is gone. H200 (v7,
# benchmarks/results/tune_split_k_h200_v7.txt): the fastest split in 20 of 21 small-M cases
# (e.g. 2048x8192 at M=64 13.5 us vs 14.9 / 16.2 with a 64x128 / 32x64 merge launch); the llama-1b
# decode step 4-5% faster at batch 1, 8 and 64 with the same logits
# (benchmarks/results/ab_merge_in_last_h200_v7.txt).
MATMUL_MERGE_IN_LAST_PROGRAM = True
# Arrival counters of the merges run inside split launches (kernels/_arrivals.py): one set per
# CUDA stream, eager or capturing, a counter per output tile. A split launch has fewer programs per
# split than MATMUL_SPLIT_K_MAX_TILES / ATTENTION_SPLIT_MAX_PROGRAMS unless forced; PyTorch streams
# come from a pool of 32 per priority. 64 x 1024 int32 = 256 KiB per device.
SPLIT_ARRIVAL_SETS = 64
SPLIT_ARRIVAL_SET_SIZE = 1024


# Programmatic dependent launch (Hopper and later) for the merge launch of split-K and of
# split-KV attention: the merge grid is scheduled while the split grid still runs and waits in
# ``griddepcontrol.wait`` until the split grid has finished and its stores are visible. It changes
# when the merge starts, not what it adds. Off: measured on the H100 (v6,
# benchmarks/results/ab_pdl_h100_v6.txt), the llama-1b decode step ran 2% slower with it at batch 1
# and 8 (1.919 vs 1.879 ms) and the same at 64; alone, split-K matmuls gained at most 0.4 us at
# M=1 and lost up to 1.5 us at M=64 (tune_split_k_h100_v6.txt, merge released at the split's start).
SPLIT_MERGE_PDL = False
PDL_MIN_CAPABILITY_MAJOR = 9


def split_merge_launch_options(device: torch.device, interpreted: bool) -> tuple[dict, dict]:
    """Extra kernel arguments for a split launch and for its merge launch."""
    if SPLIT_MERGE_PDL and not interpreted and device.type == "cuda" and _gpu(device).capability_major >= PDL_MIN_CAPABILITY_MAJOR:
        return {"USE_PDL": True}, {"USE_PDL": True, "launch_pdl": True}
    return {}, {}


def matmul_use_split_k(output_tiles: int, n_chunks: int, device: torch.device) -> bool:
    """Whether to run the K chunks in separate programs: only a question of filling the GPU."""
    return device.type == "cuda" and n_chunks > 1 and output_tiles < MATMUL_SPLIT_K_MAX_TILES

# --------------------------------------------------------------------------------------------
# Reductions: norms, softmax, sums (kernels/reduction.py)
# --------------------------------------------------------------------------------------------

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
# kernel before the extern row-sum call; Inductor fuses it into the norm's pointwise consumer.
# Same row sums by construction (CPU tests check bitwise against the unfolded graph); one launch
# fewer per norm (llama-1b decode: 32 of ~470). On: llama-1b decode step 2.6 / 3.4 / 1.8% faster
# at batch 1 / 8 / 64, logits equal (ab_graph_knobs_h200_v9.txt).
REDUCTION_FOLD_RESIDUAL_ADD = True
REDUCTION_FOLD_ADD_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# A hand-written RMSNorm (HF Llama's: mean of squares, + eps, rsqrt, normalize, cast, weight) as
# one row kernel (passes/rms_norm.py) instead of the row-sum kernel plus Inductor's pointwise
# normalize: with REDUCTION_FOLD_RESIDUAL_ADD, one launch per norm where there were three. The
# row sum is invariant_mean's (same lanes, same order); the normalize is per element, so a row's
# bits depend on that row only. eps is a kernel argument (a 0-dim CPU eps, Dynamo's unspecialized
# float, is read on the host). On: with the fold, decode step 4.3 / 4.7 / 3.7% faster at batch 1 /
# 8 / 64, logits equal (ab_graph_knobs_h200_v9.txt).
REDUCTION_FUSE_RMS_NORM = True


def reduction_config(r: int, dtype: torch.dtype, device: torch.device) -> ReductionConfig:
    """The pinned launch shape for rows of extent ``r``: a pure function of (r, dtype, device)."""
    cap = REDUCTION_BLOCK_CAP_CUDA[dtype] if device.type == "cuda" else REDUCTION_BLOCK_CAP_INTERPRETER
    block_r = min(_next_power_of_2(max(r, 1)), cap)
    num_warps = min(REDUCTION_MAX_WARPS, max(1, block_r // REDUCTION_LANES_PER_WARP))
    return ReductionConfig(block_r=block_r, num_warps=num_warps)


def _next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()


# --------------------------------------------------------------------------------------------
# Attention (kernels/attention.py)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionConfig:
    # Query rows per program. Pinned (never chosen from Lq) because the MMA instruction, and so
    # the order of the products inside tl.dot, depends on the tile shape: a decode step (Lq=1)
    # must run its row through the same [block_m, D] x [D, block_n] dot as a prefill does.
    block_m: int
    # Keys per online-softmax step: the innermost unit of the KV order.
    block_n: int
    # Fixed KV split: keys [s*kv_split, (s+1)*kv_split) are reduced from a zero state, and the
    # split partials merge in ascending s. Boundaries depend on absolute key positions alone, so
    # a short cache and a long one share every split up to the last visible key, and the splits
    # may run in one program (sequential) or one program each (split-parallel): same bits.
    kv_split: int
    num_warps: int
    num_stages: int


# Largest head dim (of q/k and of v) the kernel takes: tiles are padded to a power of two and
# the [block_m, 256] fp32 accumulator already fills the register file.
ATTENTION_MAX_HEAD_DIM = 256

# CUDA tiles per (padded head dim, dtype). Allowed to depend on D and dtype (fixed by the model),
# never on batch, heads or Lq. 16-bit inputs run on tensor cores; fp32 gets smaller tiles.
_ATTENTION_CUDA_16BIT = {
    64: AttentionConfig(block_m=64, block_n=64, kv_split=256, num_warps=4, num_stages=3),
    # 1024-key splits since v14: half the merges of 512 in prefill, half the split programs in
    # decode (H200, with ATTENTION_FMA: prefill 4k / 8k 0.421 -> 0.410 / 1.477 -> 1.437 ms; decode
    # batch 8, 8k keys 0.096 -> 0.080, batch 16, 4k 0.076 -> 0.070; batch 1, 8k 0.015 -> 0.018:
    # tune_attention_h200_v14.txt at f76d1af). v3 (H100): 512 beat 256 on both (tune_attention_h100_v3.txt).
    128: AttentionConfig(block_m=64, block_n=64, kv_split=1024, num_warps=4, num_stages=2),
    256: AttentionConfig(block_m=64, block_n=32, kv_split=256, num_warps=8, num_stages=2),
}
_ATTENTION_CUDA_32BIT = {
    64: AttentionConfig(block_m=32, block_n=32, kv_split=256, num_warps=4, num_stages=2),
    128: AttentionConfig(block_m=32, block_n=32, kv_split=256, num_warps=4, num_stages=2),
    256: AttentionConfig(block_m=32, block_n=32, kv_split=256, num_warps=8, num_stages=1),
}

# Interpreter tiles (CPU reference mode): small so that tests at Lk <= ~96 cross several blocks
# and several KV splits, pinned for the same reason as on CUDA (tl.dot is one numpy matmul of a
# fixed [block_m, D] x [D, block_n] shape).
ATTENTION_INTERPRETER = AttentionConfig(block_m=16, block_n=16, kv_split=32, num_warps=1, num_stages=1)

# Split-parallel for few queries (decode): one program per (query block, batch*head, KV split)
# when the sequential grid alone would leave most SMs idle. Only *whether* to split depends on
# the shapes; the bits never do.
ATTENTION_SPLIT_MAX_PROGRAMS = 128  # sequential programs below which to split (CUDA only)


# GQA head packing: one program takes every query head that shares a K/V head (tile rows = query
# position x head), so a decode step reads each K/V block once per group instead of once per
# query head. It only decides which program computes a row: a row's arithmetic does not depend on
# its tile row or companions, so the bits are the same packed or not (tests compare them
# bitwise). Used when one tile holds all of a group's rows (decode, short chunks): on the H100
# (benchmarks/results/attention_h100_v5.json) packed decode ran 1.3-3.2x faster than unpacked at
# batch 4-64 (0.69-0.96x SDPA), while 1k-8k prefill ran 0-7% slower packed.
ATTENTION_PACK_GQA = True
# Long prefills pack too, from this many query positions. H200 (bench_attention.py's packed and
# unpacked columns, head dim 128, 32 query / 8 K/V heads, five runs v10-v15: attention_h200_v10
# ... v14.json, attention.json): unpacked prefill took 0.9-3.0% longer at 2k tokens, 1.7-4.6% at
# 4k, 2.0-3.6% at 8k; at 1k 0.6-1.2% less in four of the five runs. Likely why: a tile of 16
# positions x 4 heads reads each K / V block once for the group, and its causal diagonal is 16
# positions tall instead of 64.
ATTENTION_PACK_GQA_MIN_QUERIES = 2048


def attention_packs_gqa(lq: int, group: int, cfg: "AttentionConfig") -> bool:
    """Whether to pack a K/V head's query heads into one program: a question of speed only."""
    return ATTENTION_PACK_GQA and group > 1 and (lq * group <= cfg.block_m or lq >= ATTENTION_PACK_GQA_MIN_QUERIES)


def attention_pack_rule(cfg: "AttentionConfig") -> str:
    """attention_packs_gqa in words, for reports (explain, the benchmarks' JSON)."""
    if not ATTENTION_PACK_GQA:
        return "never"
    return f"when Lq x group <= {cfg.block_m} (decode) or Lq >= {ATTENTION_PACK_GQA_MIN_QUERIES}"


def attention_config(head_dim: int, dtype: torch.dtype, interpreted: bool) -> AttentionConfig:
    """The pinned tile config: a function of (padded head dim, dtype, device) only, never of Lq,
    the batch or the number of heads. ``head_dim`` is the larger of the q/k and v head dims."""
    if interpreted:
        return ATTENTION_INTERPRETER
    table = _ATTENTION_CUDA_32BIT if dtype == torch.float32 else _ATTENTION_CUDA_16BIT
    return table[max(64, 1 << (max(head_dim, 1) - 1).bit_length())]


# A key block's softmax row sums: off, the order-free sum (attention._order_free_row_sum: exact in
# any order, 5 extra CUDA-core adds per score and a second tl.sum); on, p times a ones matrix on
# the MMA unit, whose instruction fixes each row's order (p as rounded for the PV product, so
# numerator and denominator weigh the same p). New arithmetic (the bits differ from off), the
# same invariance by construction. On since v8: H200 prefill attention 4k / 8k 0.521 -> 0.475 ms /
# 1.879 -> 1.712 ms (0.54 -> 0.60x of SDPA), decode unchanged, max error vs fp64 9.2e-3 -> 7.7e-3
# (benchmarks/results/tune_attention_h200_v8.txt at f76d1af); the attention GPU tests passed with it.
ATTENTION_ROW_SUM_BY_MMA = True


# Written fused multiply-adds in the softmax (FMA contraction stays off in the attention kernel,
# so the compiler never decides one per variant): the scale moves into exp2's argument,
# fma(s, c, -m) in place of round(s * c) - m (the block max is taken before scaling: x -> x * c
# keeps the order for c > 0, so it is the scaled max exactly), and the running sums' x * a + y
# become fma(x, a, y). A float mask's term b enters as fma(s, c, b - m), so a zero mask gives the
# unmasked bits (the GPU tests caught a first version that kept the old formula for float masks).
# One rounding fewer per score and one CUDA-core op fewer per score and per merged accumulator
# element; new arithmetic (the bits differ from off), the same invariance by construction (every
# path runs the same written ops; tests/test_kernels_sm90_codegen checks none is contracted). On
# since v14: H200 prefill 4k / 8k 0.426 -> 0.421 / 1.496 -> 1.477 ms, decode unchanged, max error
# vs fp64 7.7e-3 both (tune_attention_h200_v14.txt at f76d1af); the 68 attention GPU tests passed with it.
ATTENTION_FMA = True


# The split-KV merge inside the split launch, as for split-K (MATMUL_MERGE_IN_LAST_PROGRAM): the
# program of a query tile that counts its split in last folds the splits' (m, l, a) partials in
# ascending order and writes the rows, the MERGE launch's loop, so the bits are the same
# (interpreter tests; the PTX float ops are the split kernel's followed by the merge kernel's).
# On since v8: H200 decode B=1, 8k keys 0.023 -> 0.018 ms; llama-1b decode step 0.3-0.5% faster,
# same logits (results/ab_attention_knobs_h200_v8.txt); GPU test: 50 launches, two streams.
ATTENTION_MERGE_IN_LAST_PROGRAM = True


# A serving step's K/V gather (cache[slots, :, :kv_len], a copy of every row's cache per layer)
# folded into the attention call: each program reads its row's slot in place (passes/kv_gather.py,
# the kernel's kv_rows). Same bits by construction (which memory, not which arithmetic; bitwise
# in the interpreter). The llama-1b decode step spends ~15% of its kernel time on these copies at
# batch 64 (profile_e2e_h200_v8.txt at f76d1af; stock pays them too). On: decode step 4.4 / 5.8 / 17%
# faster at batch 1 / 8 / 64 (2.417 -> 2.006 ms), logits equal (ab_graph_knobs_h200_v9.txt).
ATTENTION_FOLD_KV_GATHER = True


# K / V blocks fetched by TMA descriptors on Hopper (_launch.tma_descriptor) where the layout
# allows, instead of pointer loads: which path brings a block into shared memory, not which keys
# or what is computed (keys past Lk and padded head-dim columns arrive as zeros either way; the
# same PTX float ops, tests/test_kernels_sm90_codegen). The pointer loads' 64-bit addresses held
# registers: the sm_90 prefill kernel spills 17 stores with TMA, 49 with pointers (decode: 210 vs
# 246 registers). On since v10 (timing: docs/decisions.md v10).
ATTENTION_USE_TMA = True


# The query tile by TMA as well, where K / V go by TMA and a tile's rows are one head's positions
# (not GQA-packed). Same float ops on sm_90 (tests/test_kernels_sm90_codegen); the prefill kernel
# spills 8 stores instead of 17 (offline, v10). On since v11: H200 prefill 4k 0.430 -> 0.424 ms,
# 8k 1.525 -> 1.515 ms, decode unchanged, same bits (benchmarks/results/tune_attention_h200_v11.txt at f76d1af).
ATTENTION_Q_BY_TMA = True


def attention_use_tma(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether this call may fetch K / V by TMA: a question of hardware and layout only."""
    return ATTENTION_USE_TMA and tma_available(dtype, device)


def attention_use_split(sequential_programs: int, n_splits: int, device: torch.device) -> bool:
    """Whether to run the KV splits in separate programs: only a question of filling the GPU."""
    return device.type == "cuda" and n_splits > 1 and sequential_programs < ATTENTION_SPLIT_MAX_PROGRAMS


# Pipeline depth of the split-parallel launches (decode: each program walks one split's key
# blocks and waits on their loads). Stages decide how many key blocks are in flight, not the
# arithmetic (the sm_90 float ops are the same for 2, 3 and 4 stages: tests/test_kernels_sm90_codegen),
# so decode may take another depth than prefill. None: the tile's own. 3 since v8: H200 decode B=1,
# 8k keys 0.023 -> 0.020 ms, other decode cases equal; 4 no better; the llama-1b decode step
# (384 keys) unchanged (tune_attention_h200_v8.txt at f76d1af, ab_attention_knobs_h200_v8.txt).
ATTENTION_SPLIT_STAGES: int | None = 3


# Pipeline depth of a sequential launch whose programs all fit in one wave (at most one per SM):
# each program then walks its keys alone on its SM, waiting on loads. H200 (v10,
# tune_attention_h200_v10.txt at f76d1af, with TMA): 3 stages for every launch took decode at batch 16,
# 4k keys (128 sequential programs) from 0.107 to 0.077 ms, but prefill (thousands of programs)
# from 0.429 to 0.556 ms and decode at batch 64 (512 programs) from 0.074 to 0.082. This applies
# it to one-wave launches only. Not arithmetic (tests/test_kernels_sm90_codegen). 3 since v11:
# batch 16, 4k keys 0.107 -> 0.076 ms (0.59 -> 0.82x of SDPA), prefill and batch 64 unchanged;
# 4 no better (tune_attention_h200_v11.txt at f76d1af).
ATTENTION_ONE_WAVE_STAGES: int | None = 3


def attention_stages(cfg: AttentionConfig, split: bool, programs: int = 0, device: torch.device | None = None) -> int:
    """The launch's pipeline depth: a question of speed only."""
    if split:
        return ATTENTION_SPLIT_STAGES if ATTENTION_SPLIT_STAGES is not None else cfg.num_stages
    if ATTENTION_ONE_WAVE_STAGES is not None and device is not None and device.type == "cuda" and programs <= _gpu(device).sm_count:
        return ATTENTION_ONE_WAVE_STAGES
    return cfg.num_stages


# One compiled binary for every batch size: Triton compiles a variant of a kernel per value class
# of each integer argument (1 becomes a constant, multiples of 16 carry an alignment fact), so with
# M specialized a matmul at M = 1, 8 and 64 runs three binaries. Their float ops are the same
# (tests/test_kernels_sm90_codegen compares them), but that is a checked fact, not a construction.
# On, the matmul takes M unspecialized (``sizes_follow_the_batch``): one binary per launch shape
# for every batch size, and fewer binaries compile at a model's first calls; offline (sm_90) the
# same float ops and registers, no spills, 8 more SASS instructions. Strides keep their alignment
# facts (the loads' vector width rests on them). Attention takes no size that follows the batch;
# its lengths stay specialized: unspecialized, its decode kernel spilled 17 stores instead of 3
# offline (the alignment fact on the key count saves mask registers). On since v12: on the H200
# the specialized binaries' bits for M = 1..64, tall and split-K launches included
# (tests/gpu/test_matmul_gpu.py, gpu_tests_h200_v12.txt at f76d1af).
ONE_BINARY_FOR_ANY_BATCH = True


# The knobs above that choose how fast, never whether a row is invariant (each has its reason and
# its measurements where it is defined); ``explain`` reports their values. Off ones wait for a GPU
# timing (docs/decisions.md).
SPEED_KNOBS = {
    "MATMUL_USE_TMA": "Hopper tiles fetched by TMA descriptors",
    "MATMUL_MERGE_IN_LAST_PROGRAM": "split-K partials merged by the tile's last chunk program",
    "MATMUL_MERGE_TILE": "the merge launch's own tile (None: the matmul tile)",
    "MATMUL_PERSISTENT": "FULL matmul launches as one program per SM walking the tiles",
    "SPLIT_MERGE_PDL": "merge launches released early (programmatic dependent launch)",
    "ATTENTION_PACK_GQA": "a K/V head's query heads in one program (decode, and prefill from ATTENTION_PACK_GQA_MIN_QUERIES positions)",
    "ATTENTION_ROW_SUM_BY_MMA": "softmax row sums on the MMA unit (other bits, same invariance)",
    "ATTENTION_FMA": "the softmax scale and running sums as written fused multiply-adds (other bits, same invariance)",
    "ATTENTION_MERGE_IN_LAST_PROGRAM": "split-KV partials merged by the tile's last split program",
    "ATTENTION_SPLIT_STAGES": "decode's pipeline depth (None: the tile's)",
    "ATTENTION_ONE_WAVE_STAGES": "pipeline depth of sequential launches of at most one program per SM (None: the tile's)",
    "ATTENTION_FOLD_KV_GATHER": "a serving step's KV cache read in place by attention",
    "ATTENTION_USE_TMA": "Hopper K / V blocks fetched by TMA descriptors",
    "ATTENTION_Q_BY_TMA": "the query tile fetched by a TMA descriptor too (not GQA-packed)",
    "REDUCTION_FOLD_RESIDUAL_ADD": "the residual add before a norm done by the row kernel",
    "REDUCTION_FUSE_RMS_NORM": "a hand-written RMSNorm as one row kernel",
    "ONE_BINARY_FOR_ANY_BATCH": "the matmul takes M unspecialized: one compiled binary per launch shape for every batch size",
}


def speed_knobs() -> list[tuple[str, object, str]]:
    """(name, current value, what it chooses) of every speed knob."""
    return [(name, globals()[name], what) for name, what in SPEED_KNOBS.items()]


@contextlib.contextmanager
def overridden(**values):
    """These constants set to other values inside the block, then put back (tuning sweeps, A/B
    runs and tests of launch knobs): ``with configs.overridden(MATMUL_MERGE_TILE=None): ...``."""
    module = globals()
    unknown = [name for name in values if name not in module]
    if unknown:
        raise AttributeError(f"inductor_bi.kernels.configs has no {', '.join(unknown)}")
    saved = {name: module[name] for name in values}
    module.update(values)
    try:
        yield
    finally:
        module.update(saved)

