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

# Candidates: (tile config, kernel knobs). v7 / v8 (tune_attention_h200_v7.txt, _v8.txt at f76d1af) timed
# tiles and three knobs, all since decided. v10: K / V by TMA descriptors (the
# same float ops, fewer spills) against the v9 pointer loads, with one more pipeline stage, and a
# 128-row tile on 8 warps (the 64-row tile's float ops per warpgroup with TMA, offline: a
# candidate launch shape for prefill, as the matmul's tall tile). Results: TMA on; the 128-row
# tile and 3 stages for every launch lost (dropped from the list), but 3 stages took the
# sequential decode at batch 16 from 0.60x to 0.83x of SDPA: v11 times that for one-wave
# launches only, and splitting that launch instead. v11 (tune_attention_h200_v11.txt at f76d1af): one-wave stages
# 3 and Q by TMA won and are on; split max programs 256 helped batch 16 less than the stages.
SHIPPED = AttentionConfig(block_m=64, block_n=64, kv_split=1024, num_warps=4, num_stages=2)
V13 = dataclasses.replace(SHIPPED, kv_split=512)
# v14 (tune_attention_h200_v14.txt at f76d1af): written FMAs (one CUDA-core op fewer
# per score, other bits) and 1024-key splits (another arithmetic, still a function of the head
# dim: half the merges in prefill, half the split programs in decode). Both shipped; decode at
# batch 1 and at batch 4 with 1k keys lost (each program walks a 16-block chain).
# v15 (tune_attention_h200_v15.txt): 4 / 5 stages for the decode launches over the 16-block
# chains (not arithmetic) gained nothing (batch 1 at 1k keys 0.015 -> 0.016 ms): deeper prefetch
# does not shorten a chain whose MMAs are each waited on in place (inspect_kernels.py: wgmma
# pendings 0 in the key loop). Dropped; the list keeps the shipped line and v13's
# 512-key splits as the batch-1 reference.
CANDIDATES = [
    (SHIPPED, {}),  # v14
    (V13, {}),  # 512-key splits with the FMAs: the batch-1 rows' reference
    # v15 dropped: ATTENTION_SPLIT_STAGES / ATTENTION_ONE_WAVE_STAGES 4 and 5.
    # v14 dropped: V13 without FMAs (slower prefill by 1.2-1.3%, decode equal).
    # v12 (tune_attention_h200_v12.txt at f76d1af) timed and dropped: the key loop flat across splits (slower
    # everywhere: prefill 0.67 -> 0.60x, decode batch 1 0.77 -> 0.64x; ptxas crashed on its masked
    # prefill), split programs walking 2 / 4 splits (no gain), 128-key blocks (decode batch 16
    # 0.96x, everything else slower) and 256-key splits (decode batch 1 0.45x).
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
