"""The same bits at every tensor-parallel degree: a Llama-style block split over 2 and 4 gloo ranks
gives the unsplit block's output and input gradient on one device, because the sums across ranks
of its row-parallel matmuls merge the ranks' K chunks in the one device's order."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import inductor_bi  # noqa: F401
from tests._distributed import WIDE, TensorParallelBlock, run_ranks, tensor_parallel_plan


def _degree_rank_main(rank: int, world: int, store_path: str, results) -> None:
    from torch._inductor.utils import run_and_get_code
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", store=dist.FileStore(store_path, world), rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        block = TensorParallelBlock(**WIDE)
        one_device = TensorParallelBlock(**WIDE)
        one_device.load_state_dict(block.state_dict())
        tensor_parallel_plan(block, init_device_mesh("cpu", (world,)), sequence_parallel=False)
        x = torch.randn(3, 4, WIDE["hidden"])
        with torch.no_grad():
            parallel, codes = run_and_get_code(torch.compile(block, backend="batch_invariant", dynamic=True), x)
            unsplit = torch.compile(one_device, backend="batch_invariant", dynamic=True)(x)
        code = "\n".join(codes)
        # training (static shapes, as above): the input's gradient sums the column-parallel
        # projections' input gradients across ranks, each merged in chunk order too
        grads = []
        for module in (block, one_device):
            leaf = x.clone().requires_grad_(True)
            torch.compile(module, backend="batch_invariant", dynamic=False)(leaf).square().sum().backward()
            grads.append(leaf.grad)
        results.put(dict(
            rank=rank, same_bits=torch.equal(parallel, unsplit), same_grad=torch.equal(*grads),
            chunk_ordered=code.count("chunk_ordered_all_reduce_matmul"),
            error=(parallel.double() - unsplit.double()).abs().max().item(), grad_error=(grads[0] - grads[1]).abs().max().item(),
        ))  # fmt: skip
    finally:
        dist.destroy_process_group()


# 2 ranks: 4 ranks forward are examples/model.py's LLM's test (test_backend_tensor_parallel.py)
@pytest.mark.parametrize("world", [2])
def test_tensor_parallel_block_gives_the_one_device_bits_forward_and_backward(world):
    """Degree invariance: the block split over 2 ranks gives the unsplit block's bits on one
    device, its output and its input's gradient (column-parallel matmuls and attention heads
    compute each element as one device does; the sums across ranks merge the K chunks of each
    row-parallel matmul in the one device's order)."""
    for r in run_ranks(_degree_rank_main, world):
        assert r["chunk_ordered"] >= 2, f"rank {r['rank']} of {world}: o and down were not merged in chunk order"
        assert r["same_bits"], f"rank {r['rank']} of {world}: != the one-device block (max diff {r['error']})"
        assert r["same_grad"], f"rank {r['rank']} of {world}: input gradient != the one-device block's (max diff {r['grad_error']})"
