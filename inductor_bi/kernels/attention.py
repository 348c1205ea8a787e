"""fixed_split_attention: scaled-dot-product attention whose arithmetic per query row depends on
the key positions, head dim, dtype and pinned constants only.

Order of the arithmetic for one query row (the invariance contract), in the log2 domain:
  (M, L, A) = (-inf, 0, 0)
  for each fixed KV split s (kv_split keys, ascending; boundaries = absolute key positions):
      (m, l, a) = (-inf, 0, 0)                              # every split starts from zero
      for each block of block_n keys inside s (ascending):
          s = dot(q, K_blk^T); c = scale*log2(e); b = float mask * log2(e) (0 without one)
          hidden keys: s = -inf
          if the row sees no key of the block: (m, l, a) unchanged   # exact no-op
          else: online-softmax update of (m, l, a)           # pinned tile => pinned MMA
                block max round(max(s) * c), or the max of round(round(s * c) + b) with a
                float mask; p = 2^fma(s, c, b - m); l = fma(l, alpha, rowsum(p) by MMA)
      if the row sees no key of s: (M, L, A) unchanged         # exact no-op
      else: M' = max(M, m); L' = L*2^(M-M') + l*2^(m-M'); A' likewise
  out = A / L (0 when the row sees no key, like torch); lse = (M + log2 L) * ln 2

A key the row cannot see (beyond Lk, causal, masked) changes nothing, bit for bit, so a token
gets the same bits in a full prefill, a chunked prefill and a one-query decode against a cache,
and whatever its batch companions or Lq are. Two execution paths give the same bits by
construction (one kernel source, the same merge code): SEQUENTIAL (one program per query block
walks every split) and SPLIT (one program per split writes its (m, l, a) to an fp32 workspace,
then a MERGE program folds them in ascending order). Decode uses SPLIT to fill the GPU.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import attention_table
from ._arrivals import tile_arrivals
from ._launch import float_arg, interpreter_dtype, launch, size_hint, tma_descriptor, tracing_for_inductor, uses_interpreter
from .attention_table import SUPPORTED_DTYPES
from .matmul import _input_precision

_SEQUENTIAL, _SPLIT, _MERGE = 0, 1, 2
_NO_MASK, _BOOL_MASK, _FLOAT_MASK = 0, 1, 2

# Columns of the ones matrix that sums a block's rows by MMA: 16, the narrowest N that tl.dot takes.
ROW_SUM_COLUMNS: tl.constexpr = tl.constexpr(16)


@triton.jit
def _online_softmax_step(
    q, k_base, v_base, mask_base, n_start, part_m, part_l, part_a,
    offs_m, row_ok, d_ok, dv_ok, Lk, stride_kn, stride_vn, stride_mn, qk_scale_log2, kv_b, h_kv,
    MASKED: tl.constexpr,
    IS_CAUSAL: tl.constexpr,
    MASK_KIND: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    USE_TMA: tl.constexpr,
):
    """Fold keys [n_start, n_start + BLOCK_N) into one split's (m, l, a). ``MASKED=False`` is
    only for a block every row sees whole: it then computes exactly what the masked step would
    (every where() below picks its first operand), without the masking work. With ``USE_TMA``
    k_base / v_base are 4-D descriptors of K / V and (kv_b, h_kv) the program's cache row and head."""
    LOG2E: tl.constexpr = 1.4426950408889634
    offs_n = n_start + tl.arange(0, BLOCK_N)
    offs_n64 = offs_n.to(tl.int64)
    if MASKED:
        n_ok = offs_n < Lk
    if USE_TMA:
        # Hopper TMA boxes [1, 1, BLOCK_N, BLOCK_D] of K and V: keys past Lk and head-dim columns
        # past D arrive as zeros, the values the masked pointer loads below give them. Which path
        # fetches the block, not what is computed (the same PTX float ops, tests/test_kernels_sm90_codegen).
        k = k_base.load([kv_b, h_kv, n_start, 0]).reshape(BLOCK_N, BLOCK_D).T
        v = v_base.load([kv_b, h_kv, n_start, 0]).reshape(BLOCK_N, BLOCK_DV)
    elif MASKED:
        k = tl.load(k_base + offs_n64[None, :] * stride_kn, mask=d_ok[:, None] & n_ok[None, :], other=0.0)
        v = tl.load(v_base + offs_n64[:, None] * stride_vn, mask=n_ok[:, None] & dv_ok[None, :], other=0.0)
    else:
        k = tl.load(k_base + offs_n64[None, :] * stride_kn, mask=d_ok[:, None], other=0.0)
        v = tl.load(v_base + offs_n64[:, None] * stride_vn, mask=dv_ok[None, :], other=0.0)
    # Written fused multiply-adds (contraction stays off, so the compiler never decides one per
    # variant): the scale waits for exp2's argument, p = 2^fma(s, c, b - m) with b the float
    # mask's term (0 without one), rounded once; a zero float mask gives the unmasked bits.
    scores = tl.dot(q, k, input_precision=INPUT_PRECISION, out_dtype=tl.float32)
    bias = 0.0
    if MASKED:
        visible = row_ok[:, None] & n_ok[None, :]
        if MASK_KIND != 0:
            mvals = tl.load(mask_base + offs_n64[None, :] * stride_mn, mask=visible, other=0)
            if MASK_KIND == 1:
                visible = visible & (mvals != 0)
            else:
                bias = mvals.to(tl.float32) * LOG2E
        if IS_CAUSAL:
            visible = visible & (offs_n[None, :] <= offs_m[:, None])
        scores = tl.where(visible, scores, float("-inf"))
    if MASK_KIND == 2:
        blk_m = tl.max(scores * qk_scale_log2 + bias, 1)  # b = 0: round(s * c), the max below
    else:
        # x -> round(x * c) never decreases for c > 0, so this is the max of the scaled scores,
        # bit for bit, at one multiply per row (-inf, a row that sees nothing, stays -inf).
        blk_m = tl.max(scores, 1) * qk_scale_log2
    new_m = tl.maximum(part_m, blk_m)
    if MASKED:
        # Subtract 0 instead of -inf so a row that sees nothing yet gets 0s, not NaNs.
        sub_m = tl.where(new_m == float("-inf"), 0.0, new_m)
    else:
        sub_m = new_m  # finite: the block's scores are
    alpha = tl.exp2(part_m - sub_m)
    # A hidden key's -inf gives fma(-inf, c, b - m) = -inf, p = 0.
    p = tl.exp2(tl.fma(scores, qk_scale_log2, bias - sub_m[:, None]))
    # The block's row sums by the MMA unit: p (as rounded for the PV product, so numerator and
    # denominator weigh the same p) times a ones matrix, each of its 16 columns one row sum whose
    # order the MMA instruction fixes (tl.sum's tree would follow the register layout, which
    # Triton picks per specialization); max over identical columns is exact.
    p_mma = p.to(v.dtype)
    ones = tl.full((BLOCK_N, ROW_SUM_COLUMNS), 1.0, v.dtype)
    new_l = tl.fma(part_l, alpha, tl.max(tl.dot(p_mma, ones, input_precision=INPUT_PRECISION, out_dtype=tl.float32), 1))
    new_a = tl.dot(
        p_mma, v, part_a * alpha[:, None],
        input_precision=INPUT_PRECISION, out_dtype=tl.float32,
    )
    if MASKED:
        # A block the row cannot see leaves its state untouched, bit for bit: so a longer
        # cache, a causal tail or another row's reach changes nothing.
        sees_block = blk_m > float("-inf")
        new_m = tl.where(sees_block, new_m, part_m)
        new_l = tl.where(sees_block, new_l, part_l)
        new_a = tl.where(sees_block[:, None], new_a, part_a)
    return new_m, new_l, new_a


