"""invariant_matmul vs cuBLAS (torch.mm), side by side in one run, bf16, over M = 1..8192.

Shapes: N=K=4096 and the Llama-3-8B projections, weights in nn.Linear layout ([N, K], used
transposed). Writes JSON and a PNG plot (TFLOP/s and the ratio to cuBLAS per shape).

    python -m benchmarks matmul --out benchmarks/results
"""

from __future__ import annotations

import argparse
import os

import torch

from benchmarks.common import environment, median_ms, write_json
from inductor_bi.kernels.matmul import invariant_matmul

SHAPES = {  # name: (N, K)
    "square 4096": (4096, 4096),
    "llama3-8b qkv_o 4096x4096": (4096, 4096),
    "llama3-8b kv 1024x4096": (1024, 4096),
    "llama3-8b gate/up 14336x4096": (14336, 4096),
    "llama3-8b down 4096x14336": (4096, 14336),
    "llama3-8b lm_head 128256x4096": (128256, 4096),
}
MS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]


def run(shapes, ms, dtype):
    rows = []
    for name, (n, k) in shapes.items():
        if name == "llama3-8b qkv_o 4096x4096":
            continue  # same shape as "square 4096"; listed for the reader
        w = torch.randn(n, k, device="cuda", dtype=dtype) / k**0.5
        for m in ms:
            a = torch.randn(m, k, device="cuda", dtype=dtype)
            t_cublas = median_ms(lambda: torch.mm(a, w.t()))
            t_ours = median_ms(lambda: invariant_matmul(a, w.t()))
            flops = 2.0 * m * n * k
            row = dict(shape=name, m=m, n=n, k=k, cublas_ms=t_cublas, invariant_ms=t_ours,
                       cublas_tflops=flops / t_cublas / 1e9, invariant_tflops=flops / t_ours / 1e9,
                       ratio=t_cublas / t_ours)
            rows.append(row)
            print(f"{name:32s} M={m:5d}  cuBLAS {row['cublas_tflops']:7.1f}  invariant {row['invariant_tflops']:7.1f} TFLOP/s  ratio {row['ratio']:.2f}", flush=True)
        del w
    return rows


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["shape"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for name in names:
        rs = [r for r in rows if r["shape"] == name]
        axes[0].plot([r["m"] for r in rs], [r["invariant_tflops"] for r in rs], marker="o", label=f"invariant {name}")
        axes[0].plot([r["m"] for r in rs], [r["cublas_tflops"] for r in rs], ls="--", alpha=0.6, label=f"cuBLAS {name}")
        axes[1].plot([r["m"] for r in rs], [r["ratio"] for r in rs], marker="o", label=name)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("M (rows)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("TFLOP/s (bf16)")
    axes[0].legend(fontsize=6)
    axes[1].set_ylabel("invariant / cuBLAS speed")
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--quick", action="store_true", help="fewer M values")
    args = ap.parse_args()
    ms = [1, 16, 64, 512, 2048, 8192] if args.quick else MS
    rows = run(SHAPES, ms, torch.bfloat16)
    write_json(os.path.join(args.out, "matmul.json"), {"environment": environment(), "dtype": "bfloat16", "rows": rows})
    plot(rows, os.path.join(args.out, "matmul.png"))


if __name__ == "__main__":
    main()
