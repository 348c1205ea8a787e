"""Batch-invariant scans: cumsum, cumprod, logcumsumexp along one dim.

Every launcher views its input as ``[rows, L]`` (the scanned dim last, one row per scan) and
launches one program per row. A program walks its row in blocks of ``SCAN_BLOCK`` elements, in
ascending order. Inside a block, ``tl.associative_scan`` combines the block's elements; the
block's results are then combined with the carried prefix, which is the row's output at the last
element of the block before (the identity for the first block):

    out[j] = combine(out[b * SCAN_BLOCK - 1], scan_of_block_b(j))     for j in block b

SCAN_BLOCK and the warp count are pinned constants, and the row length is a kernel argument Triton
never specializes on, so one compiled binary serves every row length and every number of rows:
element j's arithmetic is fixed by j, the dtype and the op. A row's bits therefore depend on
neither the batch nor its place in it, and ``out[j]`` depends on ``x[:j + 1]`` alone (a prefix
has the same bits in a longer row: a scan in a prefill equals the same positions in a decode).

Accumulation in fp32 for fp16 / bf16 / fp32 (as aten's CPU scans), fp64 for float64; each output
rounded once to the output dtype. Integer and bool scans are exact and stay on aten.

Never: atomics, a row split across programs, a block size or warp count chosen from the shape.

Traced for Inductor (``tracing_for_inductor``, lowerings/scan.py) they run on fake CUDA tensors
whose row count may be symbolic: L must be static (lowerings/scan.py keeps the custom op
otherwise), the rows are only the grid, and nothing reads a value or an address on the host.

Plain launchers (no torch.library registration); ops.py registers the custom ops.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from torch._prims_common import is_contiguous_or_false
from torch.fx.experimental.symbolic_shapes import statically_known_true

from ._launch import dense_aligned, interpreter_dtype, launch, runs_interpreted
from .reduction_table import REDUCTION_POINTER_ALIGN
from .scan_table import SCAN_BLOCK_CUDA, SCAN_STAGES, SCAN_WARPS, SUPPORTED_DTYPES, scan_block  # noqa: F401

OPS = ("cumsum", "cumprod", "logcumsumexp")
_OP_CODE = {name: i for i, name in enumerate(OPS)}

# ---------------------------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------------------------


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _mul(a, b):
    return a * b


@triton.jit
def _log_add_exp(a, b):
    """log(exp(a) + exp(b)) as aten's scans compute it: max + log1p(exp(min - max)); the same
    infinity stays itself, NaN propagates. log1p is written out (Goldberg: log(1 + u) * u /
    ((1 + u) - 1)), accurate for tiny u where log(1 + u) would round it away."""
    hi = tl.where(a > b, a, b)
    lo = tl.where(a > b, b, a)
    u = tl.exp(lo - hi)
    v = 1.0 + u
    log1p = tl.where(v == 1.0, u, tl.log(v) * (u / (v - 1.0)))
    out = tl.where((hi == lo) & (tl.abs(hi) == float("inf")), hi, hi + log1p)
    return tl.where((a != a) | (b != b), a + b, out)


@triton.jit
def _combine(a, b, OP: tl.constexpr):
    if OP == 0:
        return _add(a, b)
    elif OP == 1:
        return _mul(a, b)
    else:
        return _log_add_exp(a, b)


@triton.jit(do_not_specialize=["L"])
def _row_scan_kernel(x_ptr, out_ptr, L, OP: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    # L is never specialized: its divisibility would change the loads' vector width, hence the
    # register layout and the scan's combine tree, with the row length.
    row = tl.program_id(0).to(tl.int64)
    # Nor is anything known of the row's offset: Inductor, launching this kernel itself, passes a
    # static L specialized (divisible by 16) whatever do_not_specialize says; this hint keeps the
    # loads as narrow as in the custom op's launch, so both compile to one arithmetic.
    row_start = tl.multiple_of(row * L, 1)
    x_row = x_ptr + row_start
    out_row = out_ptr + row_start
    lanes = tl.arange(0, BLOCK)
    if OP == 0:
        identity = 0.0
    elif OP == 1:
        identity = 1.0
    else:
        identity = float("-inf")
    carry = tl.full([BLOCK], identity, ACC)
    for start in range(0, L, BLOCK):
        cols = start + lanes
        mask = cols < L
        x = tl.load(x_row + cols, mask=mask, other=identity).to(ACC)
        if OP == 0:
            local = tl.associative_scan(x, 0, _add)
        elif OP == 1:
            local = tl.associative_scan(x, 0, _mul)
        else:
            local = tl.associative_scan(x, 0, _log_add_exp)
        y = _combine(carry, local, OP)
        tl.store(out_row + cols, y, mask=mask)
        # The next block's prefix: this block's last output, moved to every lane (a gather: no
        # arithmetic, so even its sign of zero is kept; only read when the block was full).
        carry = tl.gather(y, tl.full([BLOCK], BLOCK - 1, tl.int32), 0)


# ---------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------


def _kernel_operand(t: torch.Tensor) -> torch.Tensor:
    """``t`` contiguous and 16-byte aligned (the pointer's alignment is part of the compiled variant)."""
    return dense_aligned(t, REDUCTION_POINTER_ALIGN)


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _check(x: torch.Tensor, dim: int, op: str) -> int:
    if not (x.is_floating_point() and x.dtype in SUPPORTED_DTYPES):
        if x.is_floating_point() or x.is_complex():
            raise TypeError(f"inductor_bi.invariant_{op}: dtype {x.dtype} is not supported (float16/bfloat16/float32/float64 only)")
        raise TypeError(
            f"inductor_bi.invariant_{op}: got a {x.dtype} tensor. Integer and bool scans are exact (their result "
            "cannot depend on the order of operations), so they stay on aten; pass dtype= a float dtype to scan in it."
        )
    rank = max(x.dim(), 1)  # a 0-dim tensor takes dim 0 / -1, as aten
    if not -rank <= dim < rank:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {dim})")
    return dim % rank


