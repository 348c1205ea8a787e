"""Accumulating index puts (embedding and indexing gradients) summed in a fixed order, no atomics.

Contract of ``fixed_order_index_put_accumulate(dest, indices, values, mask=None)``:

* What it computes: ``torch.index_put(dest, indices, values, accumulate=True)`` where
  ``indices`` index dest's leading ``len(indices)`` dims (no ``None``, integer tensors broadcast
  together, negative entries wrapping as in torch) and ``values`` broadcasts to
  ``broadcast(indices).shape + dest.shape[len(indices):]``. With ``mask`` (bool, broadcast to that
  shape too), aten's ``_unsafe_masked_index_put_accumulate``: a masked-out element contributes
  nothing, and a source position masked out in every column is never looked at (its index may be
  out of range). Returns a new contiguous tensor; ``dest`` is not written.
* The order: for each destination row d and each column, the contributions are the source
  positions i (row-major over the broadcast index shape) with index[i] == d, summed one after
  the other in ascending i, in an fp32 accumulator started from zero (fp64 for float64 inputs),
  then added to dest[d] once and rounded once to dest's dtype. A destination with no
  contribution is copied unchanged. The chain of row d is a function of d's own contributions and
  their source positions only: never of the other rows, the number of programs, the column block,
  the GPU or timing; no atomics. So the result is the same run to run, and a destination's bits do
  not change when contributions to other destinations are added or removed; a zero contribution
  anywhere in the chain changes nothing either (the accumulator starts at +0.0 and can never be
  -0.0, and x + 0 == x), which is what makes a row's embedding gradient the same alone as in a
  batch whose other rows carry no loss.
* Errors: an index out of range at a contributing position raises ``IndexError`` on the CPU
  (checked on the host) and stops on a device assert on CUDA (``torch._assert_async``: no host
  read, so the op can be captured in a CUDA graph); the bad position is dropped before the
  kernel, so nothing is ever written out of bounds.
* Dtypes: dest and values float16 / bfloat16 / float32 / float64, the same; indices int32 / int64.

How: the indices are linearized over dest's leading dims (masked-out positions get the key
``rows``, past every destination) and sorted stably (``torch.sort(stable=True)``: a stable sort
of integers is one permutation, whatever the device or algorithm), so each destination's
contributions lie together in ascending source position. The kernel's grid is sorted positions x
column blocks; a program whose position starts a segment walks that segment to its end (a
data-dependent loop), every other program exits. No host synchronization anywhere.

``fixed_order_embedding_dense_backward`` is ``aten.embedding_dense_backward`` (its decomposition's
semantics: padding_idx and invalid indices contribute nothing, scale_grad_by_freq divides by
integer counts) on that kernel; ``fixed_order_scatter_add`` is ``aten.scatter_add`` (a gather's
gradient) on it, one destination per element.

Plain launchers (no torch.library registration); ops.py registers the custom ops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ._launch import interpreter_dtype, launch, runs_interpreted
from .index_accumulate_table import INDEX_ACCUMULATE_BLOCK_C, INDEX_ACCUMULATE_WARPS, INDEX_DTYPES, SUPPORTED_DTYPES  # noqa: F401



@triton.jit(do_not_specialize=["n", "rows", "columns"])
def _segment_sums_kernel(
    OUT, VALUES, KEYS, ORDER,
    n, rows, columns,
    stride_out, stride_vn, stride_vc,
    ACC_DTYPE: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Program (p, c): if sorted position p starts a destination's segment, add that segment's
    values (ascending source position) to OUT[key, c-block] in ACC_DTYPE, then store once.
    The sizes follow the batch and are never specialized: one binary for every batch."""
    p = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    in_row = cols < columns
    key = tl.load(KEYS + p)
    before = tl.load(KEYS + p - 1, mask=p > 0, other=-1)
    if (key != before) & (key < rows):
        acc = tl.zeros([BLOCK_C], dtype=ACC_DTYPE)
        q = p
        next_key = key
        while next_key == key:
            src = tl.load(ORDER + q)
            acc += tl.load(VALUES + src * stride_vn + cols * stride_vc, mask=in_row, other=0.0).to(ACC_DTYPE)
            q += 1
            next_key = tl.load(KEYS + q, mask=q < n, other=rows)  # past the end: no destination
        ptrs = OUT + key * stride_out + cols
        total = tl.load(ptrs, mask=in_row, other=0.0).to(ACC_DTYPE) + acc
        tl.store(ptrs, total.to(OUT.dtype.element_ty), mask=in_row)


