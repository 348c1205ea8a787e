"""Sums across ranks in a fixed order: every rank's tensor (for a reduce-scatter, every rank's block
of this rank's shard) gathered, then added in ascending rank order in an fp32 accumulator (fp64
for float64) and rounded once. The order is a function of the world size only; NCCL picks its
algorithm, and with it the order of the sum, from the message size, which follows the batch.

The gather is synchronous: the call returns with the sum, so no later kernel can reuse the input's
memory while another rank still reads it (an async gather in the graph leaves that memory to
Inductor's planner, which may hand it to the next kernel before the wait).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from . import matmul
from .collectives_table import SUMS


def _group(name: str, op: str, caller: str):
    if op not in SUMS:
        raise ValueError(f"{caller}: op must be one of {SUMS}, got {op!r}")
    from torch.distributed.distributed_c10d import _resolve_process_group

    return _resolve_process_group(name)


def _in_rank_order(parts, op: str, dtype: torch.dtype) -> torch.Tensor:
    """parts[0] + parts[1] + ... in that order, in the accumulator dtype, rounded once."""
    acc_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    total = parts[0].to(acc_dtype)
    for part in parts[1:]:
        total = total + part.to(acc_dtype)
    if op == "avg":
        total = total / len(parts)
    return total.to(dtype)


def fixed_order_all_reduce(x: torch.Tensor, op: str, group_name: str) -> torch.Tensor:
    group = _group(group_name, op, "fixed_order_all_reduce")
    parts = [torch.empty_like(x, memory_format=torch.contiguous_format) for _ in range(group.size())]
    dist.all_gather(parts, x.contiguous(), group=group)
    return _in_rank_order(parts, op, x.dtype)


def fixed_order_reduce_scatter(x: torch.Tensor, op: str, group_size: int, group_name: str) -> torch.Tensor:
    """reduce_scatter(x) along dim 0: this rank's block of dim 0 from every rank (an all-to-all,
    so each rank receives only its own shard), added in ascending rank order."""
    group = _group(group_name, op, "fixed_order_reduce_scatter")
    if group.size() != group_size or x.shape[0] % group_size:
        raise ValueError(f"fixed_order_reduce_scatter: dim 0 ({x.shape[0]}) must split evenly over the group's {group.size()} ranks (given {group_size})")
    received = torch.empty_like(x, memory_format=torch.contiguous_format)
    dist.all_to_all_single(received, x.contiguous(), group=group)
    return _in_rank_order(received.chunk(group_size), op, x.dtype)


def chunk_ordered_all_reduce_matmul(a: torch.Tensor, b: torch.Tensor, group_name: str) -> torch.Tensor:
    """``all_reduce(a @ b, "sum")`` where each rank holds a slice of K (a row-parallel matmul) made
    of whole fixed K chunks: every rank's unrounded chunk partials gathered (rank order is K
    order) and added in ascending chunk order, rounded once. That is the order of the unsplit
    matmul on one device, so the bits are the same at every number of ranks."""
    group = _group(group_name, "sum", "chunk_ordered_all_reduce_matmul")
    partials = matmul.fixed_chunk_partials(a, b)
    gathered = [torch.empty_like(partials) for _ in range(group.size())]
    dist.all_gather(gathered, partials.contiguous(), group=group)
    return matmul.merge_fixed_chunk_partials(torch.cat(gathered), a.shape[-1] * group.size(), a.dtype)
