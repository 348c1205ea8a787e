"""Where a Hugging Face model's call goes, stock torch.compile vs the backend: per-kernel GPU time
of the rows `python -m benchmarks models` times (the same model, cache and compile), side by side.

    PYTHONPATH=. python tools/diagnose/profile_hf.py --model llama --shape small --mode reduce-overhead \
        --cases decode:1:64,prefill:64:64 [--code-dir OUT]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch._inductor.utils import run_and_get_code

sys.path.insert(0, os.path.dirname(__file__))
from benchmarks.hf_models import MODELS, SHAPES, build_model, compile_forward, filled_cache, rewinder, tokens  # noqa: E402
from profile_e2e import profile_call  # noqa: E402


def kernel_name(name: str) -> str:
    return name[:70]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=MODELS, default="llama")
    ap.add_argument("--shape", choices=SHAPES, default="small")
    ap.add_argument("--mode", choices=("default", "reduce-overhead"), default="reduce-overhead")
    ap.add_argument("--cases", default="prefill:1:64,prefill:64:64,decode:1:64,decode:64:64",
                    help="phase:batch:seq, comma separated, run in this order by one compiled forward per contender")
    ap.add_argument("--top", type=int, default=14)
    ap.add_argument("--code-dir", help="write each contender's generated code here (CONTENDER_PHASE_B.py)")
    args = ap.parse_args()
    device = torch.device("cuda")
    model = build_model(args.model, args.shape, device, torch.bfloat16)
    vocab = model.config.vocab_size
    cases = [tuple(int(v) if i else v for i, v in enumerate(case.split(":"))) for case in args.cases.split(",")]
    mark = torch.compiler.cudagraph_mark_step_begin if args.mode == "reduce-overhead" else (lambda: None)
    tables = {}
    for contender in ("stock", "ours"):
        # one compiled forward for every case, in the given order, as the benchmark runs them
        torch._dynamo.reset()
        f = compile_forward(model, contender, args.mode)
        for phase, batch, seq in cases:
            call = _call(f, model, phase, batch, seq, args.mode, mark, device)
            with torch.no_grad():
                _, codes = run_and_get_code(call)
                if args.code_dir:
                    os.makedirs(args.code_dir, exist_ok=True)
                    with open(os.path.join(args.code_dir, f"{contender}_{phase}_{batch}.py"), "w") as f_out:
                        f_out.write("\n\n# ----- next graph -----\n\n".join(codes))
                tables[(phase, batch, seq), contender] = profile_call(call, named=kernel_name)
    for phase, batch, seq in cases:
        print(f"\n== {args.model} {args.shape} {args.mode} {phase} B={batch} S={seq}")
        for contender in ("stock", "ours"):
            per, wall_us = tables[(phase, batch, seq), contender]
            kernel_us = sum(us for us, _ in per.values())
            launches = sum(n for _, n in per.values())
            print(f"-- {contender}: wall {wall_us:8.1f} us/call, kernels {kernel_us:8.1f} us in {launches:.0f} launches")
            for name, (us, n) in sorted(per.items(), key=lambda kv: -kv[1][0])[: args.top]:
                print(f"   {us:8.1f} us  {n:5.1f}x  {name}")


def _call(f, model, phase: str, batch: int, seq: int, mode: str, mark, device):
    """One call of the compiled forward for the case: a prefill, or one decode step against a
    cache of ``seq`` tokens rewound before each call (inside the timing: both contenders alike)."""
    vocab = model.config.vocab_size
    if phase == "prefill":
        ids = tokens(vocab, (batch, seq), seed=1, device=device)

        def call():
            mark()
            return f(input_ids=ids)

        return call
    cache = filled_cache(model, "static" if mode == "reduce-overhead" else "dynamic", batch, seq, device)
    rewind = rewinder(cache)
    step = tokens(vocab, (batch, 1), seed=2, device=device)

    def call():
        rewind()
        mark()
        return f(input_ids=step, past_key_values=cache, use_cache=True)

    return call

if __name__ == "__main__":
    main()