def _check_args(dest: torch.Tensor, indices: Sequence[torch.Tensor], values: torch.Tensor, mask) -> None:
    if dest.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"fixed_order_index_put_accumulate: dtype {dest.dtype} is not supported ({SUPPORTED_DTYPES})")
    if values.dtype != dest.dtype:
        raise TypeError(f"fixed_order_index_put_accumulate: values are {values.dtype} but dest is {dest.dtype}")
    if not 1 <= len(indices) <= dest.dim():
        raise IndexError(f"fixed_order_index_put_accumulate: {len(indices)} index tensors for a {dest.dim()}-d dest")
    for i in indices:
        if i.dtype not in INDEX_DTYPES:
            raise TypeError(f"fixed_order_index_put_accumulate: indices must be int32 / int64, got {i.dtype}")
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"fixed_order_index_put_accumulate: mask must be bool, got {mask.dtype}")
    for t in (*indices, values, *(() if mask is None else (mask,))):
        if t.device != dest.device:
            raise RuntimeError(f"fixed_order_index_put_accumulate: tensors on {t.device} and {dest.device}")


def _raise_first_out_of_range(bad: torch.Tensor, positions: list[torch.Tensor], sizes: list[int]) -> None:
    """On the CPU: name the first contributing index out of range (a host read)."""
    if not bool(bad.any()):
        return
    first = int(bad.nonzero()[0, 0])
    for dim, (pos, size) in enumerate(zip(positions, sizes)):
        value = int(pos[first])
        if not -size <= value < size:
            raise IndexError(
                f"fixed_order_index_put_accumulate: index {value} is out of bounds for dimension {dim} with size {size}"
            )


