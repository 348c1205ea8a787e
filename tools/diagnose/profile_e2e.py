"""Where the end-to-end time goes: per-kernel GPU time of one llama-1b prefill and one decode
step, stock torch.compile vs the backend, side by side (torch.profiler, CUDA kernel times).

Answers "which kernels make the gap" before a kernel is changed: the table lists, per mode and
phase, each kernel family's GPU microseconds per call, its launches per call, and the sum of
kernel time against the wall time of the call (the rest is launch gaps and host work).

    PYTHONPATH=. python tools/diagnose/profile_e2e.py --batches 1,64
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from benchmarks.e2e import MODES, call_inputs  # noqa: E402
from benchmarks.common import environment  # noqa: E402
from model import PRESETS, build_model  # noqa: E402

ITERS = 10


def family(name: str) -> str:
    """Group kernel names: Inductor's generated kernels by their kind, ours by name."""
    m = re.match(r"triton_(poi|red|per|tem)_", name)
    if m:
        return f"inductor {m.group(1)}"
    return name[:60]


def profile_call(fn, named=family) -> tuple[dict, float]:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start.record()
        for _ in range(ITERS):
            fn()
        end.record()
        torch.cuda.synchronize()
    per = collections.defaultdict(lambda: [0.0, 0])
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA and ev.device_time_total > 0:
            slot = per[named(ev.name)]
            slot[0] += ev.device_time_total / ITERS
            slot[1] += 1 / ITERS
    return per, start.elapsed_time(end) * 1000 / ITERS


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama-1b")
    ap.add_argument("--prefill-len", type=int, default=256)
    ap.add_argument("--kv-len", type=int, default=384)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--inductor-kernels", type=int, default=0,
                    help="also list this many of Inductor's own kernels by name (their names say what they fuse)")
    args = ap.parse_args()
    print(environment())
    margs = PRESETS[args.preset]
    model = build_model(margs, "cuda", torch.bfloat16)
    for mode, compile_fn in MODES.items():
        torch._dynamo.reset()
        model.setup_kv_cache()
        prefill, step = compile_fn(model), compile_fn(model.step)
        for b in (int(x) for x in args.batches.split(",")):
            tokens, step_args = call_inputs(margs, b, args.prefill_len, args.kv_len)
            with torch.no_grad():
                for phase, fn in (("prefill", lambda: prefill(tokens)), ("decode", lambda: step(*step_args))):
                    per, wall_us = profile_call(fn)
                    busy = sum(t for t, _ in per.values())
                    print(f"\n== {mode} {phase} B={b}: kernels {busy:.0f} us of {wall_us:.0f} us wall (eager launches, no CUDA graph)")
                    for name, (t, n) in sorted(per.items(), key=lambda kv: -kv[1][0])[:14]:
                        print(f"  {t:9.1f} us  {n:6.1f} launches  {name}")
                    if args.inductor_kernels:
                        own, _ = profile_call(fn, named=lambda name: name if name.startswith("triton_") else "")
                        own.pop("", None)
                        print(f"  Inductor's kernels, the {args.inductor_kernels} costliest:")
                        for name, (t, n) in sorted(own.items(), key=lambda kv: -kv[1][0])[: args.inductor_kernels]:
                            print(f"    {t:9.1f} us  {n:6.1f} launches  {name[:110]}")


if __name__ == "__main__":
    main()
