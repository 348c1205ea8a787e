"""Where a compile window goes: the llama-1b prefill and decode step compiled from cold caches
and called at batch 1, 8, 64 (benchmarks/e2e.py's compile window) under cProfile, for one mode.
Prints every Dynamo / Inductor timed phase and the functions with the most cumulative and own
time, so the backend's extra compile time is traced to code, not guessed (on an H200, benchmarks/e2e.py
put 50 of its 80 extra seconds in ``GraphLowering.codegen``, on the GPU only).

    PYTHONPATH=. python tools/diagnose/profile_compile.py batch_invariant --top 45
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys

import torch

from benchmarks.e2e import MODES, compile_first_calls, compile_phases
from benchmarks.common import environment

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from model import PRESETS, build_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=list(MODES))
    ap.add_argument("--preset", default="llama-1b")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--top", type=int, default=45)
    args = ap.parse_args()
    print(environment(), flush=True)
    margs = PRESETS[args.preset]
    model = build_model(margs, "cuda", torch.bfloat16)
    profiler = cProfile.Profile()
    profiler.enable()
    _, _, seconds, graphs = compile_first_calls(model, margs, args.mode, [int(b) for b in args.batches.split(",")], 256, 384)
    profiler.disable()
    print(f"{args.mode}: compile window {seconds:.1f} s under cProfile, {graphs} graphs", flush=True)
    for name, value in compile_phases(top=None).items():
        print(f"  phase {name:60s} {value:8.2f} s")
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(args.top)
        print(f"\n== top {args.top} by {order}\n" + out.getvalue().split("\n", 6)[-1], flush=True)


if __name__ == "__main__":
    main()
