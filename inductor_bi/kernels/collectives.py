"""A sum across ranks in a fixed order: every rank's tensor gathered, then added in ascending rank
order in an fp32 accumulator (fp64 for float64) and rounded once. The order is a function of the
world size only; NCCL's all-reduce picks its order from the message size, which follows the batch.

The gather is synchronous: the call returns with the sum, so no later kernel can reuse the input's
memory while another rank still reads it (an async gather in the graph leaves that memory to
Inductor's planner, which may hand it to the next kernel before the wait).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .collectives_table import SUMS


def fixed_order_all_reduce(x: torch.Tensor, op: str, group_name: str) -> torch.Tensor:
    if op not in SUMS:
        raise ValueError(f"fixed_order_all_reduce: op must be one of {SUMS}, got {op!r}")
    from torch.distributed.distributed_c10d import _resolve_process_group

    group = _resolve_process_group(group_name)
    world = group.size()
    parts = [torch.empty_like(x, memory_format=torch.contiguous_format) for _ in range(world)]
    dist.all_gather(parts, x.contiguous(), group=group)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    total = parts[0].to(acc_dtype)
    for part in parts[1:]:
        total = total + part.to(acc_dtype)
    if op == "avg":
        total = total / world
    return total.to(x.dtype)
