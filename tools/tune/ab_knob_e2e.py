"""A/B knobs of ``inductor_bi.kernels.knobs`` end to end: the llama-1b model compiled
once with the backend, each decode step / prefill timed with a knob on and off in alternation
(ABAB...), so machine drift hits both sides alike. Knobs read at launch time share the one
compile; with ``--compile-time`` (knobs read by the passes) each spec compiles a model copy, and
the run prints what each compilation rewrote. The script checks the logits are equal. A knob is ``NAME`` (on = True) or
``NAME=VALUE`` (an int; ``=0`` turns a shipped-on knob off), or several joined by commas (on
together); "off" is always the shipped value.

    PYTHONPATH=. python tools/tune/ab_knob_e2e.py ATTENTION_MERGE_IN_LAST_PROGRAM ATTENTION_SPLIT_STAGES=3
    PYTHONPATH=. python tools/tune/ab_knob_e2e.py --compile-time REDUCTION_FUSE_RMS_NORM=0 ATTENTION_FOLD_KV_GATHER=0
"""

from __future__ import annotations

import argparse
import collections
import copy
import functools
import itertools
import os
import sys
import statistics

import torch

from benchmarks.e2e import call_inputs
from benchmarks.common import environment, knob_values, median_ms

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import inductor_bi  # noqa: E402,F401
import inductor_bi.hooks as hooks  # noqa: E402
from inductor_bi.backend import batch_invariant  # noqa: E402
from model import PRESETS, build_model  # noqa: E402
from inductor_bi.kernels import knobs as kernel_knobs  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("knobs", nargs="+", help="NAME (on = True), NAME=VALUE (int), or several joined by commas")
    ap.add_argument("--preset", default="llama-1b")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--prefill-len", type=int, default=256)
    ap.add_argument("--kv-len", type=int, default=384)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prefill", action="store_true", help="time prefill too (slow at batch 64)")
    ap.add_argument("--compile-time", action="store_true", help="the knobs are read when compiling: compile a copy with each on")
    args = ap.parse_args()
    print(environment())
    margs = PRESETS[args.preset]
    model = build_model(margs, "cuda", torch.bfloat16)
    model.setup_kv_cache()

    def compiled(m):
        """(decode step, prefill) of ``m``. Each call gets its own backend object: Dynamo does not
        reuse a compilation made by another backend, so a model copy cannot pick up the graph
        compiled with the knob off (parameters are graph inputs, so the copy alone would not
        force a recompile)."""
        backend_fn = functools.partial(batch_invariant)
        return torch.compile(m.step, backend=backend_fn, dynamic=True), torch.compile(m, backend=backend_fn, dynamic=True)

    # What each compilation rewrote, by the label of the call that compiled it: a compile-time
    # knob whose graph equals the knob-off graph measured nothing (the run prints both).
    label, rewrites = ["off"], collections.defaultdict(collections.Counter)
    real_rewrite = hooks.rewrite_graph

    def recording(gm):
        done = real_rewrite(gm)
        rewrites[label[0]].update(r.original for r in done)
        return done

    hooks.rewrite_graph = recording
    off = compiled(model)
    on_fns = {knob: compiled(copy.deepcopy(model)) if args.compile_time else off for knob in args.knobs}
    with torch.no_grad():
        batches = [int(x) for x in args.batches.split(",")]
        first_batch = batches[0]
        for b in batches:
            tokens, step_args = call_inputs(margs, b, args.prefill_len, args.kv_len)
            phases = [("decode", lambda fns: fns[0](*step_args))] + ([("prefill", lambda fns: fns[1](tokens))] if args.prefill else [])
            for (phase, call), knob in itertools.product(phases, args.knobs):
                knobs_on = knob_values(knob)
                times, outs = {True: [], False: []}, {}
                for _ in range(args.rounds):
                    for on in (True, False):
                        fns = on_fns[knob] if on else off
                        label[0] = knob if on else "off"
                        with kernel_knobs.overridden(**(knobs_on if on else {})):
                            outs[on] = call(fns).clone()
                            times[on].append(median_ms(lambda: call(fns)))
                if args.compile_time and b == first_batch and phase == "decode":
                    only_on, only_off = rewrites[knob] - rewrites["off"], rewrites["off"] - rewrites[knob]
                    print(f"{knob}: rewrites only with it on {dict(only_on)}; only off {dict(only_off)}", flush=True)
                same = torch.equal(outs[True], outs[False])
                ms_on, ms_off = statistics.median(times[True]), statistics.median(times[False])
                print(f"B={b:3d} {phase:8s} {knob}: on {ms_on:8.3f} ms  off {ms_off:8.3f} ms  on/off {ms_on / ms_off:.3f}  same bits: {same}", flush=True)


if __name__ == "__main__":
    main()
