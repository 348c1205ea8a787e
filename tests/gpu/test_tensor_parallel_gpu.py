"""Tensor parallelism over NCCL (needs 2 or more GPUs of one host; the device tool's nvidia-h100-x2 /
x4 kinds): examples/model.py's LLM in bf16 split by its ``tensor_parallel`` over 2 and 4 GPUs,
compiled with the backend: a row alone == the row in a batch, and the logits == the unsplit
model's on one GPU. Each rank's K slice of o and down is whole bf16 K chunks (1024) at 4 ranks."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from tests._distributed import run_ranks

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
# Llama-3-8B's width (o: 4096 / 4 = 1024 per rank), two layers, its vocabulary
ARGS = dict(vocab_size=32000, dim=4096, n_layers=2, n_heads=32, n_kv_heads=8, ffn_dim=8192, max_seq_len=256)


def _rank_main(rank: int, world: int, store_path: str, results) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    from tests._support import load_model_file

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off (the device notes)
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", store=dist.FileStore(store_path, world), rank=rank, world_size=world)
    try:
        llm = load_model_file()
        args = llm.ModelArgs(**ARGS)
        device = torch.device("cuda", rank)
        parallel = llm.tensor_parallel(llm.build_model(args, device, torch.bfloat16), init_device_mesh("cuda", (world,)))
        tokens = torch.randint(0, args.vocab_size, (8, 200), generator=torch.Generator().manual_seed(1)).to(device)
        with torch.no_grad():
            compiled = torch.compile(parallel, backend="batch_invariant", dynamic=True)
            batched = compiled(tokens)
            alone = [torch.equal(compiled(tokens[r : r + 1]), batched[r : r + 1]) for r in (0, 5)]
            one_gpu = torch.compile(llm.build_model(args, device, torch.bfloat16), backend="batch_invariant", dynamic=True)(tokens)
        results.put(dict(rank=rank, alone=alone, same_bits=torch.equal(batched, one_gpu),
                         differing=int((batched != one_gpu).sum())))  # fmt: skip
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(GPUS < 2, reason="needs 2 or more GPUs")
@pytest.mark.parametrize("world", [w for w in (2, 4) if w <= max(GPUS, 2)])
def test_the_llm_over_nccl_gives_the_one_gpu_logits_and_rows_alone_equal_in_a_batch(world):
    for r in run_ranks(_rank_main, world):
        assert all(r["alone"]), f"rank {r['rank']} of {world}: rows 0 / 5 alone vs in a batch of 8: {r['alone']}"
        assert r["same_bits"], f"rank {r['rank']} of {world}: {r['differing']} logits differ from the one-GPU model's"
