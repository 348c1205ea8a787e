"""fixed_split_attention vs stock SDPA (flash), side by side in one run, bf16.

Prefill: causal self-attention over L = 1k..8k tokens. Decode: one query per sequence against a
KV cache of 1k..8k keys, batch 1..64. Writes JSON and a PNG plot.

    python -m benchmarks attention --out benchmarks/results
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F

from benchmarks.common import environment, median_ms, write_json
from inductor_bi.kernels import attention_table
from inductor_bi.kernels.attention import fixed_split_attention

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128  # Llama-3-8B


def bench_case(kind, batch, lq, lk, dtype=torch.bfloat16):
    q = torch.randn(batch, HEADS, lq, HEAD_DIM, device="cuda", dtype=dtype)
    k = torch.randn(batch, KV_HEADS, lk, HEAD_DIM, device="cuda", dtype=dtype)
    v = torch.randn(batch, KV_HEADS, lk, HEAD_DIM, device="cuda", dtype=dtype)
    causal = kind == "prefill"
    t_stock = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True))
    # GQA head packing on and off (same bits): the shipped setting is the headline number.
    t_packed, t_unpacked = (
        median_ms(lambda: fixed_split_attention(q, k, v, is_causal=causal, enable_gqa=True, pack_gqa=pack))
        for pack in (True, False)
    )
    cfg = attention_table.attention_config(HEAD_DIM, dtype, interpreted=False)
    t_ours = t_packed if attention_table.attention_packs_gqa(lq, HEADS // KV_HEADS, cfg) else t_unpacked
    return dict(kind=kind, batch=batch, lq=lq, lk=lk, stock_ms=t_stock, invariant_ms=t_ours, ratio=t_stock / t_ours,
                gqa_packed_ms=t_packed, gqa_unpacked_ms=t_unpacked)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    pre = [r for r in rows if r["kind"] == "prefill"]
    axes[0].plot([r["lk"] for r in pre], [r["ratio"] for r in pre], marker="o")
    axes[0].set_title("prefill (batch 1, causal)")
    axes[0].set_xlabel("tokens")
    for lk in sorted({r["lk"] for r in rows if r["kind"] == "decode"}):
        dec = [r for r in rows if r["kind"] == "decode" and r["lk"] == lk]
        axes[1].plot([r["batch"] for r in dec], [r["ratio"] for r in dec], marker="o", label=f"KV {lk}")
    axes[1].set_title("decode (1 query / sequence)")
    axes[1].set_xlabel("batch")
    axes[1].set_xscale("log", base=2)
    axes[1].legend()
    for ax in axes:
        ax.set_ylabel("fixed_split / stock SDPA speed")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    rows = []
    for lk in (1024, 2048, 4096, 8192):
        rows.append(bench_case("prefill", 1, lk, lk))
    for lk in (1024, 4096, 8192):
        for batch in (1, 4, 16, 64):
            rows.append(bench_case("decode", batch, 1, lk))
    for r in rows:
        print(f"{r['kind']:8s} B={r['batch']:3d} Lq={r['lq']:5d} Lk={r['lk']:5d}  stock {r['stock_ms']:.3f} ms  invariant {r['invariant_ms']:.3f} ms  ratio {r['ratio']:.2f}"
              f"  (GQA packed {r['gqa_packed_ms']:.3f} ms, unpacked {r['gqa_unpacked_ms']:.3f} ms)")
    write_json(os.path.join(args.out, "attention.json"), {"environment": environment(), "dtype": "bfloat16",
               "heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "pack_gqa": attention_table.attention_pack_rule(attention_table.attention_config(HEAD_DIM, torch.bfloat16, interpreted=False)),
               "rows": rows})
    plot(rows, os.path.join(args.out, "attention.png"))


if __name__ == "__main__":
    main()