def fixed_order_index_put_accumulate(
    dest: torch.Tensor, indices: Sequence[torch.Tensor] | torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``index_put(dest, indices, values, accumulate=True)`` (``mask``: the masked variant) with
    each destination's contributions summed in ascending source position (module docstring)."""
    indices = [indices] if isinstance(indices, torch.Tensor) else list(indices)
    _check_args(dest, indices, values, mask)
    leading = [int(s) for s in dest.shape[: len(indices)]]
    tail = tuple(dest.shape[len(indices) :])
    rows, columns = math.prod(leading), math.prod(tail)
    index = torch.broadcast_tensors(*indices) if len(indices) > 1 else indices
    put_shape = tuple(index[0].shape) + tail
    n = index[0].numel()
    device = dest.device
    interpreted = runs_interpreted(device)
    compute_dtype = interpreter_dtype(dest.dtype) if interpreted else dest.dtype
    # a fresh contiguous copy the kernel adds into (an out-of-place op: traceable for Inductor)
    out = dest.to(dtype=compute_dtype, memory_format=torch.contiguous_format, copy=True)
    values2d = values.expand(put_shape).reshape(n, columns)  # a view unless values broadcast
    if mask is not None:
        mask2d = mask.expand(put_shape).reshape(n, columns)
        values2d = torch.where(mask2d, values2d, torch.zeros((), dtype=values.dtype, device=device))
    if n == 0 or columns == 0:
        return out.to(dest.dtype)
    live = mask2d.any(1) if mask is not None else torch.ones(n, dtype=torch.bool, device=device)

    # Linearize over the leading dims, wrapping negatives; a position out of range is dropped.
    flat = [i.reshape(n).to(torch.int64) for i in index]
    key = torch.zeros(n, dtype=torch.int64, device=device)
    out_of_range = torch.zeros(n, dtype=torch.bool, device=device)
    for pos, size in zip(flat, leading):
        wrapped = torch.where(pos < 0, pos + size, pos)
        out_of_range = out_of_range | (wrapped < 0) | (wrapped >= size)
        key = key * size + wrapped
    # comparisons, never a bool negation: fake CUDA tensors (tracing without a GPU) have none
    bad = live & out_of_range
    if device.type == "cuda":
        torch._assert_async(bad.sum() == 0, "fixed_order_index_put_accumulate: an index is out of bounds for dest")
    else:
        _raise_first_out_of_range(bad, flat, leading)
    key = torch.where(live & (out_of_range == 0), key, rows)
    sorted_keys, order = torch.sort(key, stable=True)

    values2d = values2d.to(compute_dtype) if values2d.dtype != compute_dtype else values2d
    out2d = out.view(rows, columns)
    launch(
        _segment_sums_kernel, (n, triton.cdiv(columns, INDEX_ACCUMULATE_BLOCK_C)), device,
        out2d, values2d, sorted_keys, order,
        n, rows, columns,
        out2d.stride(0), values2d.stride(0), values2d.stride(1),
        ACC_DTYPE=tl.float64 if compute_dtype == torch.float64 else tl.float32,
        BLOCK_C=INDEX_ACCUMULATE_BLOCK_C,
        num_warps=INDEX_ACCUMULATE_WARPS,
        num_stages=1,
    )  # fmt: skip
    return out.to(dest.dtype) if compute_dtype != dest.dtype else out


def fixed_order_embedding_dense_backward(
    grad_output: torch.Tensor, indices: torch.Tensor, num_weights: int, padding_idx: int, scale_grad_by_freq: bool
) -> torch.Tensor:
    """``aten.embedding_dense_backward`` as torch decomposes it (computed in fp32 for 16-bit
    grads, then cast back), its accumulating put on ``fixed_order_index_put_accumulate``."""
    result_dtype = grad_output.dtype
    if result_dtype in (torch.float16, torch.bfloat16):
        grad_output = grad_output.float()
    indices = indices.long()
    valid = (indices >= 0) & (indices < num_weights)
    if scale_grad_by_freq:
        # integer counts: exact whatever the order
        counts = torch.zeros(num_weights, dtype=torch.int64, device=indices.device)
        counts.index_put_((indices.clamp(0, max(num_weights - 1, 0)),), valid.long(), accumulate=True)
        per_token = torch.where(valid, counts[indices.clamp(0, max(num_weights - 1, 0))], 1)
        grad_output = grad_output / per_token.unsqueeze(-1)
    mask = (valid & (indices != padding_idx)).reshape(*indices.shape, *([1] * (grad_output.dim() - indices.dim())))
    zeros = grad_output.new_zeros((num_weights, *grad_output.shape[indices.dim() :]))
    return fixed_order_index_put_accumulate(zeros, [indices], grad_output, mask).to(result_dtype)


def fixed_order_scatter_add(dest: torch.Tensor, dim: int, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``aten.scatter_add(dest, dim, index, src)`` (a gather's gradient) on
    ``fixed_order_index_put_accumulate``: element ``i`` of ``index`` adds ``src[i]`` into ``dest``
    at ``i`` with its ``dim`` coordinate replaced by ``index[i]``, each destination element's
    contributions in ascending (row-major) position of ``index``. Negative indices are out of
    range, as in aten."""
    if index.dim() != dest.dim() or src.dim() != dest.dim():
        raise RuntimeError(
            f"fixed_order_scatter_add: index ({index.dim()}-d) and src ({src.dim()}-d) must have dest's {dest.dim()} dims"
        )
    if index.dtype != torch.int64:
        raise TypeError(f"fixed_order_scatter_add: index must be int64, got {index.dtype}")
    dim = dim % max(dest.dim(), 1)
    if dest.dim() == 0:  # a 0-d scatter: one element, one position
        return fixed_order_scatter_add(dest.reshape(1), 0, index.reshape(1), src.reshape(1)).reshape(())
    for d, size in enumerate(index.shape):  # aten reads src over index's shape only
        src = src.narrow(d, 0, size)
    negative = (index < 0).sum() == 0
    if index.device.type == "cuda":
        torch._assert_async(negative, "fixed_order_scatter_add: an index is negative")
    elif not bool(negative):
        raise IndexError(f"fixed_order_scatter_add: index {int(index.min())} is out of bounds for dimension {dim}")
    coordinates = []
    for d, size in enumerate(index.shape):
        if d == dim:
            coordinates.append(index)
        else:  # the element's own coordinate, broadcast along the others
            shape = [1] * index.dim()
            shape[d] = size
            coordinates.append(torch.arange(size, device=index.device).view(shape))
    return fixed_order_index_put_accumulate(dest, coordinates, src)
