"""End to end: the Llama-style model of examples/model.py, stock torch.compile vs the backend, bf16.

Prefill (forward over B x L tokens, causal) and one decode step (step() with B tokens against a
KV cache), at batch 1, 8, 64; compile times; number of compilations. Side by side in one run.
Writes e2e.json and e2e.png (speed ratios per batch, compile windows); ``--plot-only`` redraws the
PNG from an existing e2e.json.

    python -m benchmarks e2e --preset llama-1b --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from triton.runtime.jit import JITFunction

from benchmarks.common import cold_compile_caches, environment, knob_values, median_ms, write_json
from inductor_bi.kernels import _launch, knobs as kernel_knobs

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from model import PRESETS, build_model  # noqa: E402

MODES = {
    "stock": lambda fn: torch.compile(fn, dynamic=True),
    "batch_invariant": lambda fn: torch.compile(fn, backend="batch_invariant", dynamic=True),
}


def call_inputs(margs, batch: int, prefill_len: int, kv_len: int):
    """Random inputs of one prefill (tokens [B, L]) and of one decode step (step()'s arguments:
    B tokens, their cache slots, positions kv_len - 1, kv_len)."""
    tokens = torch.randint(0, margs.vocab_size, (batch, prefill_len), device="cuda")
    step_args = (torch.randint(0, margs.vocab_size, (batch,), device="cuda"), torch.arange(batch, device="cuda") % margs.max_batch,
                 torch.full((batch,), kv_len - 1, device="cuda"), kv_len)
    return tokens, step_args


def kernel_binaries() -> dict[str, int]:
    """Binaries Triton has compiled so far for each of the backend's kernels (its JIT caches):
    each compiles in the calling thread at its first launch, inside the compile window."""
    from inductor_bi.kernels import attention, matmul, moe, reduction

    counts = {}
    for module in (matmul, attention, reduction, moe):
        for name, fn in vars(module).items():
            if isinstance(fn, JITFunction) and name.endswith("_kernel") and (n := _launch.binaries_compiled(fn)):
                counts[name] = n
    return counts


def compile_phases(top: int | None = 10) -> dict[str, float]:
    """Seconds per phase Dynamo / Inductor timed (``dynamo_timed``) since the last reset, the
    ``top`` largest first (None: all): where a compile window went besides first executions."""
    names, values = torch._dynamo.utils.compile_times(repr="csv", aggregate=True)
    phases = {name: float(value) for name, value in zip(names, values)}
    return dict(sorted(phases.items(), key=lambda kv: -kv[1])[:top])


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    summary = result["summary"]
    xs = range(len(summary))
    for offset, kind, label in ((-0.2, "prefill", "prefill"), (0.2, "decode", "decode step")):
        ratios = [s[f"{kind}_ratio"] for s in summary]
        bars = axes[0].bar([x + offset for x in xs], ratios, width=0.4, label=label)
        axes[0].bar_label(bars, fmt="%.2f")
    axes[0].axhline(1.0, color="gray", lw=0.8)
    axes[0].set_xticks(list(xs), [f"batch {s['batch']}" for s in summary])
    axes[0].set_ylabel("batch_invariant / stock torch.compile speed")
    axes[0].set_title(f"{result['preset']}, bf16 (prefill {result['prefill_len']} tokens, decode at KV {result['kv_len']})")
    axes[0].legend()
    modes = list(result["compile_s"])
    bars = axes[1].bar(modes, [result["compile_s"][m] for m in modes], color=["tab:gray", "tab:green"][: len(modes)])
    axes[1].bar_label(bars, fmt="%.1f s")
    axes[1].set_ylabel("seconds")
    axes[1].set_title("compile window (cold caches, all batch sizes)")
    env = result["environment"]
    fig.suptitle(f"{env.get('device')}, torch {env.get('torch')}, triton {env.get('triton')}, {env.get('date', '')[:10]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama-1b")
    ap.add_argument("--prefill-len", type=int, default=256)
    ap.add_argument("--kv-len", type=int, default=384)
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--set", action="append", default=[], metavar="NAME[=VALUE]",
                    help="kernel knobs for the whole run (ab_knob_e2e.py's spec: NAME, NAME=int, several joined by commas), e.g. ONE_BINARY_FOR_ANY_BATCH")
    ap.add_argument("--plot-only", action="store_true", help="redraw e2e.png from OUT/e2e.json")
    args = ap.parse_args()
    if args.plot_only:
        with open(os.path.join(args.out, "e2e.json")) as f:
            plot(json.load(f), os.path.join(args.out, "e2e.png"))
        return
    knobs = {name: value for spec in args.set for name, value in knob_values(spec).items()}
    with kernel_knobs.overridden(**knobs):  # an unknown name raises
        run(args, knobs)


def compile_first_calls(model, margs, mode: str, batches: list[int], prefill_len: int, kv_len: int):
    """The compile window: ``mode``'s prefill and decode step compiled from cold caches and
    called once per batch size. Returns (prefill, step, seconds, graphs compiled: Dynamo's count;
    batch 1 is Dynamo's own 0/1 specialization, so prefill and step make 4 for batches 1, 8, 64
    when no larger batch recompiles and nothing breaks the graph)."""
    torch._dynamo.reset()
    torch._dynamo.utils.reset_frame_count()  # also clears the per-phase compile times
    torch._dynamo.utils.counters.clear()
    # Cold on-disk caches for each mode (on an H100, stock's compile took 38 s from a warm
    # cache, 108 s cold).
    cold_compile_caches(mode)
    model.setup_kv_cache()
    prefill, step = MODES[mode](model), MODES[mode](model.step)
    t0 = time.perf_counter()
    with torch.no_grad():
        for b in batches:  # first calls: compilation (dynamic=True: one graph for b > 1)
            tokens, step_args = call_inputs(margs, b, prefill_len, kv_len)
            prefill(tokens)
            step(*step_args)
    torch.cuda.synchronize()
    return prefill, step, time.perf_counter() - t0, int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def run(args, knobs: dict) -> None:
    batches = [int(b) for b in args.batches.split(",")]
    margs = PRESETS[args.preset]
    model = build_model(margs, "cuda", torch.bfloat16)
    rows, compile_s, compile_detail = [], {}, {}
    for mode in MODES:
        prefill, step, compile_s[mode], graphs = compile_first_calls(model, margs, mode, batches, args.prefill_len, args.kv_len)
        compile_detail[mode] = {"graphs_compiled": graphs, "phases_s": compile_phases(),
                                "backend_kernel_binaries": kernel_binaries() if mode == "batch_invariant" else {}}
        print(f"{mode:16s} compile {compile_s[mode]:.1f} s, {graphs} graphs; phases {compile_detail[mode]['phases_s']}; our binaries {compile_detail[mode]['backend_kernel_binaries']}", flush=True)
        with torch.no_grad():
            for b in batches:
                tokens, step_args = call_inputs(margs, b, args.prefill_len, args.kv_len)
                t_prefill = median_ms(lambda: prefill(tokens))
                t_decode = median_ms(lambda: step(*step_args))
                rows.append(dict(mode=mode, batch=b, prefill_ms=t_prefill, decode_ms=t_decode))
                print(f"{mode:16s} B={b:3d}  prefill {t_prefill:8.2f} ms  decode step {t_decode:7.3f} ms", flush=True)
    summary = []
    for b in batches:
        s = next(r for r in rows if r["mode"] == "stock" and r["batch"] == b)
        o = next(r for r in rows if r["mode"] == "batch_invariant" and r["batch"] == b)
        summary.append(dict(batch=b, prefill_ratio=s["prefill_ms"] / o["prefill_ms"], decode_ratio=s["decode_ms"] / o["decode_ms"]))
        print(f"B={b:3d}  speed vs stock torch.compile: prefill {summary[-1]['prefill_ratio']:.2f}x  decode {summary[-1]['decode_ratio']:.2f}x")
    print(f"compile (first calls, all batch sizes): stock {compile_s['stock']:.1f} s, batch_invariant {compile_s['batch_invariant']:.1f} s")
    result = {"environment": environment(), "preset": args.preset, "dtype": "bfloat16", "prefill_len": args.prefill_len, "kv_len": args.kv_len,
              "rows": rows, "summary": summary, "compile_s": compile_s, "compile_detail": compile_detail, "knobs_set": knobs}
    write_json(os.path.join(args.out, "e2e.json"), result)
    plot(result, os.path.join(args.out, "e2e.png"))


if __name__ == "__main__":
    main()
