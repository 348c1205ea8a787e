"""Try tile configs and tile fetch paths for invariant_matmul (bf16) over the benchmark's
(N, K) shapes at several M; print TFLOP/s per candidate and case, cuBLAS first.

Every candidate must give the same bits as the reference kernel fetching tiles with pointer loads at the
same K chunk (torch.equal on every case; a '!' marks a case that differs): candidates only change how tiles are
fetched (pointer loads or TMA), how many 64-row warpgroup slabs a program computes and how many
k16 MMA instructions one K step issues, never the MMA instruction or their order; a candidate with
another K chunk is another arithmetic (still a function of K alone). Each also keeps bitwise row invariance (a row alone ==
the row in the batch) and split-K == one program at small M.

    PYTHONPATH=. python tools/tune/tune_matmul.py [--out DIR] [--pairs]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import torch

from benchmarks.common import environment, median_ms, pinned_matmul_tile
from inductor_bi.kernels import knobs as kernel_knobs
from inductor_bi.kernels.matmul_table import MatmulConfig
from inductor_bi.kernels.matmul import invariant_matmul

REFERENCE = (MatmulConfig(64, 128, 64, 1024, 4, 4), False)  # pointer loads, the arithmetic every tile shares
# (tile, fetch tiles by TMA[, kernel knobs]). Tiles decided earlier (persistent launches, 64-column
# tiles, other K chunks lost) are in docs/decisions.md. The four-warpgroup tall tiles run the short
# tile's m64n128k16 sequence on each 64 x 128 slab: a quarter fewer operand bytes per MMA than
# 128x128, as cuBLAS's 256x128 tiles.
CANDIDATES = [
    REFERENCE,
    (MatmulConfig(64, 128, 128, 1024, 4, 4), True, {"ONE_BINARY_FOR_ANY_BATCH": False}),
    (MatmulConfig(64, 128, 128, 1024, 4, 4), True),  # shipped short
    (MatmulConfig(128, 128, 64, 1024, 8, 5), True),  # shipped tall
    (MatmulConfig(256, 128, 64, 1024, 16, 3), True),
    (MatmulConfig(256, 128, 64, 1024, 16, 4), True),
    (MatmulConfig(128, 256, 64, 1024, 16, 3), True),
]
# (N, K) of Llama-3-8B's projections at every M, and of llama-1b's (the e2e model) at its prefill
# and decode sizes.
CASES = [(m, n, k) for n, k in [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (128256, 4096)] for m in (4096, 1024, 256, 64, 16, 1)]
CASES += [(m, n, k) for n, k in [(2048, 2048), (512, 2048), (8192, 2048), (2048, 8192)] for m in (2048, 256, 8, 1)]

# --pairs: launch pairs (short tile, tall tile), each call choosing between them as the shipped
# pair does (matmul_table.matmul_config), at every M the e2e model runs: whether another tall tile
# for a weight's (N, K), chosen once per weight and never per M, beats the shipped pair.
PAIR_CANDIDATES = [
    ((MatmulConfig(64, 128, 128, 1024, 4, 4), MatmulConfig(128, 128, 64, 1024, 8, 5)), True),  # shipped
    ((MatmulConfig(64, 128, 128, 1024, 4, 4), MatmulConfig(256, 128, 64, 1024, 16, 3)), True),
    ((MatmulConfig(64, 128, 128, 1024, 4, 4), MatmulConfig(128, 256, 64, 1024, 16, 3)), True),
]
# llama-1b's projections (q / o, k / v, gate / up, down, lm_head) at its e2e prefill (batch 1, 8,
# 64 x 256 tokens) and decode (batch 1, 8, 64) sizes, then Llama-3-8B's at a few M.
PAIR_CASES = [(m, n, k) for n, k in [(2048, 2048), (512, 2048), (8192, 2048), (2048, 8192)] for m in (16384, 2048, 256, 64, 8, 1)]
PAIR_CASES += [(m, 128256, 2048) for m in (256, 64, 8, 1)]
PAIR_CASES += [(m, n, k) for n, k in [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336)] for m in (4096, 256, 16, 1)]


def name(candidate) -> str:
    cfg, tma, *knobs = candidate
    knob = "".join(f" {k}={v}" for k, v in (knobs[0] if knobs else {}).items())
    if isinstance(cfg, tuple):
        return " | ".join(f"{c.block_m}x{c.block_n}x{c.block_k} s{c.num_stages}" for c in cfg) + (" tma" if tma else "") + knob
    return f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k} c{cfg.k_chunk} w{cfg.num_warps} s{cfg.num_stages} g{cfg.group_m}{' tma' if tma else ''}{knob}"


def short_and_tall(cfg) -> tuple:
    """(short, tall) of a candidate: a pair, or one tile for both launch shapes."""
    return cfg if isinstance(cfg, tuple) else (cfg, cfg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--pairs", action="store_true", help="time PAIR_CANDIDATES on PAIR_CASES")
    args = ap.parse_args()
    candidates, cases = (PAIR_CANDIDATES, PAIR_CASES) if args.pairs else (CANDIDATES, CASES)
    dtype = torch.bfloat16
    weights = {(n, k): torch.randn(n, k, device="cuda", dtype=dtype) / k**0.5 for _, n, k in cases}
    inputs = {(m, k): torch.randn(m, k, device="cuda", dtype=dtype) for m, _, k in cases}
    results = {"environment": environment(), "cublas": {}, "configs": {}}
    print(f"{'case':24s}{'cuBLAS':>9s}" + "".join(f"{name(c):>30s}" for c in candidates), flush=True)
    for m, n, k in cases:
        a, w = inputs[(m, k)], weights[(n, k)]
        flops = 2.0 * m * n * k
        line = f"M{m}xN{n}xK{k}".ljust(24)
        cublas = flops / median_ms(lambda: torch.mm(a, w.t())) / 1e9
        results["cublas"][f"{m},{n},{k}"] = cublas
        line += f"{cublas:9.1f}"
        references = {}  # per K chunk: the reference kernel's bits with that chunk
        for chunk in sorted({short_and_tall(cfg)[0].k_chunk for cfg, *_ in candidates}):
            with pinned_matmul_tile(dtype, dataclasses.replace(REFERENCE[0], k_chunk=chunk)):
                references[chunk] = invariant_matmul(a, w.t(), tma=REFERENCE[1])
        for cfg, tma, *knobs in candidates:
            short, tall = short_and_tall(cfg)
            with pinned_matmul_tile(dtype, short, tall), kernel_knobs.overridden(**(knobs[0] if knobs else {})):
                out = invariant_matmul(a, w.t(), tma=tma)
                ok = torch.equal(out, references[short.k_chunk])
                ok &= torch.equal(out[-1:], invariant_matmul(a[-1:], w.t(), tma=tma))
                if m <= 64:
                    ok &= torch.equal(invariant_matmul(a, w.t(), split_k=True, tma=tma), out)
                tflops = flops / median_ms(lambda: invariant_matmul(a, w.t(), tma=tma)) / 1e9
            results["configs"].setdefault(name((cfg, tma, *knobs)), {})[f"{m},{n},{k}"] = {"tflops": tflops, "same_bits": bool(ok)}
            line += f"{tflops:9.1f} ({tflops / cublas:.2f}){'' if ok else '!'}".rjust(30)
        print(line, flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "tune_matmul_pairs.json" if args.pairs else "tune_matmul.json"), "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
