"""Localise a length-invariance failure: one row, right-padded to P tokens vs unpadded (L tokens).

Runs a Hugging Face model (tests/_support.build_hf_model, the GPU test's size) through three
pipelines and prints, for each pad length, whether the unpadded row's logits equal the padded
row's first L positions bitwise:

  inductor   the backend as shipped (our kernels + Inductor for the rest)
  fx-eager   the backend's rewritten aten graph run op by op (our kernels + eager aten): no
             Inductor codegen. If it passes where ``inductor`` fails, Inductor's code is the cause.
  stock      torch.compile with Inductor alone (not invariant; for scale)

In fx-eager mode the first graph node whose output differs (prefix-sliced along the length dim)
is printed, which names the op that breaks length invariance.

Usage: PYTHONPATH=. python tools/diagnose/diagnose_length.py [--model qwen3] [--length 77] [--pads 128,80,78]
"""

from __future__ import annotations

import argparse
import sys
import pathlib

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import inductor_bi  # noqa: E402,F401  (registers the backend)
from inductor_bi import backend  # noqa: E402
from inductor_bi.passes import rewrite_graph  # noqa: E402
from inductor_bi.passes.attention import rewrite_attention_calls  # noqa: E402
from tests._support import HF_GPU_HEAD_DIM, HF_GPU_MOE, HF_GPU_SIZE, build_hf_model  # noqa: E402

SIZE = HF_GPU_SIZE  # the model of tests/gpu/test_hf_gpu.py


def fx_eager_backend(record: list | None):
    """The backend's rewrites without Inductor: every aten op runs eagerly, ours run our kernels."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def fw(gm, example_inputs):
        rewrite_graph(gm)
        gm.recompile()
        if record is None:
            return make_boxed_func(gm)

        def run(*args):
            outs = {}

            class Rec(torch.fx.Interpreter):
                def run_node(self, n):
                    out = super().run_node(n)
                    if isinstance(out, torch.Tensor):
                        outs[n.name] = (str(n.target), out.detach().clone())
                    return out

            res = Rec(gm).run(*args)
            record.append(outs)
            return res

        return make_boxed_func(run)

    inner = aot_autograd(fw_compiler=fw, decompositions=backend.decompositions())

    def compile_(gm, example_inputs):
        rewrite_attention_calls(gm)
        return inner(gm, example_inputs)

    return compile_


def first_difference(padded: dict, unpadded: dict, pad: int, length: int) -> str:
    """The first recorded node (graph order) whose float output, cut to the unpadded length along
    every dim that is ``pad`` long in one run and ``length`` in the other, is not bitwise equal."""
    for name, (target, a) in padded.items():
        if name not in unpadded:
            continue
        b = unpadded[name][1]
        if a.dim() != b.dim():
            continue
        idx = []
        for da, db in zip(a.shape, b.shape):
            if da == db:
                idx.append(slice(None))
            elif da == pad and db == length:
                idx.append(slice(0, length))
            else:
                idx = None
                break
        if idx is None:
            continue
        a_cut = a[tuple(idx)]
        if a_cut.shape != b.shape or a_cut.dtype != b.dtype:
            continue
        if a_cut.is_floating_point() and not torch.equal(a_cut, b):
            # positions along the length dim that differ
            ldims = [i for i, (da, db) in enumerate(zip(a.shape, b.shape)) if da == pad and db == length]
            where = ""
            if ldims:
                d = ldims[0]
                diff = (a_cut != b).float().transpose(0, d).reshape(length, -1).any(1).nonzero().flatten()
                where = f" positions {diff[:8].tolist()}"
            return f"{name} ({target}) shape {tuple(b.shape)}:{where} max|d|={(a_cut.double() - b.double()).abs().max().item():.3g}"
    return "no differing node"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen3")
    ap.add_argument("--length", type=int, default=77)
    ap.add_argument("--pads", default="128,80,78")
    ap.add_argument("--modes", default="inductor,fx-eager,stock")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer, 64-wide model (CPU smoke run)")
    args = ap.parse_args()
    # Stock mode only (the backend owns every matmul): cuBLAS without reduced-precision bf16
    # reductions, the closest stock gets to one order per shape.
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    pads = [int(p) for p in args.pads.split(",")]
    size = dict(SIZE, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                vocab_size=128, intermediate_size=128) if args.tiny else SIZE
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = build_hf_model(args.model, size, head_dim=16 if args.tiny else HF_GPU_HEAD_DIM, moe=HF_GPU_MOE).to(args.device, dtype)
    ids = torch.randint(1, size["vocab_size"], (1, max(pads)), generator=torch.Generator().manual_seed(1)).to(args.device)

    for mode in args.modes.split(","):
        torch._dynamo.reset()
        record = [] if mode == "fx-eager" else None
        be = {"inductor": "batch_invariant", "stock": "inductor", "fx-eager": fx_eager_backend(record)}[mode]
        compiled = torch.compile(model, backend=be, dynamic=True, fullgraph=True)

        def run(p):
            x = ids[:, :p].clone()
            x[:, args.length:] = 0
            mask = torch.zeros_like(x)
            mask[:, : args.length] = 1
            with torch.no_grad():
                return compiled(input_ids=x, attention_mask=mask).logits

        unpadded = run(args.length)
        rec_unpadded = record[-1] if record else None
        for p in pads:
            padded = run(p)
            a, b = padded[:, : args.length], unpadded
            same = torch.equal(a, b)
            line = f"{args.model} {mode:9s} pad {p:4d} vs {args.length}: "
            if same:
                line += "EQUAL"
            else:
                rows = (a != b).any(-1).flatten().nonzero().flatten()
                line += f"DIFFER ({(a != b).float().mean().item():.1%} of logits, max {(a.float() - b.float()).abs().max().item():.3g}, first position {rows[0].item()})"
            print(line, flush=True)
            if record and not same:
                print("   first differing node:", first_difference(record[-1], rec_unpadded, p, args.length), flush=True)


if __name__ == "__main__":
    main()
