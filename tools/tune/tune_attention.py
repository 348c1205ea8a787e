"""Try pinned attention tiles for head dim 128, bf16: prefill (causal, batch 1) and decode (one
query, batch 16) against stock SDPA, and check each config keeps decode == prefill bitwise for a
few tokens. Configs may depend on (head dim, dtype, device), never on Lq, batch or heads.

    PYTHONPATH=. python tools/tune/tune_attention.py
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from benchmarks.attention import HEAD_DIM, HEADS, KV_HEADS
from benchmarks.common import median_ms
from inductor_bi.kernels import attention_table, knobs
from inductor_bi.kernels.attention import fixed_split_attention
from inductor_bi.kernels.attention_table import AttentionConfig

# Candidates: (tile config, kernel knobs). What earlier sweeps decided (TMA K / V and Q, one-wave
# stages, 1024-key splits, written FMAs; the 128-row tile, deeper decode stages, 128-key blocks,
# 256-key splits and a flat key loop lost) is in docs/decisions.md.
SHIPPED = AttentionConfig(block_m=64, block_n=64, kv_split=1024, num_warps=4, num_stages=2)
HALF_SPLITS = dataclasses.replace(SHIPPED, kv_split=512)
CANDIDATES = [
    (SHIPPED, {}),
    (HALF_SPLITS, {}),  # 512-key splits: the batch-1 decode reference (each 1024-key split is a 16-block chain)
]
CASES = [("prefill", 1, 4096, 4096), ("prefill", 1, 8192, 8192), ("decode", 16, 1, 4096), ("decode", 1, 1, 8192), ("decode", 8, 1, 8192), ("decode", 64, 1, 1024),
         ("decode", 1, 1, 1024), ("decode", 4, 1, 1024)]


def main():
    dt = torch.bfloat16
    data = {}
    for kind, b, lq, lk in CASES:
        g = torch.Generator(device="cuda").manual_seed(lk + b)
        data[(kind, b, lq, lk)] = [torch.randn(b, h, l, HEAD_DIM, device="cuda", dtype=dt, generator=g)
                                    for h, l in ((HEADS, lq), (KV_HEADS, lk), (KV_HEADS, lk))]
    print(f"{'config':34s}" + "".join(f"{k}-B{b}-{lq}x{lk}".rjust(24) for k, b, lq, lk in CASES) + "  decode==prefill  prefill 4k accuracy")
    line = "stock SDPA (ms)".ljust(34)
    stock = {}
    for case in CASES:
        q, k, v = data[case]
        stock[case] = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=case[0] == "prefill", enable_gqa=True))
        line += f"{stock[case]:.3f}".rjust(24)
    print(line, flush=True)
    pq, pk, pv = data[CASES[0]]
    first = None
    for cfg, knob_values in CANDIDATES:
        attention_table._ATTENTION_CUDA_16BIT[128] = cfg
        label = f"m{cfg.block_m} n{cfg.block_n} s{cfg.kv_split} w{cfg.num_warps} st{cfg.num_stages}" + "".join(f" {k}={v}" for k, v in knob_values.items())
        line = label.ljust(34)
        with knobs.overridden(**knob_values):
            for case in CASES:
                q, k, v = data[case]
                t = median_ms(lambda: fixed_split_attention(q, k, v, is_causal=case[0] == "prefill", enable_gqa=True))
                line += f"{t:.3f} ({stock[case] / t:.2f})".rjust(24)
            prefill = fixed_split_attention(pq, pk, pv, is_causal=True, enable_gqa=True)
            ok = all(torch.equal(prefill[:, :, t : t + 1],
                                 fixed_split_attention(pq[:, :, t : t + 1], pk[:, :, : t + 1], pv[:, :, : t + 1], enable_gqa=True))
                     for t in (0, 63, 64, 255, 256, 1000, 4095))
            err = (prefill.double() - F.scaled_dot_product_attention(pq.double(), pk.double(), pv.double(), is_causal=True, enable_gqa=True)).abs().max().item()
        first = prefill if first is None else first
        same = "yes" if torch.equal(prefill, first) else "NO"
        print(line + ("  yes" if ok else "  NO") + f"  max err vs fp64 {err:.1e}  prefill bits == first line: {same}", flush=True)


if __name__ == "__main__":
    main()
