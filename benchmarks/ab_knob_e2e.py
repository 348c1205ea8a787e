"""A/B launch knobs of ``inductor_bi.kernels.configs`` end to end: the llama-1b model compiled
once with the backend, each decode step / prefill timed with a knob on and off in alternation
(ABAB...), so machine drift hits both sides alike. Only for knobs read at launch time that leave
the bits unchanged (the script checks the logits are equal). A knob is ``NAME`` (on = True) or
``NAME=VALUE`` (an int); off is the shipped value. Several knobs share the one compile.

    python benchmarks/ab_knob_e2e.py ATTENTION_MERGE_IN_LAST_PROGRAM ATTENTION_SPLIT_STAGES=3
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import statistics

import torch

from bench_e2e import call_inputs
from common import environment, median_ms

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import inductor_bi  # noqa: E402,F401
from inductor_bi.kernels import configs  # noqa: E402
from llm import PRESETS, build_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("knobs", nargs="+", help="NAME (on = True) or NAME=VALUE (int)")
    ap.add_argument("--preset", default="llama-1b")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--prefill-len", type=int, default=256)
    ap.add_argument("--kv-len", type=int, default=384)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prefill", action="store_true", help="time prefill too (slow at batch 64)")
    args = ap.parse_args()
    print(environment())
    margs = PRESETS[args.preset]
    model = build_model(margs, "cuda", torch.bfloat16)
    model.setup_kv_cache()
    step = torch.compile(model.step, backend="batch_invariant", dynamic=True)
    prefill = torch.compile(model, backend="batch_invariant", dynamic=True)
    with torch.no_grad():
        for b in (int(x) for x in args.batches.split(",")):
            tokens, step_args = call_inputs(margs, b, args.prefill_len, args.kv_len)
            phases = [("decode", lambda: step(*step_args))] + ([("prefill", lambda: prefill(tokens))] if args.prefill else [])
            for (phase, fn), knob in itertools.product(phases, args.knobs):
                name, _, value = knob.partition("=")
                on_value = int(value) if value else True
                times, outs = {True: [], False: []}, {}
                for _ in range(args.rounds):
                    for on in (True, False):
                        with configs.overridden(**({name: on_value} if on else {})):
                            outs[on] = fn().clone()
                            times[on].append(median_ms(fn))
                same = torch.equal(outs[True], outs[False])
                on, off = statistics.median(times[True]), statistics.median(times[False])
                print(f"B={b:3d} {phase:8s} {knob}: on {on:8.3f} ms  off {off:8.3f} ms  on/off {on / off:.3f}  same bits: {same}", flush=True)


if __name__ == "__main__":
    main()
