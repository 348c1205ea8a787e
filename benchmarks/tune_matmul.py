"""Try pinned tile configs for invariant_matmul (bf16, H100) over the benchmark's (N, K) shapes
at a few M; check each keeps bitwise row invariance (a row alone == the row in the batch, and
split-K == one program); print TFLOP/s per config and case, cuBLAS first. Configs may depend on
(N, K, dtype, device), never on M: read the table per (N, K) row group.

    python benchmarks/tune_matmul.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from common import environment, median_ms
from inductor_bi.kernels import configs
from inductor_bi.kernels.configs import MatmulConfig
from inductor_bi.kernels.matmul import invariant_matmul

CANDIDATES = [
    MatmulConfig(64, 128, 64, 1024, 4, 4),
    MatmulConfig(64, 128, 64, 512, 4, 4),
    MatmulConfig(128, 128, 64, 1024, 8, 3),
    MatmulConfig(128, 128, 64, 512, 8, 4),
    MatmulConfig(128, 128, 64, 1024, 4, 4),
    MatmulConfig(128, 256, 64, 1024, 8, 3),
    MatmulConfig(128, 256, 64, 512, 8, 3),
    MatmulConfig(128, 256, 64, 256, 8, 3),
    MatmulConfig(64, 256, 64, 1024, 4, 3),
    MatmulConfig(64, 128, 128, 1024, 4, 3),
]
NK = [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (128256, 4096)]
MS = [8192, 2048, 64, 16, 1]


def name(cfg: MatmulConfig) -> str:
    return f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k} c{cfg.k_chunk} w{cfg.num_warps} s{cfg.num_stages}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dtype = torch.bfloat16
    cases = [(m, n, k) for n, k in NK for m in MS]
    weights = {(n, k): torch.randn(n, k, device="cuda", dtype=dtype) / k**0.5 for n, k in NK}
    inputs = {(m, k): torch.randn(m, k, device="cuda", dtype=dtype) for m in MS for k in {k for _, k in NK}}
    results = {"environment": environment(), "cublas": {}, "configs": {}}
    print(f"{'case':24s}{'cuBLAS':>9s}" + "".join(f"{name(c):>26s}" for c in CANDIDATES))
    for m, n, k in cases:
        a, w = inputs[(m, k)], weights[(n, k)]
        flops = 2.0 * m * n * k
        line = f"M{m}xN{n}xK{k}".ljust(24)
        cublas = flops / median_ms(lambda: torch.mm(a, w.t())) / 1e9
        results["cublas"][f"{m},{n},{k}"] = cublas
        line += f"{cublas:9.1f}"
        for cfg in CANDIDATES:
            configs.MATMUL_CUDA[dtype] = cfg
            out = invariant_matmul(a, w.t())
            ok = torch.equal(out[-1:], invariant_matmul(a[-1:], w.t()))
            if m <= 64:
                ok &= torch.equal(invariant_matmul(a, w.t(), split_k=True), invariant_matmul(a, w.t(), split_k=False))
            tflops = flops / median_ms(lambda: invariant_matmul(a, w.t())) / 1e9
            results["configs"].setdefault(name(cfg), {})[f"{m},{n},{k}"] = {"tflops": tflops, "invariant": bool(ok)}
            line += f"{tflops:9.1f} ({tflops / cublas:.2f}){'' if ok else '!'}".rjust(26)
        print(line, flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "tune_matmul.json"), "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
