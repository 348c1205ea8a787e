"""invariant_matmul: a Triton matmul whose K-accumulation order depends on K and dtype only.

Order of the arithmetic for one output element C[b, m, n] (the invariance contract):
  total = 0
  for each fixed K chunk c (k_chunk wide, ascending):      # chunks are fixed by K alone
      acc = 0
      for each BLOCK_K step inside c (ascending; steps wholly past K are skipped):
          acc = tl.dot(A_tile, B_tile, acc)               # pinned tile => pinned MMA instruction
      total = total + acc
  out = epilogue(total)                                   # alpha, beta * bias, cast

Nothing in it depends on M, the batch, or the other rows. Two execution modes give the same bits
by construction: FULL (one program walks every chunk) and SPLIT (one program per chunk writes its
``acc`` to an fp32 workspace; a MERGE program adds the partials in ascending chunk order from zero
and applies the same epilogue). Small-M calls use SPLIT to fill the GPU (parallelism adapts to the
batch; the arithmetic does not). The MERGE may also run inside SPLIT, in whichever chunk program of
a tile finishes last (a per-tile arrival counter says which): same loads, same order, one launch.
Neither how tiles are fetched (Hopper TMA descriptors or pointer loads) nor how many 64-row
warpgroup slabs one program computes (matmul_table: short or tall launch shape) changes the
instructions an element goes through.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import matmul_table
from .matmul_table import COMPLEX_DTYPES, SUPPORTED_DTYPES
from ._arrivals import tile_arrivals
from ._launch import float_arg, interpreter_dtype, launch, size_hint, sizes_follow_the_batch, tma_descriptor, tracing_for_inductor, uses_interpreter

_FULL, _SPLIT, _MERGE = 0, 1, 2



@triton.jit
def _chunk_step(a, b, acc, total, step, step_hi, STEPS: tl.constexpr, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """One K step of the flat loop (so the software pipeline never restarts at a chunk boundary):
    the accumulator restarts from zero at every chunk boundary and the chunk is added to the
    running total, exactly the order the MERGE program follows."""
    acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
    if (step + 1) % STEPS == 0 or step + 1 == step_hi:
        total = total + acc
        acc = tl.zeros(acc.shape, dtype=ACC_DTYPE)
    return acc, total


@triton.jit
def _pointer_k_steps(a_ptrs, b_ptrs, stride_ak, stride_bk, K, acc, total, step_lo, step_hi, STEPS: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """K steps step_lo..step_hi through pointer loads (``a_ptrs`` / ``b_ptrs`` at step_lo's tiles;
    K past K loads zeros): the FULL / SPLIT loop, and the grouped matmul's, so a grouped row is an
    invariant_matmul row. Returns the running total."""
    a_step = tl.full([], BLOCK_K, tl.int64) * stride_ak
    b_step = tl.full([], BLOCK_K, tl.int64) * stride_bk
    for step in range(step_lo, step_hi):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_left = K - step * BLOCK_K
            a = tl.load(a_ptrs, mask=tl.arange(0, BLOCK_K)[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=tl.arange(0, BLOCK_K)[:, None] < k_left, other=0.0)
        acc, total = _chunk_step(a, b, acc, total, step, step_hi, STEPS, INPUT_PRECISION, ACC_DTYPE)
        a_ptrs += a_step
        b_ptrs += b_step
    return total


@triton.jit
def _tma_tiles(A, B, pid_m, pid_n, step, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, B_KMAJOR: tl.constexpr):
    """The A and B tiles of one K step through TMA descriptors (FULL and SPLIT alike)."""
    a = A.load([pid_m * BLOCK_M, step * BLOCK_K])
    if B_KMAJOR:  # B^T is stored [N, K] (a Linear weight): load its box, transpose
        b = B.load([pid_n * BLOCK_N, step * BLOCK_K]).T
    else:
        b = B.load([step * BLOCK_K, pid_n * BLOCK_N])
    return a, b


@triton.jit
def _merge_partials(WORK, work_offs, work_stride, mask_mn, K, K_CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """The MERGE order: the chunk partials added in ascending chunk order, from zero. Loads go to
    L2 (``.cg``): the partials were written by other SMs, whose stores an SM's L1 does not see."""
    total = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for c in range(0, tl.cdiv(K, K_CHUNK)):
        total = total + tl.load(WORK + c * work_stride + work_offs, mask=mask_mn, other=0.0, cache_modifier=".cg")
    return total


