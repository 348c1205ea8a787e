"""fixed_split_attention's pinned tiles and launch choices (kernels/attention.py).

A query row's arithmetic may depend on the key positions, the head dims, the dtype and the
constants below, never on Lq, the batch, the number of heads or the SM count. Parallelism may
follow them where the arithmetic is identical by construction: split-parallel KV splits, GQA head
packing and pipeline depth are chosen only by the functions named for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _device

# What fixed_split_attention accepts.
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


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
# never on batch, heads or Lq. 16-bit inputs run on tensor cores; fp32 gets smaller tiles. Head
# dim 128 takes 1024-key splits: half the merges of prefill and half the split programs of decode.
_ATTENTION_CUDA_16BIT = {
    64: AttentionConfig(block_m=64, block_n=64, kv_split=256, num_warps=4, num_stages=3),
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
# position x head), so a step reads each K/V block once per group instead of once per query head.
# A row's arithmetic does not depend on its tile row or companions, so packing changes which
# program computes a row, not its bits (tests compare them bitwise). Packed when one tile holds a
# group's rows (decode, short chunks) and for long prefills from this many query positions, where
# a tile's causal diagonal is shorter packed; between the two, one head per program was faster.
ATTENTION_PACK_GQA_MIN_QUERIES = 2048

# The split-KV merge inside the split launch, as for split-K (matmul_table's
# MATMUL_MERGE_IN_LAST_PROGRAM): the program of a query tile that counts its split in last folds
# the splits' (m, l, a) partials in ascending order and writes the rows, the MERGE launch's loop,
# so the bits are the same and a launch is saved.
ATTENTION_MERGE_IN_LAST_PROGRAM = True

# A serving step's K/V gather (cache[slots, :, :kv_len], a copy of every row's cache per layer)
# folded into the attention call: each program reads its row's slot in place (passes/kv_gather.py,
# the kernel's kv_rows). Which memory, not which arithmetic: the same bits, no copy per layer.
ATTENTION_FOLD_KV_GATHER = True

# The query tile by TMA as well, where K / V go by TMA and a tile's rows are one head's positions
# (not GQA-packed): fewer registers for addresses, so fewer spills. Which path fetches the tile,
# not what is computed (the same float ops on sm_90, tests/test_kernels_sm90_codegen).
ATTENTION_Q_BY_TMA = True

# Pipeline depth of the split-parallel launches (decode: each program walks one split's key
# blocks and waits on their loads). Stages decide how many key blocks are in flight, not the
# arithmetic (the sm_90 float ops are the same for 2, 3 and 4 stages: tests/test_kernels_sm90_codegen),
# so decode may take another depth than prefill. None: the tile's own.
ATTENTION_SPLIT_STAGES: int | None = 3

# Pipeline depth of a sequential launch whose programs all fit in one wave (at most one per SM):
# each program then walks its keys alone on its SM, waiting on loads, and a deeper pipeline hides
# them; launches of many waves are faster with the tile's own depth. Not arithmetic (as above).
# None: the tile's own.
ATTENTION_ONE_WAVE_STAGES: int | None = 3

# This table's knobs: they choose how fast, never whether a row is invariant (kernels/knobs.py).
SPEED_KNOBS = {
    "ATTENTION_MERGE_IN_LAST_PROGRAM": "split-KV partials merged by the tile's last split program",
    "ATTENTION_SPLIT_STAGES": "decode's pipeline depth (None: the tile's)",
    "ATTENTION_ONE_WAVE_STAGES": "pipeline depth of sequential launches of at most one program per SM (None: the tile's)",
    "ATTENTION_FOLD_KV_GATHER": "a serving step's KV cache read in place by attention",
    "ATTENTION_Q_BY_TMA": "the query tile fetched by a TMA descriptor too (not GQA-packed)",
}


def attention_packs_gqa(lq: int, group: int, cfg: AttentionConfig) -> bool:
    """Whether to pack a K/V head's query heads into one program: a question of speed only."""
    return group > 1 and (lq * group <= cfg.block_m or lq >= ATTENTION_PACK_GQA_MIN_QUERIES)


def attention_pack_rule(cfg: AttentionConfig) -> str:
    """attention_packs_gqa in words, for reports (explain, the benchmarks' JSON)."""
    return f"when Lq x group <= {cfg.block_m} (decode) or Lq >= {ATTENTION_PACK_GQA_MIN_QUERIES}"


def attention_config(head_dim: int, dtype: torch.dtype, interpreted: bool) -> AttentionConfig:
    """The pinned tile config: a function of (padded head dim, dtype, device) only, never of Lq,
    the batch or the number of heads. ``head_dim`` is the larger of the q/k and v head dims."""
    if interpreted:
        return ATTENTION_INTERPRETER
    table = _ATTENTION_CUDA_32BIT if dtype == torch.float32 else _ATTENTION_CUDA_16BIT
    return table[max(64, 1 << (max(head_dim, 1) - 1).bit_length())]


def attention_use_tma(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether this call may fetch K / V by TMA: a question of hardware only (layout: _launch).
    The pointer loads' 64-bit addresses cost registers (spills) that the descriptors do not."""
    return _device.tma_available(dtype, device)


def attention_use_split(sequential_programs: int, n_splits: int, device: torch.device) -> bool:
    """Whether to run the KV splits in separate programs: only a question of filling the GPU."""
    return device.type == "cuda" and n_splits > 1 and sequential_programs < ATTENTION_SPLIT_MAX_PROGRAMS


def attention_stages(cfg: AttentionConfig, split: bool, programs: int = 0, device: torch.device | None = None) -> int:
    """The launch's pipeline depth: a question of speed only."""
    if split:
        return ATTENTION_SPLIT_STAGES if ATTENTION_SPLIT_STAGES is not None else cfg.num_stages
    if ATTENTION_ONE_WAVE_STAGES is not None and device is not None and device.type == "cuda" and programs <= _device.gpu(device).sm_count:
        return ATTENTION_ONE_WAVE_STAGES
    return cfg.num_stages
