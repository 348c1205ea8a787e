"""Helpers of the multi-process tensor-parallel tests: ranks as spawned processes (a gloo group
over a file store) and a Llama-style block with its DTensor plans."""

from __future__ import annotations

import tempfile

import torch
import torch.multiprocessing as mp


def run_ranks(main, world: int) -> list[dict]:
    """``main(rank, world, store_path, results)`` in one spawned process per rank (``main`` opens
    its gloo or NCCL group through the file store); what each put on ``results``, in rank order."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ctx.Process(target=main, args=(rank, world, f"{tmp}/store", results)) for rank in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(300)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return sorted((results.get(timeout=10) for _ in range(world)), key=lambda r: r["rank"])


# Wide enough that each rank's K slice of o and down is whole K chunks at 4 ranks (the
# interpreter's K chunk is 128): their sums across ranks merge the chunks in the unsplit order.
WIDE = dict(hidden=512, heads=8, inner=512)


class TensorParallelBlock(torch.nn.Module):
    """RMSNorm, causal attention (heads split across ranks: views with -1 heads), RMSNorm, SwiGLU."""

    def __init__(self, hidden: int = 32, heads: int = 8, inner: int = 64):
        super().__init__()
        self.head_dim = hidden // heads
        self.norm1, self.norm2 = torch.nn.RMSNorm(hidden), torch.nn.RMSNorm(hidden)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(hidden, hidden, bias=False) for _ in range(4))
        self.gate, self.up = torch.nn.Linear(hidden, inner, bias=False), torch.nn.Linear(hidden, inner, bias=False)
        self.down = torch.nn.Linear(inner, hidden, bias=False)

    def forward(self, x):
        b, s, _ = x.shape
        h = self.norm1(x)
        q, k, v = (proj(h).view(b, s, -1, self.head_dim).transpose(1, 2) for proj in (self.q, self.k, self.v))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, -1))
        h = self.norm2(x)
        return x + self.down(torch.nn.functional.silu(self.gate(h)) * self.up(h))


def tensor_parallel_plan(block, mesh, sequence_parallel: bool):
    """Megatron-style: q/k/v/gate/up split by columns, o/down by rows (their outputs summed across
    ranks). With ``sequence_parallel`` the norms and residuals run on a shard of the sequence: the
    row-parallel outputs are reduce-scattered along it and gathered again before the projections."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel, PrepareModuleInputOutput, RowwiseParallel, SequenceParallel, parallelize_module,
    )  # fmt: skip

    if not sequence_parallel:
        plan = {name: ColwiseParallel() for name in ("q", "k", "v", "gate", "up")}
        plan |= {name: RowwiseParallel() for name in ("o", "down")}
        return parallelize_module(block, mesh, plan)
    plan = {name: ColwiseParallel(input_layouts=Shard(1)) for name in ("q", "k", "v", "gate", "up")}
    plan |= {name: RowwiseParallel(output_layouts=Shard(1), use_local_output=False) for name in ("o", "down")}
    plan |= {name: SequenceParallel() for name in ("norm1", "norm2")}
    parallelize_module(block, mesh, plan)
    return parallelize_module(block, mesh, PrepareModuleInputOutput(
        input_layouts=(Replicate(),), desired_input_layouts=(Shard(1),), use_local_input=False,
        output_layouts=(Shard(1),), desired_output_layouts=(Replicate(),), use_local_output=True,
    ))  # fmt: skip