@triton.jit
def _epilogue(total, c_ptrs, bias_ptrs, mask_mn, alpha, beta, HAS_BIAS: tl.constexpr, SCALE_ALPHA: tl.constexpr, SCALE_BETA: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """alpha * total + beta * bias, cast and stored: the one epilogue of FULL and MERGE."""
    result = total
    if SCALE_ALPHA:
        result = result * float_arg(alpha)
    if HAS_BIAS:
        bias = tl.load(bias_ptrs, mask=mask_mn, other=0.0).to(ACC_DTYPE)
        if SCALE_BETA:
            bias = bias * float_arg(beta)
        result = result + bias
    tl.store(c_ptrs, result.to(c_ptrs.dtype.element_ty), mask=mask_mn)


@triton.jit
def _tile_coords(tile, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Tile order: GROUP_M row tiles share each column tile while it is in L2. Which program
    computes a tile never changes how the tile is computed."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    group = tile // (GROUP_M * tiles_n)
    first_m = group * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    return first_m + (tile % (GROUP_M * tiles_n)) % group_rows, (tile % (GROUP_M * tiles_n)) // group_rows


@sizes_follow_the_batch("M")
@triton.jit
def _invariant_matmul_kernel(
    A, B, C, BIAS, WORK, ARRIVALS,
    M, N, K,
    stride_ab, stride_am, stride_ak,
    stride_bb, stride_bk, stride_bn,
    stride_cb, stride_cm, stride_cn,
    stride_biasb, stride_biasm, stride_biasn,
    alpha, beta,
    MODE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SCALE_ALPHA: tl.constexpr,
    SCALE_BETA: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    K_CHUNK: tl.constexpr,
    EVEN_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    USE_TMA: tl.constexpr = False,
    B_KMAJOR: tl.constexpr = False,
    MERGE_IN_LAST: tl.constexpr = False,
):
    pid_tile = tl.program_id(0)
    pid_batch = tl.program_id(1).to(tl.int64)
    pid_chunk = tl.program_id(2)  # SPLIT: the K chunk this program owns; otherwise 0
    pid_m, pid_n = _tile_coords(pid_tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    mask_mn = mask_m[:, None] & mask_n[None, :]
    # int64 offsets: batch, row and column strides can exceed 2**31 on huge tensors.
    offs_m64 = offs_m.to(tl.int64)
    offs_n64 = offs_n.to(tl.int64)
    work_offs = (pid_batch * M + offs_m64[:, None]) * N + offs_n64[None, :]
    work_stride = tl.num_programs(1).to(tl.int64) * M * N  # one [batch, M, N] slab per chunk
    STEPS: tl.constexpr = K_CHUNK // BLOCK_K  # dot steps per K chunk
    n_steps = tl.cdiv(K, BLOCK_K)

    # FULL and MERGE (launched alone or run by the last chunk program) end in one epilogue, so
    # their bits agree.
    c_ptrs = C + pid_batch * stride_cb + offs_m64[:, None] * stride_cm + offs_n64[None, :] * stride_cn
    bias_ptrs = BIAS + pid_batch * stride_biasb + offs_m64[:, None] * stride_biasm + offs_n64[None, :] * stride_biasn
    total = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    if MODE == 2:  # MERGE: add the chunk partials in ascending order, from zero.
        total = _merge_partials(WORK, work_offs, work_stride, mask_mn, K, K_CHUNK, BLOCK_M, BLOCK_N, ACC_DTYPE)
        _epilogue(total, c_ptrs, bias_ptrs, mask_mn, alpha, beta, HAS_BIAS, SCALE_ALPHA, SCALE_BETA, ACC_DTYPE)
    else:
        if MODE == 1:
            step_lo = pid_chunk * STEPS
            step_hi = tl.minimum(step_lo + STEPS, n_steps)
        else:
            step_lo = 0
            step_hi = n_steps
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
        if USE_TMA:
            # Hopper TMA: A and B are 2-D tensor descriptors (one batch). A box past an edge is
            # filled with zeros: rows / columns past M / N are computed and dropped, K past K adds
            # exact zero products, as the masked loads below do. Same tiles, same tl.dot: the same
            # MMA instructions in the same order (checked on the PTX, tests/test_kernels_sm90_codegen).
            for step in range(step_lo, step_hi):
                a, b = _tma_tiles(A, B, pid_m, pid_n, step, BLOCK_M, BLOCK_N, BLOCK_K, B_KMAJOR)
                acc, total = _chunk_step(a, b, acc, total, step, step_hi, STEPS, INPUT_PRECISION, ACC_DTYPE)
        else:
            # Rows / columns past the edge load a valid row (index wrapped) instead of a masked
            # one: each output element only ever reads its own row of A and column of B, so the
            # extra rows are computed and dropped, and the loads need no M / N masks.
            rows = (offs_m % M).to(tl.int64)
            cols = (offs_n % N).to(tl.int64)
            offs_k = step_lo * BLOCK_K + tl.arange(0, BLOCK_K)
            a_ptrs = A + pid_batch * stride_ab + rows[:, None] * stride_am + offs_k.to(tl.int64)[None, :] * stride_ak
            b_ptrs = B + pid_batch * stride_bb + offs_k.to(tl.int64)[:, None] * stride_bk + cols[None, :] * stride_bn
            total = _pointer_k_steps(a_ptrs, b_ptrs, stride_ak, stride_bk, K, acc, total, step_lo, step_hi, STEPS, BLOCK_K, EVEN_K, INPUT_PRECISION, ACC_DTYPE)
        if MODE == 1:
            tl.store(WORK + pid_chunk * work_stride + work_offs, total, mask=mask_mn)
            if MERGE_IN_LAST:
                # Every thread's partial is stored before one thread counts this chunk in; the
                # count is acq_rel at GPU scope, so the program that brings it to the number of
                # chunks sees every other chunk's stores. It resets the counter for the next launch
                # on the stream (launches on one stream do not overlap) and runs the MERGE.
                tl.debug_barrier()
                arrival = ARRIVALS + pid_batch * tl.num_programs(0) + pid_tile
                if tl.atomic_add(arrival, 1, sem="acq_rel", scope="gpu") == tl.cdiv(K, K_CHUNK) - 1:
                    tl.store(arrival, 0)
                    total = _merge_partials(WORK, work_offs, work_stride, mask_mn, K, K_CHUNK, BLOCK_M, BLOCK_N, ACC_DTYPE)
                    _epilogue(total, c_ptrs, bias_ptrs, mask_mn, alpha, beta, HAS_BIAS, SCALE_ALPHA, SCALE_BETA, ACC_DTYPE)
        else:
            _epilogue(total, c_ptrs, bias_ptrs, mask_mn, alpha, beta, HAS_BIAS, SCALE_ALPHA, SCALE_BETA, ACC_DTYPE)


def _input_precision(dtype: torch.dtype) -> str:
    # fp32 follows torch's matmul precision setting (a global constant, not a per-call choice):
    # "highest" keeps full fp32 products, "high"/"medium" allow TF32 like cuBLAS would.
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


def _check(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None) -> None:
    if a.dtype != b.dtype:
        raise RuntimeError(f"invariant_matmul: expected both operands to have the same dtype, got {a.dtype} and {b.dtype}")
    if bias is not None and bias.dtype != a.dtype:
        raise RuntimeError(f"invariant_matmul: expected bias dtype {a.dtype}, got {bias.dtype}")
    if a.dtype not in SUPPORTED_DTYPES + COMPLEX_DTYPES:
        raise TypeError(
            f"invariant_matmul: dtype {a.dtype} is not supported (supported: "
            f"{', '.join(str(d) for d in SUPPORTED_DTYPES + COMPLEX_DTYPES)}); integer matmuls are exact and stay on aten"
        )
    if a.device != b.device or (bias is not None and bias.device != a.device):
        raise RuntimeError("invariant_matmul: operands are on different devices")
    if a.shape[-1] != b.shape[-2] or a.shape[:-2] != b.shape[:-2]:
        raise RuntimeError(f"invariant_matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be multiplied")


def invariant_matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None = None,
    beta: float = 1.0,
    alpha: float = 1.0,
    split_k: bool | None = None,
    tma: bool | None = None,
) -> torch.Tensor:
    """``alpha * (a @ b) + beta * bias`` for 2-D ([M, K] @ [K, N]) or 3-D batched operands.

    ``bias`` broadcasts to the output like aten.addmm / aten.baddbmm's ``self``; ``beta == 0``
    ignores it (aten semantics). ``split_k`` forces (True) or forbids (False) the split-K mode;
    ``None`` lets the shape decide. ``tma`` likewise forces or forbids fetching tiles by TMA
    descriptors (``None``: where the hardware and layout allow). Either way the bits are the same.
    """
    _check(a, b, bias)
    if a.is_complex():
        return _complex_matmul(a, b, bias, beta, alpha, split_k, tma)
    batched = a.dim() == 3
    a3 = a if batched else a.unsqueeze(0)
    b3 = b if batched else b.unsqueeze(0)
    nb, m, k = a3.shape
    n = b3.shape[-1]
    out_shape = (nb, m, n) if batched else (m, n)
    if beta == 0:
        bias = None

    device = a.device
    interpreted = uses_interpreter(device)
    compute_dtype = interpreter_dtype(a.dtype) if interpreted else a.dtype
    if compute_dtype != a.dtype:
        a3, b3 = a3.to(compute_dtype), b3.to(compute_dtype)
        bias = None if bias is None else bias.to(compute_dtype)
    out3 = torch.empty((nb, m, n), dtype=compute_dtype, device=device)

    if out3.numel() > 0:
        bias3 = None
        if bias is not None:
            bias3 = bias.expand(out_shape)
            bias3 = bias3 if batched else bias3.unsqueeze(0)
        _run(a3, b3, out3, bias3, float(alpha), float(beta), split_k, tma)

    out = out3 if batched else out3.squeeze(0)
    return out.to(a.dtype) if compute_dtype != a.dtype else out


def fixed_chunk_partials(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The partials of ``a @ b`` ([M, K] @ [K, N]) per fixed K chunk, each from zero, unrounded:
    ``[K / k_chunk, M, N]`` in the accumulator dtype (what split-K's SPLIT programs write).
    ``merge_fixed_chunk_partials`` of them is ``invariant_matmul(a, b)`` bit for bit; so are the
    partials of K's slices, concatenated in K order, where each slice is a whole number of chunks
    (a row-parallel matmul split across ranks)."""
    _check(a, b, None)
    if a.dim() != 2 or a.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"fixed_chunk_partials: 2-D real operands only, got {tuple(a.shape)} {a.dtype}")
    (m, k), n = a.shape, b.shape[-1]
    compute_dtype = interpreter_dtype(a.dtype) if uses_interpreter(a.device) else a.dtype
    a3, b3 = a.to(compute_dtype).unsqueeze(0), b.to(compute_dtype).unsqueeze(0)
    plan = matmul_plan(compute_dtype, a.device, 1, m, n, k, split_k=True)
    n_chunks = triton.cdiv(k, plan.k_chunk)
    work = torch.empty((n_chunks, 1, m, n), dtype=_acc_dtype(compute_dtype), device=a.device)
    if work.numel():
        launcher = _launcher(a3, b3, work[0], None, 1.0, 1.0, MatmulPlan(plan.cfg, plan.k_chunk, True), tma=False)
        launcher(_SPLIT, work, n_chunks)
    return work.squeeze(1)


def merge_fixed_chunk_partials(partials: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """``partials`` ([n_chunks, M, N], from ``fixed_chunk_partials``, of a K of ``k``) added in
    ascending chunk order from zero and rounded once to ``dtype``: the MERGE program's order."""
    n_chunks, m, n = partials.shape
    compute_dtype = interpreter_dtype(dtype) if uses_interpreter(partials.device) else dtype
    plan = matmul_plan(compute_dtype, partials.device, 1, m, n, k, split_k=True)
    if triton.cdiv(k, plan.k_chunk) != n_chunks:
        raise ValueError(f"merge_fixed_chunk_partials: K = {k} has {triton.cdiv(k, plan.k_chunk)} chunks of {plan.k_chunk}, got {n_chunks} partials")
    out = torch.empty((1, m, n), dtype=compute_dtype, device=partials.device)
    work = partials.to(_acc_dtype(compute_dtype)).contiguous().unsqueeze(1)
    if out.numel():
        # MERGE reads only the partials: A and B are stand-ins of their shapes, no memory
        a3 = out.new_empty(1).expand(1, m, k)
        b3 = out.new_empty(1).expand(1, k, n)
        launcher = _launcher(a3, b3, out, None, 1.0, 1.0, MatmulPlan(plan.cfg, plan.k_chunk, True), tma=False)
        launcher(_MERGE, work, 1)
    return out.squeeze(0).to(dtype)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _complex_matmul(a, b, bias, beta, alpha, split_k, tma):
    """(ar + i ai)(br + i bi) as ONE real matmul, [ar | ai] @ [[br, bi], [-bi, br]] = [re | im]:
    each output element is a sum of 2K real products in the real kernel's fixed order (a function
    of K), never a cuBLAS / MKL complex GEMM whose order follows the shape."""
    a, b = a.resolve_conj(), b.resolve_conj()
    n = b.shape[-1]
    a2 = torch.cat([a.real, a.imag], dim=-1)
    b2 = torch.cat([torch.cat([b.real, b.imag], dim=-1), torch.cat([-b.imag, b.real], dim=-1)], dim=-2)
    bias2 = None
    if bias is not None and beta != 0:
        full = bias.resolve_conj().expand((*a.shape[:-1], n))
        bias2 = torch.cat([full.real, full.imag], dim=-1)
    out2 = invariant_matmul(a2, b2, bias2, beta, alpha, split_k, tma)
    return torch.complex(out2[..., :n], out2[..., n:])


def _tma_operands(a3, b3, cfg):
    """2-D TMA descriptors for A [M, K] and B (as B^T [N, K] when K-major, else [K, N]), or None
    when the layout does not allow them (TMA wants a unit last stride, 16-byte aligned bases and
    row strides). Only how the tiles are fetched changes, never which tiles or in what order."""
    if a3.shape[0] != 1:  # one batch: 2-D descriptors
        return None
    a2, b2 = a3[0], b3[0]
    a_desc = tma_descriptor(a2, [cfg.block_m, cfg.block_k])
    if a_desc is None:
        return None
    bt_desc = tma_descriptor(b2.t(), [cfg.block_n, cfg.block_k])
    if bt_desc is not None:
        return a_desc, bt_desc, True
    b_desc = tma_descriptor(b2, [cfg.block_k, cfg.block_n])
    if b_desc is not None:
        return a_desc, b_desc, False
    return None


class MatmulPlan(NamedTuple):
    """How one matmul launches: the pinned tile (its launch shape follows the output's size
    hint), the fixed K chunk (a function of K) and whether the chunks run in separate programs."""

    cfg: matmul_table.MatmulConfig
    k_chunk: int
    split_k: bool

    def constexprs(self, dtype: torch.dtype, k: int) -> dict:
        """The constexprs that fix an element's arithmetic, as every launcher of this matmul (the
        kernel here, Inductor's template in lowerings/matmul_template.py) passes them."""
        cfg = self.cfg
        return dict(
            ACC_DTYPE=tl.float64 if dtype == torch.float64 else tl.float32,
            INPUT_PRECISION=_input_precision(dtype),
            BLOCK_M=cfg.block_m,
            BLOCK_N=cfg.block_n,
            BLOCK_K=cfg.block_k,
            K_CHUNK=self.k_chunk,
            EVEN_K=k % cfg.block_k == 0,
            GROUP_M=cfg.group_m,
        )


def matmul_plan(dtype: torch.dtype, device: torch.device, nb, m, n, k: int, split_k: bool | None = None) -> MatmulPlan:
    """The launch of a [nb, m, k] @ [nb, k, n] matmul; symbolic sizes count by their hints (the
    choices only set parallelism)."""
    hints = tuple(map(size_hint, (nb, m, n)))
    cfg = matmul_table.matmul_config(dtype, device, interpreted=uses_interpreter(device), output=hints)
    k_chunk = matmul_table.matmul_k_chunk(cfg, k)
    n_chunks = triton.cdiv(k, k_chunk)
    if split_k is None:
        hinted_tiles = triton.cdiv(hints[1], cfg.block_m) * triton.cdiv(hints[2], cfg.block_n)
        split_k = matmul_table.matmul_use_split_k(hinted_tiles * hints[0], n_chunks, device)
    return MatmulPlan(cfg, k_chunk, bool(split_k and n_chunks > 1))


def _run(a3, b3, out3, bias3, alpha, beta, split_k, tma):
    nb, m, k = a3.shape
    device = a3.device
    traced = tracing_for_inductor()  # Inductor launches: no arrival counters, no TMA descriptors
    plan = matmul_plan(a3.dtype, device, nb, m, k=k, n=b3.shape[-1], split_k=split_k)
    if tma is None:
        tma = not traced and matmul_table.matmul_use_tma(a3, device)
    go = _launcher(a3, b3, out3, bias3, alpha, beta, plan, tma)
    if not plan.split_k:
        go(_FULL, out3, 1)
        return
    n_chunks = triton.cdiv(k, plan.k_chunk)
    work = torch.empty((n_chunks, nb, m, b3.shape[-1]), dtype=_acc_dtype(a3.dtype), device=device)
    merge_in_last = matmul_table.MATMUL_MERGE_IN_LAST_PROGRAM and not traced
    arrivals = tile_arrivals(device, go.tiles * nb) if merge_in_last else None
    if arrivals is not None:
        go(_SPLIT, work, n_chunks, arrivals=arrivals, MERGE_IN_LAST=True)
        return
    go(_SPLIT, work, n_chunks)
    go(_MERGE, work, 1)


def _launcher(a3, b3, out3, bias3, alpha, beta, plan: "MatmulPlan", tma: bool):
    """``go(mode, work, chunks)``: one launch of the kernel in ``mode`` over ``out3``'s tiles, with
    ``chunks`` programs per tile (SPLIT: one per fixed K chunk)."""
    nb, m, k = a3.shape
    n = b3.shape[-1]
    device = a3.device
    cfg = plan.cfg
    tiles = triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n)
    has_bias = bias3 is not None
    bias_arg = bias3 if has_bias else out3
    bias_strides = bias3.stride() if has_bias else (0, 0, 0)
    common = dict(
        HAS_BIAS=has_bias,
        SCALE_ALPHA=alpha != 1.0,
        SCALE_BETA=has_bias and beta != 1.0,
        **plan.constexprs(a3.dtype, k),
        # every constexpr passed, defaults included: Inductor's launcher for a kernel it launches
        # itself takes exactly the arguments the trace saw
        USE_TMA=False,
        B_KMAJOR=False,
        MERGE_IN_LAST=False,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    a_arg, b_arg = a3, b3
    descriptors = _tma_operands(a3, b3, cfg) if tma else None
    if descriptors is not None:
        a_arg, b_arg, common["B_KMAJOR"] = descriptors
        common["USE_TMA"] = True

    def go(mode, work, chunks, arrivals=None, **options):
        arrivals = out3 if arrivals is None else arrivals  # unused unless MERGE_IN_LAST
        launch(
            _invariant_matmul_kernel, (tiles, nb, chunks), device,
            a_arg, b_arg, out3, bias_arg, work, arrivals,
            m, n, k,
            *a3.stride(), *b3.stride(), *out3.stride(), *bias_strides,
            alpha, beta,
            MODE=mode, **{**common, **options},
        )

    go.tiles = tiles
    return go