@triton.jit
def _fixed_split_attention_kernel(
    Q, K, V, MASK, OUT, LSE, WORK_M, WORK_L, WORK_A, ARRIVALS, KV_ROWS,
    Lq, Lk, D, DV, HQ, KV_GROUP, N_SPLITS, KV_SLOTS,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_mb, stride_mh, stride_mm, stride_mn,
    stride_ob, stride_oh, stride_om, stride_od,
    qk_scale_log2,
    MODE: tl.constexpr,
    IS_CAUSAL: tl.constexpr,
    MASK_KIND: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    KV_SPLIT: tl.constexpr,
    HEADS_PER_PROG: tl.constexpr,
    MERGE_IN_LAST: tl.constexpr = False,
    HAS_KV_ROWS: tl.constexpr = False,
    USE_TMA: tl.constexpr = False,
    Q_BY_TMA: tl.constexpr = False,
):
    # One flat grid axis (the batch*heads product can pass CUDA's 65535 limit on axis 1); the
    # query blocks of one head group are neighbours so they share its K/V in L2.
    # GQA packing (HEADS_PER_PROG = KV_GROUP > 1): a program owns the query heads that share one
    # K/V head, and its tile row r holds query position r // HEADS_PER_PROG of head
    # h_first + r % HEADS_PER_PROG. A row's arithmetic never depends on which tile row it is or
    # on its tile companions (per-element MMA, exact max, row sums by MMA, hidden keys are
    # no-ops), so packing changes which program computes a row, not its bits. Unpacked
    # (HEADS_PER_PROG = 1), a program owns one head and its rows are query positions.
    qk_scale_log2 = float_arg(qk_scale_log2)
    rows = Lq * HEADS_PER_PROG
    q_blocks = tl.cdiv(rows, BLOCK_M)
    pid_m = tl.program_id(0) % q_blocks
    pid_bg = (tl.program_id(0) // q_blocks).to(tl.int64)  # (batch, head group)
    pid_split = tl.program_id(1)  # SPLIT: the KV split this program owns; otherwise 0
    groups = HQ // HEADS_PER_PROG
    b = pid_bg // groups
    h_first = (pid_bg % groups) * HEADS_PER_PROG
    h_kv = h_first // KV_GROUP  # GQA: query heads share a KV head; K/V are never repeated

    r_start = pid_m * BLOCK_M
    offs_r = r_start + tl.arange(0, BLOCK_M)
    if HEADS_PER_PROG > 1:
        offs_m = offs_r // HEADS_PER_PROG  # each row's query position
        row_head = h_first + (offs_r % HEADS_PER_PROG).to(tl.int64)  # each row's query head
        head_2d = row_head[:, None]
        q_start = r_start // HEADS_PER_PROG  # the tile's first (smallest) query position
        q_stop = (r_start + BLOCK_M - 1) // HEADS_PER_PROG + 1  # one past its last
    else:
        offs_m = offs_r
        row_head = h_first
        head_2d = h_first
        q_start = r_start
        q_stop = r_start + BLOCK_M
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_r < rows
    d_ok = offs_d < D
    dv_ok = offs_dv < DV
    # int64 offsets: batch/head strides can exceed 2**31 elements on large caches.
    offs_m64 = offs_m.to(tl.int64)
    offs_d64 = offs_d.to(tl.int64)
    offs_dv64 = offs_dv.to(tl.int64)

    # Keys any row of this block may see; splits and blocks past it are skipped. Skipping never
    # changes bits: a hidden block/split is an exact no-op for a row (see the where()s below).
    kv_end = Lk
    if IS_CAUSAL:  # top-left aligned like torch: row i sees keys j <= i
        kv_end = tl.minimum(Lk, tl.minimum(Lq, q_stop))
    n_live_splits = tl.cdiv(kv_end, KV_SPLIT)
    # Keys [0, full_end) are visible to every row of the tile in whole BLOCK_N blocks.
    full_end = 0
    if MASK_KIND == 0:
        full_end = (Lk // BLOCK_N) * BLOCK_N
        if IS_CAUSAL:  # block [n, n + BLOCK_N) is whole for row q_start iff n + BLOCK_N <= q_start + 1
            full_end = tl.minimum(full_end, ((q_start + 1) // BLOCK_N) * BLOCK_N)

    # Workspace: [B*HQ, N_SPLITS, Lq] for (m, l) and [B*HQ, N_SPLITS, Lq, DV] for a, read as
    # [B*groups, N_SPLITS, rows] (the same size): one slab of tile rows per program group.
    work_row = pid_bg * N_SPLITS * rows + offs_r.to(tl.int64)

    if MODE == 1:
        split_lo = pid_split
        split_hi = pid_split + 1
    else:
        split_lo = 0
        split_hi = n_live_splits

    if MODE != 2:
        if Q_BY_TMA:  # one head's consecutive query rows: a box of the 4-D Q descriptor
            q = Q.load([b.to(tl.int32), h_first.to(tl.int32), r_start, 0]).reshape(BLOCK_M, BLOCK_D)
        else:
            q = tl.load(
                Q + b * stride_qb + head_2d * stride_qh + offs_m64[:, None] * stride_qm + offs_d64[None, :] * stride_qd,
                mask=row_ok[:, None] & d_ok[None, :],
                other=0.0,
            )
        kv_b = b
        if HAS_KV_ROWS:
            # A cache read in place (kv_rows): batch row b's keys are cache slot KV_ROWS[b], torch
            # indexing (negatives wrap). Which memory, not which arithmetic. The range is the
            # caller's to check (the graph pass asserts it once per graph); never read outside.
            kv_b = tl.load(KV_ROWS + b).to(tl.int64)
            kv_b = tl.minimum(tl.maximum(tl.where(kv_b < 0, kv_b + KV_SLOTS, kv_b), 0), KV_SLOTS - 1)
        kv_row, kv_head = kv_b.to(tl.int32), h_kv.to(tl.int32)  # TMA coordinates are 32-bit
        if USE_TMA:  # K and V are descriptors, addressed by (cache row, head, key, column)
            k_base, v_base = K, V
        else:
            k_base = K + kv_b * stride_kb + h_kv * stride_kh + offs_d64[:, None] * stride_kd
            v_base = V + kv_b * stride_vb + h_kv * stride_vh + offs_dv64[None, :] * stride_vd
        mask_base = MASK + b * stride_mb + head_2d * stride_mh + offs_m64[:, None] * stride_mm

    run_m = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    run_l = tl.zeros((BLOCK_M,), dtype=tl.float32)
    run_a = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    for s in range(split_lo, split_hi):
        if MODE == 2:  # MERGE: read the split's partial back (exact: fp32 in, fp32 out)
            part_m, part_l, part_a = _load_split(WORK_M, WORK_L, WORK_A, work_row + s * rows, row_ok, dv_ok, offs_dv64, DV)
        else:  # reduce the split's keys from a zero state, BLOCK_N at a time, ascending
            part_m = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
            part_l = tl.zeros((BLOCK_M,), dtype=tl.float32)
            part_a = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
            n_lo = s * KV_SPLIT
            n_hi = tl.minimum(n_lo + KV_SPLIT, kv_end)
            # Blocks every row of the tile sees whole come first and skip the masking work; the
            # rest (causal diagonal, the tail past Lk, any explicit mask) are masked. Same blocks,
            # same ascending order, and for a whole block the masked step computes the same bits.
            n_mid = tl.maximum(n_lo, tl.minimum(n_hi, full_end))
            for n_start in range(n_lo, n_mid, BLOCK_N):
                part_m, part_l, part_a = _online_softmax_step(
                    q, k_base, v_base, mask_base, n_start, part_m, part_l, part_a,
                    offs_m, row_ok, d_ok, dv_ok, Lk, stride_kn, stride_vn, stride_mn, qk_scale_log2, kv_row, kv_head,
                    False, IS_CAUSAL, MASK_KIND, INPUT_PRECISION, BLOCK_N, BLOCK_D, BLOCK_DV, USE_TMA,
                )
            for n_start in range(n_mid, n_hi, BLOCK_N):
                part_m, part_l, part_a = _online_softmax_step(
                    q, k_base, v_base, mask_base, n_start, part_m, part_l, part_a,
                    offs_m, row_ok, d_ok, dv_ok, Lk, stride_kn, stride_vn, stride_mn, qk_scale_log2, kv_row, kv_head,
                    True, IS_CAUSAL, MASK_KIND, INPUT_PRECISION, BLOCK_N, BLOCK_D, BLOCK_DV, USE_TMA,
                )
            if MODE == 1:  # SPLIT: hand the partial to the MERGE program
                ws = work_row + s * rows
                tl.store(WORK_M + ws, part_m, mask=row_ok)
                tl.store(WORK_L + ws, part_l, mask=row_ok)
                tl.store(WORK_A + ws[:, None] * DV + offs_dv64[None, :], part_a, mask=row_ok[:, None] & dv_ok[None, :])
        if MODE != 1:  # SEQUENTIAL and MERGE share this merge code, so their bits agree.
            run_m, run_l, run_a = _merge_split(run_m, run_l, run_a, part_m, part_l, part_a)

    out_ptrs = OUT + b * stride_ob + head_2d * stride_oh + offs_m64[:, None] * stride_om + offs_dv64[None, :] * stride_od
    lse_ptrs = LSE + (b * HQ + row_head) * Lq + offs_m64
    if MODE != 1:
        _store_output(run_m, run_l, run_a, out_ptrs, lse_ptrs, row_ok, dv_ok)
    elif MERGE_IN_LAST:
        # Every thread's partial is stored before one thread counts this split in; the count is
        # acq_rel at GPU scope, so the program that brings it to the number of splits sees every
        # other split's stores. It resets the counter for the next launch on the stream and runs
        # the MERGE program's loop: the same loads, merge steps and output in the same order.
        tl.debug_barrier()
        arrival = ARRIVALS + tl.program_id(0)
        if tl.atomic_add(arrival, 1, sem="acq_rel", scope="gpu") == N_SPLITS - 1:
            tl.store(arrival, 0)
            for s in range(0, n_live_splits):
                part_m, part_l, part_a = _load_split(WORK_M, WORK_L, WORK_A, work_row + s * rows, row_ok, dv_ok, offs_dv64, DV)
                run_m, run_l, run_a = _merge_split(run_m, run_l, run_a, part_m, part_l, part_a)
            _store_output(run_m, run_l, run_a, out_ptrs, lse_ptrs, row_ok, dv_ok)


@triton.jit
def _load_split(WORK_M, WORK_L, WORK_A, ws, row_ok, dv_ok, offs_dv64, DV):
    """One split's (m, l, a) partial, read back exactly (fp32 in, fp32 out). Through L2 (``.cg``):
    other SMs wrote it, and an SM's L1 does not see their stores."""
    part_m = tl.load(WORK_M + ws, mask=row_ok, other=float("-inf"), cache_modifier=".cg")
    part_l = tl.load(WORK_L + ws, mask=row_ok, other=0.0, cache_modifier=".cg")
    part_a = tl.load(
        WORK_A + ws[:, None] * DV + offs_dv64[None, :], mask=row_ok[:, None] & dv_ok[None, :], other=0.0, cache_modifier=".cg"
    )
    return part_m, part_l, part_a


@triton.jit
def _merge_split(run_m, run_l, run_a, part_m, part_l, part_a):
    """Fold the next split's partial into the running state (ascending split order), the running
    sums as written fmas: rounded once, and no compiler contraction (off in this kernel) decides
    one per variant."""
    sees_split = part_m > float("-inf")
    new_run_m = tl.maximum(run_m, part_m)
    sub_run_m = tl.where(new_run_m == float("-inf"), 0.0, new_run_m)
    scale_run = tl.exp2(run_m - sub_run_m)
    scale_part = tl.exp2(part_m - sub_run_m)
    new_run_l = tl.fma(run_l, scale_run, part_l * scale_part)
    new_run_a = tl.fma(run_a, scale_run[:, None], part_a * scale_part[:, None])
    run_m = tl.where(sees_split, new_run_m, run_m)
    run_l = tl.where(sees_split, new_run_l, run_l)
    run_a = tl.where(sees_split[:, None], new_run_a, run_a)
    return run_m, run_l, run_a


@triton.jit
def _store_output(run_m, run_l, run_a, out_ptrs, lse_ptrs, row_ok, dv_ok):
    """Normalize and store the rows and their log-sum-exp. A row that sees no key gets 0 (torch's
    SDPA does the same) and lse = -inf."""
    LN2: tl.constexpr = 0.6931471805599453
    sees_any = run_l > 0.0
    out = run_a / tl.where(sees_any, run_l, 1.0)[:, None]
    lse = tl.where(sees_any, (run_m + tl.log2(tl.where(sees_any, run_l, 1.0))) * LN2, float("-inf"))
    tl.store(out_ptrs, out.to(out_ptrs.dtype.element_ty), mask=row_ok[:, None] & dv_ok[None, :])
    tl.store(lse_ptrs, lse, mask=row_ok)


def _heads(x: torch.Tensor) -> int:
    """A [..., heads, L, D] tensor's head count; a rank-2 [L, D] one has one head, as torch reads it."""
    return x.shape[-3] if x.dim() >= 3 else 1


def output_heads(hq, hk, hv, enable_gqa: bool):
    """The output's head count. With enable_gqa, the query's (the key and value head counts each
    divide it). Otherwise q's, k's and v's head counts broadcast, as torch's SDPA broadcasts them:
    one K/V head serves every query head (multi-query attention), one query head meets every K/V head."""
    if enable_gqa or hq != 1:
        return hq
    return hk if hk != 1 else hv


def _check(q, k, v, attn_mask, enable_gqa, kv_rows=None):
    if kv_rows is not None:
        if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or k.shape[0] != v.shape[0]:
            raise RuntimeError(
                "fixed_split_attention: kv_rows wants q [B, Hq, Lq, D] and the caches k [S, Hkv, Lk, D], v [S, Hkv, Lk, Dv], got "
                f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
            )
        if kv_rows.dim() != 1 or kv_rows.shape[0] != q.shape[0] or kv_rows.dtype not in (torch.int32, torch.int64) or kv_rows.device != q.device:
            raise RuntimeError(
                f"fixed_split_attention: kv_rows must be one int32 / int64 cache slot per batch row ({q.shape[0]}) on {q.device}, "
                f"got {kv_rows.dtype} {tuple(kv_rows.shape)} on {kv_rows.device}"
            )
    if not (q.dtype == k.dtype == v.dtype):
        raise RuntimeError(
            "fixed_split_attention: expected query, key and value to have the same dtype, got "
            f"{q.dtype}, {k.dtype} and {v.dtype}"
        )
    if q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"fixed_split_attention: dtype {q.dtype} is not supported "
            f"({', '.join(str(d) for d in SUPPORTED_DTYPES)})"
        )
    if not (q.device == k.device == v.device) or (attn_mask is not None and attn_mask.device != q.device):
        raise RuntimeError("fixed_split_attention: inputs are on different devices")
    if min(q.dim(), k.dim(), v.dim()) < 2:
        raise RuntimeError(
            "fixed_split_attention: expected q, k, v of rank >= 2 ([..., heads, L, D] or [L, D]), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape[-1] != q.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise RuntimeError(
            f"fixed_split_attention: incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    try:
        output_lead(q, k, v, kv_rows)
    except RuntimeError as err:
        raise RuntimeError(
            f"fixed_split_attention: the batch dims of q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} do not broadcast"
        ) from err
    hq, hk, hv = _heads(q), _heads(k), _heads(v)
    if enable_gqa:
        if hk == 0 or hv == 0 or hq % hk != 0 or hq % hv != 0:
            raise RuntimeError(
                f"fixed_split_attention: the number of key ({hk}) and value ({hv}) heads must divide the number of query heads ({hq})"
            )
    elif any(h not in (1, output_heads(hq, hk, hv, False)) for h in (hq, hk, hv)):
        raise RuntimeError(
            f"fixed_split_attention: {hq} query heads, {hk} key heads and {hv} value heads do not broadcast "
            "(each must be 1 or the same count); pass enable_gqa=True for GQA"
        )
    limit = attention_table.ATTENTION_MAX_HEAD_DIM
    if q.shape[-1] > limit or v.shape[-1] > limit:
        raise NotImplementedError(
            f"fixed_split_attention: head dims up to {limit} are supported, got {q.shape[-1]} (q/k) and {v.shape[-1]} (v)"
        )
    if attn_mask is not None and attn_mask.dtype != torch.bool and not attn_mask.dtype.is_floating_point:
        raise TypeError(f"fixed_split_attention: attn_mask must be bool or floating point, got {attn_mask.dtype}")


def _to_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """K or V with ``heads`` heads: a stride-0 view of a single head, else each head repeated
    for its group (GQA where K and V have head counts of their own: a copy)."""
    if x.shape[-3] == heads:
        return x
    if x.shape[-3] == 1:
        return x.expand(*x.shape[:-3], heads, *x.shape[-2:])
    return x.repeat_interleave(heads // x.shape[-3], dim=-3)


def fixed_split_attention_with_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    path: str | None = None,
    pack_gqa: bool | None = None,
    kv_rows: torch.Tensor | None = None,
    tma: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fixed_split_attention`` plus the fp32 log-sum-exp (natural log) of each query row's
    scaled, masked scores, shaped like the output without its last dim ([..., Hq, Lq]); -inf
    for a row that sees no key. For a backward pass. The row sums add p as rounded to a 16-bit
    input's dtype (as the output's numerator does): the lse of 16-bit inputs is then within eps/2
    of the exact one, not fp32's."""
    _check(q, k, v, attn_mask, enable_gqa, kv_rows)
    if path not in (None, "sequential", "split"):
        raise ValueError(f"fixed_split_attention: path must be None, 'sequential' or 'split', got {path!r}")
    dtype = q.dtype
    lead, heads, squeeze = output_layout(q, k, v, enable_gqa, kv_rows)
    if kv_rows is None:  # one rank for all three, >= 3: size-1 dims in front broadcast, as in torch
        rank = max(q.dim(), k.dim(), v.dim(), 3)
        q, k, v = (x if x.dim() == rank else x[(None,) * (rank - x.dim())] for x in (q, k, v))
    lq, d = q.shape[-2:]
    lk, dv = k.shape[-2], v.shape[-1]
    if k.shape[-3] != v.shape[-3]:  # the kernel reads one K/V head per group of query heads
        k, v = _to_heads(k, heads), _to_heads(v, heads)
    hkv = k.shape[-3]
    out_shape = (*lead, heads, lq, dv)
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    if scale <= 0.0:
        # The kernel scales in exp2's argument and takes a key block's max before scaling: right
        # for scale > 0 only. A negative scale is |scale| on -q (rounding is symmetric in sign, so
        # the scaled scores are the same numbers); a zero scale makes every score 0, q * 0 as in
        # torch's math path. A host-side choice: the scale > 0 kernel is untouched.
        q, scale = (-q, -scale) if scale < 0.0 else (q * 0.0, 1.0)

    device = q.device
    interpreted = uses_interpreter(device)
    compute_dtype = interpreter_dtype(dtype) if interpreted else dtype
    out = empty_output(lead, heads, lq, dv, compute_dtype, device)
    lse = torch.empty(out_shape[:-1], dtype=torch.float32, device=device)
    if out.numel() == 0 or lk == 0:
        # Nothing to compute, or no key to see: torch gives zeros for rows without a key.
        out, lse = out.zero_().to(dtype), lse.fill_(float("-inf"))
        return (out.select(0, 0), lse.select(0, 0)) if squeeze else (out, lse)

    def to4d(x: torch.Tensor, heads: int, length: int) -> torch.Tensor:
        # Broadcast leading dims and a single query head (free: stride 0), then fold the leading
        # dims into one batch dim (a view when the strides allow, else a copy; either way the
        # kernel takes any strides).
        x = x.to(compute_dtype).expand(*lead, heads, length, x.shape[-1])
        return _batch_folded(x)

    if kv_rows is None:
        q4, k4, v4 = to4d(q, heads, lq), to4d(k, hkv, lk), to4d(v, hkv, lk)
    else:  # the whole cache, each batch row reading its slot kv_rows[b]
        q4, k4, v4 = to4d(q, heads, lq), k.to(compute_dtype), v.to(compute_dtype)
    out4 = _batch_folded(out, view=True)
    mask4 = None
    mask_is_bool = attn_mask is not None and attn_mask.dtype == torch.bool
    if mask_is_bool:
        # the same 0 / 1 bytes behind a plain integer pointer everywhere; Inductor lowers no
        # bool -> uint8 view, so a graph it launches converts the (unexpanded) mask instead
        attn_mask = attn_mask.to(torch.uint8) if tracing_for_inductor() else attn_mask.view(torch.uint8)
    if attn_mask is not None:
        try:
            mask = attn_mask.expand(*lead, heads, lq, lk)
        except RuntimeError as err:
            raise RuntimeError(
                f"fixed_split_attention: attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to "
                f"{(*lead, heads, lq, lk)}"
            ) from err
        if interpreted and not mask_is_bool:
            mask = mask.to(interpreter_dtype(mask.dtype))
        mask4 = _batch_folded(mask)
    _run(q4, k4, v4, mask4, mask_is_bool, out4, _batch_folded(lse, 3, view=True), bool(is_causal), float(scale), path, pack_gqa, kv_rows, tma)
    out = out.to(dtype)
    return (out.select(0, 0), lse.select(0, 0)) if squeeze else (out, lse)


def _batch_folded(x: torch.Tensor, rank: int = 4, view: bool = False) -> torch.Tensor:
    """``x`` with its leading dims folded into one batch dim (``rank`` dims in all): a view where
    the strides allow, else a copy (``view``: always a view, for tensors the kernel writes). One
    leading dim is already folded: ``x`` as it is (what the reshape would return), so a symbolic
    batch reaches the kernel without a size computed from it."""
    if x.dim() == rank:
        return x
    shape = (-1, *x.shape[x.dim() - rank + 1:])
    return x.view(shape) if view else x.reshape(shape)


def output_lead(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_rows: torch.Tensor | None) -> tuple:
    """The output's leading dims: q's, k's and v's broadcast, or q's when k / v are whole caches
    read through kv_rows."""
    return tuple(q.shape[:-3]) if kv_rows is not None else torch.broadcast_shapes(q.shape[:-3], k.shape[:-3], v.shape[:-3])


def output_layout(q, k, v, enable_gqa: bool, kv_rows) -> tuple[tuple, int, bool]:
    """(leading dims, heads, squeeze) of the output: it is ``empty_output(lead, heads, ...)``, and
    with ``squeeze`` (every input [L, D]) that tensor's only head, [Lq, Dv], as torch returns it."""
    return (
        output_lead(q, k, v, kv_rows),
        output_heads(_heads(q), _heads(k), _heads(v), enable_gqa),
        max(q.dim(), k.dim(), v.dim()) == 2,
    )


def empty_output(lead, hq: int, lq: int, dv: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The output [*lead, Hq, Lq, Dv], laid out as [*lead, Lq, Hq, Dv] in memory (torch's flash
    SDPA does the same): a model's ``out.transpose(-3, -2).reshape(..., Lq, Hq * Dv)`` is then a
    view, not a copy kernel. The custom op's fake implementation uses it too, so the compiled
    graph's strides are the real ones."""
    return torch.empty((*lead, lq, hq, dv), dtype=dtype, device=device).transpose(-3, -2)


def fixed_split_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    path: str | None = None,
    pack_gqa: bool | None = None,
    kv_rows: torch.Tensor | None = None,
    tma: bool | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` (no dropout), batch-invariant.

    q [..., Hq, Lq, D], k [..., Hk, Lk, D], v [..., Hv, Lk, Dv] (or [L, D]; leading dims
    broadcast); D, Dv <= 256; fp16, bf16 or fp32. Head counts broadcast as in torch (each 1 or
    the same: a single K/V head serves every query head), or with ``enable_gqa`` Hk and Hv divide
    Hq. Any ``scale``, zero and negative included. ``attn_mask``: bool (True = attend) or
    additive float, broadcastable to [..., H, Lq, Lk]. ``is_causal``: top-left aligned like torch (query i sees
    keys j <= i, also when Lq != Lk); combined with ``attn_mask`` when both are given (torch's
    CPU behaviour). For a KV cache (queries at an offset, or a preallocated cache) pass the mask
    that hides the future / unfilled slots; hidden slots must hold finite values (torch.zeros),
    as with torch, since 0 * nan is nan. A row that sees no key gets zeros, like torch.

    ``kv_rows`` [B] (int): k and v are whole caches [S, Hkv, Lk, D] and batch row b attends to
    cache slot ``kv_rows[b]`` (``k[kv_rows]`` without the copy; negative slots wrap as in torch;
    slots must be in [-S, S), which the caller checks: out-of-range slots read the nearest slot).

    ``path`` forces the sequential or split-parallel execution (tests); ``None`` lets the
    shapes decide. ``pack_gqa`` forces (True) or forbids (False) one program per group of query
    heads sharing a K/V head; ``None`` packs when one tile holds a group's rows
    (``attention_table.attention_packs_gqa``). ``tma`` forces (True) or forbids (False) fetching K / V
    blocks by Hopper TMA descriptors (``None``: ``attention_table.attention_use_tma``, where the layout
    allows). Either way the bits are the same.
    """
    return fixed_split_attention_with_lse(
        q, k, v, attn_mask, is_causal, scale, enable_gqa, path=path, pack_gqa=pack_gqa, kv_rows=kv_rows, tma=tma
    )[0]


def contraction_changes_nothing(attn_mask: torch.Tensor | None) -> bool:
    """Whether this call's kernels hold no product that feeds an add, so a compile that may
    contract a * b + c into one fma (Inductor's, for the kernels it launches) gives the
    instructions of this file's launches, compiled with contraction off. Every such pair is a
    written fma, except a float mask's term: mask * log2(e) feeds the scaled scores' add and
    exp2's argument (tests/test_lowering_attention.py compiles both for sm_90)."""
    return attn_mask is None or attn_mask.dtype == torch.bool


def _splits_hint(lq, lk, n_splits) -> int:
    """How many KV splits to plan the launch for (whether to run them in parallel), never how
    many there are: that follows Lk in the kernel. Traced for Inductor with a symbolic Lk and a
    static Lq, the call is a step against a cache that grows (decode): the graph serves its later,
    longer steps too, so it is planned for more than one split and the choice follows the batch
    x heads alone. Otherwise the sizes' hints (a prefill's Lk grows with its Lq: its programs)."""
    if isinstance(lk, torch.SymInt) and not isinstance(lq, torch.SymInt):
        return max(size_hint(n_splits), 2)
    return size_hint(n_splits)


def _run(q4, k4, v4, mask4, mask_is_bool, out4, lse3, is_causal, scale, path, pack_gqa, kv_rows=None, tma=None):
    nb, hq, lq, d = q4.shape
    hkv, lk, dv = k4.shape[1], k4.shape[2], v4.shape[3]
    device = q4.device
    # Traced for Inductor (lowerings/attention.py): Lq, Lk and the batch may be symbolic. They set
    # no constexpr: the pinned tile and the split length follow the head dims and the dtype, the
    # number of splits is a kernel argument and a grid size. The choices below that read their
    # hints (packing, split or sequential, pipeline depth) set parallelism only: the same bits by
    # the contract at the top of this file. No persistent counters, no TMA descriptors.
    traced = tracing_for_inductor()
    cfg = attention_table.attention_config(max(d, dv), q4.dtype, interpreted=uses_interpreter(device))
    assert cfg.kv_split % cfg.block_n == 0, "a KV split must be whole key blocks"
    if pack_gqa is None:
        pack_gqa = attention_table.attention_packs_gqa(size_hint(lq), hq // hkv, cfg)
    heads_per_prog = hq // hkv if pack_gqa else 1
    q_blocks = (lq * heads_per_prog + cfg.block_m - 1) // cfg.block_m
    programs = q_blocks * nb * (hq // heads_per_prog)
    n_splits = (lk + cfg.kv_split - 1) // cfg.kv_split
    if path is None:
        split = attention_table.attention_use_split(size_hint(programs), _splits_hint(lq, lk, n_splits), device)
    else:
        split = path == "split"

    if mask4 is None:
        mask_kind, mask_arg, mask_strides = _NO_MASK, q4, (0, 0, 0, 0)
    else:
        mask_kind = _BOOL_MASK if mask_is_bool else _FLOAT_MASK
        mask_arg, mask_strides = mask4, mask4.stride()
    # tl.dot needs every dim >= 16; padded columns are masked to 0 and change no sum.
    block_d, block_dv = max(16, triton.next_power_of_2(d)), max(16, triton.next_power_of_2(dv))
    if tma is None:
        tma = not traced and attention_table.attention_use_tma(q4.dtype, device)
    k_desc, v_desc = (tma_descriptor(k4, [1, 1, cfg.block_n, block_d]), tma_descriptor(v4, [1, 1, cfg.block_n, block_dv])) if tma else (None, None)
    kv_by_tma = k_desc is not None and v_desc is not None
    k_arg, v_arg = (k_desc, v_desc) if kv_by_tma else (k4, v4)
    # Q's tile by TMA too (attention_table.ATTENTION_Q_BY_TMA) when its rows are one head's consecutive
    # positions (not GQA-packed): rows past Lq arrive as zeros, as the masked load gives them.
    q_desc = tma_descriptor(q4, [1, 1, cfg.block_m, block_d]) if kv_by_tma and attention_table.ATTENTION_Q_BY_TMA and heads_per_prog == 1 else None
    q_arg = q4 if q_desc is None else q_desc
    common = dict(
        IS_CAUSAL=is_causal,
        MASK_KIND=mask_kind,
        INPUT_PRECISION=_input_precision(q4.dtype),
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        BLOCK_D=block_d,
        BLOCK_DV=block_dv,
        KV_SPLIT=cfg.kv_split,
        HEADS_PER_PROG=heads_per_prog,
        HAS_KV_ROWS=kv_rows is not None,
        USE_TMA=kv_by_tma,
        Q_BY_TMA=q_desc is not None,
        # every constexpr passed, defaults included: Inductor's launcher for a kernel it launches
        # itself takes exactly the arguments the trace saw
        MERGE_IN_LAST=False,
        num_warps=cfg.num_warps,
        num_stages=attention_table.attention_stages(cfg, split, size_hint(programs), device),
    )
    if not traced:
        # No FMA contraction: the compiler may not fuse a*b+c differently in the SEQUENTIAL and
        # MERGE kernels (or in two specializations of one), so the written arithmetic is the bits.
        # Inductor compiles the kernels it launches with contraction allowed: it launches only the
        # calls whose kernels hold no a*b+c to fuse (contraction_changes_nothing).
        common["enable_fp_fusion"] = False

    def go(grid, mode, work_m, work_l, work_a, arrivals=None, **options):
        launch(
            _fixed_split_attention_kernel, grid, device,
            q_arg, k_arg, v_arg, mask_arg, out4, lse3, work_m, work_l, work_a,
            lse3 if arrivals is None else arrivals,  # unused unless MERGE_IN_LAST
            lse3 if kv_rows is None else kv_rows,  # unused unless HAS_KV_ROWS
            # KV_SLOTS is read only with kv_rows (a cache's slot count); otherwise it would be the
            # batch, and Triton would compile a binary per batch-size class for an unused value.
            lq, lk, d, dv, hq, hq // hkv, n_splits, k4.shape[0] if kv_rows is not None else 0,
            *q4.stride(), *k4.stride(), *v4.stride(), *mask_strides, *out4.stride(),
            scale * math.log2(math.e),
            MODE=mode, **{**common, **options},
        )

    if not split:
        go((programs, 1), _SEQUENTIAL, lse3, lse3, lse3)
        return
    # [B*HQ, N_SPLITS, Lq] and [B*HQ, N_SPLITS, Lq, DV] as the kernel addresses them, allocated flat:
    # a traced tensor with a symbolic dim that may be 1 (N_SPLITS) would be asked whether it is.
    work_m = torch.empty(nb * hq * n_splits * lq, dtype=torch.float32, device=device)
    work_l = torch.empty(nb * hq * n_splits * lq, dtype=torch.float32, device=device)
    work_a = torch.empty(nb * hq * n_splits * lq * dv, dtype=torch.float32, device=device)
    # Traced: the separate MERGE launch (no arrival counters), the bits of the merge in the last
    # split program by construction (the same loads and merge code).
    merge_in_last = attention_table.ATTENTION_MERGE_IN_LAST_PROGRAM and not traced
    arrivals = tile_arrivals(device, programs) if merge_in_last else None
    if arrivals is not None:
        go((programs, n_splits), _SPLIT, work_m, work_l, work_a, arrivals=arrivals, MERGE_IN_LAST=True)
        return
    go((programs, n_splits), _SPLIT, work_m, work_l, work_a)
    go((programs, 1), _MERGE, work_m, work_l, work_a)
