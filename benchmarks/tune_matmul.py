"""Try pinned tile configs for invariant_matmul (bf16, H100) at a few (M, N, K); check each keeps
bitwise row invariance; print TFLOP/s per config. Configs may depend on (N, K, dtype, device), never M.

    python benchmarks/tune_matmul.py
"""

from __future__ import annotations

import torch

from common import median_ms
from inductor_bi.kernels import configs
from inductor_bi.kernels.configs import MatmulConfig
from inductor_bi.kernels.matmul import invariant_matmul

CANDIDATES = [
    MatmulConfig(128, 128, 64, 512, 8, 3),
    MatmulConfig(128, 128, 64, 1024, 4, 4),
    MatmulConfig(128, 128, 64, 4096, 8, 4),
    MatmulConfig(128, 256, 64, 1024, 8, 3),
    MatmulConfig(128, 256, 64, 2048, 8, 4),
    MatmulConfig(256, 128, 64, 1024, 8, 3),
    MatmulConfig(64, 128, 64, 1024, 4, 4),
    MatmulConfig(64, 256, 64, 1024, 8, 3),
]
CASES = [(4096, 4096, 4096), (8192, 14336, 4096), (4096, 4096, 14336), (64, 4096, 4096), (16, 4096, 4096), (1, 4096, 4096), (1, 1024, 4096)]


def main():
    dtype = torch.bfloat16
    print("config" + "".join(f"  M{m}xN{n}xK{k}" for m, n, k in CASES) + "   (TFLOP/s; cuBLAS first row)")
    row = []
    for m, n, k in CASES:
        a = torch.randn(m, k, device="cuda", dtype=dtype)
        w = torch.randn(n, k, device="cuda", dtype=dtype)
        row.append(2 * m * n * k / median_ms(lambda: torch.mm(a, w.t())) / 1e9)
    print("cuBLAS " + "".join(f"{t:14.1f}" for t in row), flush=True)
    for cfg in CANDIDATES:
        configs.MATMUL_CUDA[dtype] = cfg
        row, invariant = [], True
        for m, n, k in CASES:
            a = torch.randn(m, k, device="cuda", dtype=dtype)
            w = torch.randn(n, k, device="cuda", dtype=dtype)
            out = invariant_matmul(a, w.t())
            invariant &= torch.equal(out[-1:], invariant_matmul(a[-1:], w.t()))
            row.append(2 * m * n * k / median_ms(lambda: invariant_matmul(a, w.t())) / 1e9)
        name = f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k} c{cfg.k_chunk} w{cfg.num_warps} s{cfg.num_stages}"
        print(f"{name:28s}" + "".join(f"{t:14.1f}" for t in row) + ("" if invariant else "  NOT INVARIANT"), flush=True)


if __name__ == "__main__":
    main()
