"""Try tile configs and tile fetch paths for invariant_matmul (bf16) over the benchmark's
(N, K) shapes at several M; print TFLOP/s per candidate and case, cuBLAS first.

Every candidate must give the same bits as the shipped kernel fetching tiles with pointer loads
(torch.equal on every case; a '!' marks a case that differs): candidates only change how tiles are
fetched (pointer loads or TMA), how many 64-row warpgroup slabs a program computes and how many
k16 MMA instructions one K step issues, never the MMA instruction, their order or the chunks. Each also keeps bitwise row invariance (a row alone ==
the row in the batch) and split-K == one program at small M.

    python benchmarks/tune_matmul.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from common import environment, median_ms, pinned_matmul_tile
from inductor_bi.kernels import configs
from inductor_bi.kernels.configs import MatmulConfig
from inductor_bi.kernels.matmul import invariant_matmul

REFERENCE = (MatmulConfig(64, 128, 64, 1024, 4, 4), False)  # the v3/v4 shipped kernel, pointer loads
# (tile, fetch tiles by TMA)
# v10 candidates, after the v9 sweep (tune_matmul_h200_v9.txt: persistent launches 20-35% slower,
# a 128-wide K step no better for the tall tile: dropped). Each was bitwise equal to REFERENCE in
# all 30 cases there; the run checks again. Offline (sm_90, no GPU): no spills.
CANDIDATES = [
    REFERENCE,
    (MatmulConfig(64, 128, 64, 1024, 4, 6), True),  # short v5-v9
    (MatmulConfig(128, 128, 64, 1024, 8, 4), True),  # shipped tall (v5-)
    (MatmulConfig(128, 128, 64, 1024, 8, 5), True),  # v9: ~1% over s4 at M >= 1024
    # v9: the short tile with 128-wide K steps (8 m64n128k16 wgmmas a step, the sequence of two
    # 64-wide steps) beat the v5-v9 short tile in 27 of 30 cases, by up to 11%; s3 to see
    # whether the 4th stage (192 KiB shared) is what pays.
    (MatmulConfig(64, 128, 128, 1024, 4, 4), True),  # shipped short (v10-)
    (MatmulConfig(64, 128, 128, 1024, 4, 3), True),
    # v9 answered yes: wgmma m64n64k16 gave m64n128k16's bits in all 30 cases. 64-column tiles
    # for small N at small M (twice the programs of a q / o / k / v projection at M <= 64), with
    # 64- and 128-wide K steps.
    (MatmulConfig(64, 64, 64, 1024, 4, 6), True),
    (MatmulConfig(64, 64, 128, 1024, 4, 4), True),
]
NK = [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (128256, 4096)]
MS = [4096, 1024, 256, 64, 16, 1]


def name(candidate) -> str:
    cfg, tma, *knobs = candidate
    persistent = " persistent" if knobs and knobs[0].get("MATMUL_PERSISTENT") else ""
    return f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k} c{cfg.k_chunk} w{cfg.num_warps} s{cfg.num_stages} g{cfg.group_m}{' tma' if tma else ''}{persistent}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dtype = torch.bfloat16
    cases = [(m, n, k) for n, k in NK for m in MS]
    weights = {(n, k): torch.randn(n, k, device="cuda", dtype=dtype) / k**0.5 for n, k in NK}
    inputs = {(m, k): torch.randn(m, k, device="cuda", dtype=dtype) for m in MS for k in {k for _, k in NK}}
    results = {"environment": environment(), "cublas": {}, "configs": {}}
    print(f"{'case':24s}{'cuBLAS':>9s}" + "".join(f"{name(c):>30s}" for c in CANDIDATES), flush=True)
    for m, n, k in cases:
        a, w = inputs[(m, k)], weights[(n, k)]
        flops = 2.0 * m * n * k
        line = f"M{m}xN{n}xK{k}".ljust(24)
        cublas = flops / median_ms(lambda: torch.mm(a, w.t())) / 1e9
        results["cublas"][f"{m},{n},{k}"] = cublas
        line += f"{cublas:9.1f}"
        with pinned_matmul_tile(dtype, REFERENCE[0]):
            reference = invariant_matmul(a, w.t(), tma=REFERENCE[1])
        for cfg, tma, *knobs in CANDIDATES:
            with pinned_matmul_tile(dtype, cfg), configs.overridden(**(knobs[0] if knobs else {})):
                out = invariant_matmul(a, w.t(), tma=tma)
                ok = torch.equal(out, reference)
                ok &= torch.equal(out[-1:], invariant_matmul(a[-1:], w.t(), tma=tma))
                if m <= 64:
                    ok &= torch.equal(invariant_matmul(a, w.t(), split_k=True, tma=tma), out)
                tflops = flops / median_ms(lambda: invariant_matmul(a, w.t(), tma=tma)) / 1e9
            results["configs"].setdefault(name((cfg, tma, *knobs)), {})[f"{m},{n},{k}"] = {"tflops": tflops, "same_bits": bool(ok)}
            line += f"{tflops:9.1f} ({tflops / cublas:.2f}){'' if ok else '!'}".rjust(30)
        print(line, flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "tune_matmul.json"), "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
