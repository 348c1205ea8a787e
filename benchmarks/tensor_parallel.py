"""Tensor parallelism as users run it: examples/model.py's LLM split over the GPUs of one host with
its ``tensor_parallel`` (DTensor: vocabulary-parallel embedding, column / row-parallel projections,
logits gathered), ``torch.compile``d stock and with ``backend="batch_invariant"`` at the same degree,
side by side in one run.

One process per rank (spawned here: no torchrun), NCCL on CUDA (NVLink multicast left off, as the
device notes ask: ``NCCL_NVLS_ENABLE=0``), gloo on the CPU (a smoke test of the script, not a
measurement). Per (contender, phase, batch): the wall time of a whole forward on rank 0, host
included (every rank synchronised before and after: median of ``--repeats``), tokens per second,
and the share of the call's profiled time spent in sums across ranks (events named NCCL /
all_reduce / all_gather / fixed_order / chunk_ordered, over all profiled kernel time on CUDA or
op time on the CPU). Prefill: ``forward(tokens[B, S])``; decode: the serving ``step`` of B
one-token rows against a KV cache of S positions.

    python -m benchmarks tensor_parallel --degree 2 --out benchmarks/results

Writes OUT/tensor_parallel.json ({environment, rows}; each row: degree, contender, phase, batch,
seq, ms, tokens_per_s, comm_share) and prints ours / stock per row.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "examples")]  # benchmarks.common; examples/model.py as ``model``
from benchmarks.common import environment, median_wall_ms, write_json  # noqa: E402

CONTENDERS = ("stock", "ours")
# what a sum across ranks is called in a profile: NCCL's kernels, c10d's ops, ours
COMM_MARKERS = ("nccl", "all_reduce", "allreduce", "all_gather", "allgather", "reduce_scatter", "fixed_order", "chunk_ordered")
PRESETS = {
    # Llama-3.2-1B's layout (examples/model.py's llama-1b) with a 2048-token context.
    "1b": dict(vocab_size=32000, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192, max_seq_len=2048, max_batch=64),
    # The CPU smoke test's size: o and down keep whole interpreter K chunks (128) per rank at 4 ranks.
    "tiny": dict(vocab_size=64, dim=512, n_layers=1, n_heads=8, n_kv_heads=4, ffn_dim=512, max_seq_len=16, max_batch=4),
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--degree", type=int, default=2, help="ranks (GPUs on CUDA)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    ap.add_argument("--preset", choices=sorted(PRESETS), help="default: 1b on CUDA, tiny on the CPU")
    ap.add_argument("--batches", default="1,8,64", help="comma separated")
    ap.add_argument("--seq", type=int, default=512, help="prefill length / decode cache length")
    ap.add_argument("--phases", default="prefill,decode")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    args.preset = args.preset or ("1b" if args.device == "cuda" else "tiny")
    args.batches = [int(b) for b in args.batches.split(",")]
    args.phases = args.phases.split(",")
    return args


def comm_share(call, device: torch.device) -> float:
    """The share of ``call``'s profiled time in sums across ranks (kernel time on CUDA, op time on
    the CPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        call()
        if device.type == "cuda":
            torch.cuda.synchronize()
    if device.type == "cuda":
        spans = [(e.name, e.device_time_total) for e in prof.key_averages() if e.device_time_total > 0]
    else:  # self time, so an op is not counted again inside its caller
        spans = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in spans)
    comm = sum(t for name, t in spans if any(m in name.lower() for m in COMM_MARKERS))
    return comm / total if total else 0.0


def _rank_main(rank: int, world: int, store_path: str, args, results) -> None:
    if args.device == "cuda":
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
        torch.cuda.set_device(rank)
    device = torch.device(args.device, rank) if args.device == "cuda" else torch.device("cpu")
    backend = "nccl" if args.device == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.FileStore(store_path, world), rank=rank, world_size=world)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        import model as llm  # examples/model.py
        margs = llm.ModelArgs(**PRESETS[args.preset])
        dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
        model = llm.tensor_parallel(llm.build_model(margs, device, dtype), init_device_mesh(args.device, (world,)))
        sync = (lambda: (torch.cuda.synchronize(), dist.barrier())) if args.device == "cuda" else dist.barrier
        rows = []
        for contender in CONTENDERS:
            torch._dynamo.reset()
            kw = dict(backend="batch_invariant") if contender == "ours" else {}
            forward = torch.compile(model.forward, dynamic=True, **kw)
            step = torch.compile(model.step, dynamic=True, **kw)
            for phase in args.phases:
                for batch in args.batches:
                    gen = torch.Generator().manual_seed(batch)
                    if phase == "prefill":
                        tokens = torch.randint(0, margs.vocab_size, (batch, args.seq), generator=gen).to(device)

                        def call():
                            return forward(tokens)

                        n_tokens = batch * args.seq
                    else:
                        tokens = torch.randint(0, margs.vocab_size, (batch,), generator=gen).to(device)
                        slots = torch.arange(batch, device=device) % margs.max_batch
                        positions = torch.full((batch,), args.seq - 1, device=device)

                        def call():
                            return step(tokens, slots, positions, args.seq)

                        n_tokens = batch
                    with torch.no_grad():
                        ms = median_wall_ms(call, args.repeats, warmup=args.warmup, sync=sync)
                        share = comm_share(call, device)
                    rows.append(dict(degree=world, contender=contender, phase=phase, batch=batch, seq=args.seq, ms=ms,
                                     tokens_per_s=n_tokens / ms * 1e3, comm_share=share, preset=args.preset))  # fmt: skip
                    if rank == 0:
                        print(f"  {contender:5s} {phase:7s} B={batch:3d} S={args.seq:4d}  {ms:9.3f} ms  "
                              f"{n_tokens / ms * 1e3:12.0f} tok/s  sums across ranks {share:6.1%}", flush=True)  # fmt: skip
        if rank == 0:
            results.put(rows)
    finally:
        dist.destroy_process_group()


def run(args) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ctx.Process(target=_rank_main, args=(r, args.degree, f"{tmp}/store", args, results)) for r in range(args.degree)]
        for p in procs:
            p.start()
        rows = None
        while rows is None and all(p.exitcode in (None, 0) for p in procs):
            try:
                rows = results.get(timeout=5)
            except queue.Empty:
                continue
        for p in procs:
            p.join(60 if rows is not None else 5)
            if p.is_alive():
                p.terminate()
    if rows is None or any(p.exitcode for p in procs):
        raise SystemExit(f"a rank failed: exit codes {[p.exitcode for p in procs]}")
    env = environment()
    env["world"] = args.degree
    return dict(environment=env, rows=rows)


def main(argv=None) -> dict:
    args = parse_args(argv)
    doc = run(args)
    by_case = {}
    for row in doc["rows"]:
        by_case.setdefault((row["phase"], row["batch"]), {})[row["contender"]] = row
    for (phase, batch), pair in by_case.items():
        if len(pair) == 2:
            print(f"{phase:7s} B={batch:3d} degree {args.degree}: ours / stock speed {pair['stock']['ms'] / pair['ours']['ms']:.2f}x")
    write_json(os.path.join(args.out, "tensor_parallel.json"), doc)
    return doc


if __name__ == "__main__":
    main()
