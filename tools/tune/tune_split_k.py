"""Small-M matmul: how the fixed K chunks are run (one program, or one program per chunk plus a
merge) and how wide they are, on the shapes where the work is reading the weights (bf16).

Strategies that keep the shipped arithmetic must equal the shipped kernel bitwise (a '!' marks a
case that differs); chunk-width candidates change the arithmetic (the chunk is a function of K
alone, so still invariant) and are checked for split == unsplit and row == row alone instead.

    PYTHONPATH=. python tools/tune/tune_split_k.py
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses

import torch

from benchmarks.common import environment, median_ms
from inductor_bi.kernels import matmul_table
from inductor_bi.kernels.knobs import overridden
from inductor_bi.kernels.matmul import invariant_matmul

# (N, K): llama-1b (2048 hidden, 512 kv, 8192 mlp) and Llama-3-8B projections.
NK = [(2048, 2048), (512, 2048), (8192, 2048), (2048, 8192), (4096, 4096), (1024, 4096), (4096, 14336)]
MS = [1, 16, 64]
SMALL_M = 64  # the split strategies are timed up to here; larger M (--ms) times the chunk widths only
STRATEGIES = {  # name: (invariant_matmul keyword arguments, kernel knobs); all the shipped arithmetic
    "one program": (dict(split_k=False), {}),
    "split, merge launch": (dict(split_k=True), {"MATMUL_MERGE_IN_LAST_PROGRAM": False}),
    "split, merge in last": (dict(split_k=True), {"MATMUL_MERGE_IN_LAST_PROGRAM": True}),
    "shipped rule": (dict(), {}),
}


@contextlib.contextmanager
def chunk_set(dtype: torch.dtype, chunk: int):
    """Every launch shape of ``dtype`` with K chunk ``chunk`` (the tall shape stays in use at
    large M, so a large-M row times what would ship)."""
    tables = (matmul_table.MATMUL_CUDA, matmul_table.MATMUL_CUDA_TALL)
    saved = [table[dtype] for table in tables]
    for table, cfg in zip(tables, saved):
        table[dtype] = dataclasses.replace(cfg, k_chunk=chunk)
    try:
        yield
    finally:
        for table, cfg in zip(tables, saved):
            table[dtype] = cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", default="", help="chunk widths to try against the shipped one, e.g. 256,512")
    ap.add_argument("--ms", default=",".join(map(str, MS)), help=f"rows; the split strategies only up to {SMALL_M}")
    args = ap.parse_args()
    chunks = [int(c) for c in args.chunks.split(",") if c]
    ms = [int(m) for m in args.ms.split(",")]
    print(environment())
    dtype = torch.bfloat16
    print(f"{'case':22s}{'cuBLAS us':>10s}" + "".join(f"{s:>24s}" for s in STRATEGIES) + "".join(f"{f'c{c}':>20s}" for c in chunks))
    for n, k in NK:
        w = torch.randn(n, k, device="cuda", dtype=dtype) / k**0.5
        for m in ms:
            a = torch.randn(m, k, device="cuda", dtype=dtype)
            cublas = median_ms(lambda: torch.mm(a, w.t())) * 1000
            line = f"M{m}xN{n}xK{k}".ljust(22) + f"{cublas:10.1f}"
            reference = invariant_matmul(a, w.t(), split_k=False)
            for name, (kw, knobs) in STRATEGIES.items():
                if m > SMALL_M and name != "shipped rule":
                    line += "-".rjust(24)
                    continue
                with overridden(**knobs):
                    ok = torch.equal(invariant_matmul(a, w.t(), **kw), reference)
                    t = median_ms(lambda: invariant_matmul(a, w.t(), **kw)) * 1000
                line += f"{t:8.1f} ({cublas / t:.2f}){'' if ok else '!'}".rjust(24)
            for c in chunks:
                with chunk_set(dtype, c):
                    out = invariant_matmul(a, w.t())
                    ok = torch.equal(out, invariant_matmul(a, w.t(), split_k=False))
                    ok &= torch.equal(out[-1:], invariant_matmul(a[-1:], w.t()))
                    t = median_ms(lambda: invariant_matmul(a, w.t())) * 1000
                line += f"{t:8.1f} ({cublas / t:.2f}){'' if ok else '!'}".rjust(20)
            print(line, flush=True)


if __name__ == "__main__":
    main()