def invariant_scan(x: torch.Tensor, dim: int, op: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``op`` (cumsum / cumprod / logcumsumexp) of ``x`` along ``dim`` with a fixed order.

    ``dtype`` (cumsum / cumprod): x is converted to it first, as aten does; the result has it.
    The output is contiguous (aten's scans return contiguous outputs too).
    """
    if op not in _OP_CODE:
        raise ValueError(f"inductor_bi.invariant_scan: op must be one of {OPS}, not {op!r}")
    if dtype is not None:
        x = x.to(dtype)
    dim = _check(x, dim, op)
    if x.dim() == 0:
        return invariant_scan(x.reshape(1), 0, op).reshape(())
    out_dtype = x.dtype
    # Traced for Inductor the rows may be symbolic: only a size known to be 0 takes the empty path
    # (no guard); rows that turn out 0 at run time launch an empty grid, which does nothing.
    if statically_known_true(x.numel() == 0):
        return torch.empty(x.shape, dtype=out_dtype, device=x.device)
    xm = x.movedim(dim, -1)
    length = xm.shape[-1]
    rows = xm.numel() // length
    kernel_dtype = interpreter_dtype(x.dtype) if runs_interpreted(x.device) else x.dtype
    xk = _kernel_operand(xm.to(kernel_dtype).reshape(rows, length))
    out = torch.empty(rows, length, dtype=kernel_dtype, device=x.device)
    launch(
        _row_scan_kernel, (rows,), x.device, xk, out, length,
        OP=_OP_CODE[op], BLOCK=scan_block(x.device), ACC=_acc_dtype(x.dtype), num_warps=SCAN_WARPS, num_stages=SCAN_STAGES,
    )  # fmt: skip
    out = out.to(out_dtype).reshape(xm.shape).movedim(-1, dim)
    # .contiguous() without a guard on symbolic sizes (a layout not known to be contiguous is copied)
    return out if is_contiguous_or_false(out) else out.clone(memory_format=torch.contiguous_format)


def invariant_cumsum(x: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """aten.cumsum: ``out[j] = x[0] + ... + x[j]`` along ``dim``, fp32 accumulation (fp64 for float64)."""
    return invariant_scan(x, dim, "cumsum", dtype)


def invariant_cumprod(x: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """aten.cumprod: ``out[j] = x[0] * ... * x[j]`` along ``dim``."""
    return invariant_scan(x, dim, "cumprod", dtype)


def invariant_logcumsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """aten.logcumsumexp: ``out[j] = log(exp(x[0]) + ... + exp(x[j]))`` along ``dim``."""
    return invariant_scan(x, dim, "logcumsumexp")
