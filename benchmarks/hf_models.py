"""Hugging Face causal LMs as users call them: stock torch.compile vs backend="batch_invariant".

Each model is built from its own transformers config (random init, bf16 on CUDA, fp32 on the CPU)
and its ``forward`` compiled the way a user would, ``dynamic=True`` so one compile serves every
batch size and length:

    stock  torch.compile(model.forward, dynamic=True[, mode="reduce-overhead"])
    ours   torch.compile(model.forward, backend="batch_invariant", dynamic=True[, mode=...])

(Dynamo hands ``mode`` to a custom backend as a keyword; inductor_bi/backend.py applies
Inductor's options for it, CUDA graphs for "reduce-overhead".)

Phases, per batch B and length S:
  prefill  forward(input_ids=[B, S]) with the config's defaults (a fresh DynamicCache returned,
           logits at every position), as a plain ``model(ids)`` call computes them;
  decode   forward(input_ids=[B, 1], past_key_values=cache) against a cache holding S tokens
           (filled by the eager model, rewound to S before every call, outside the timing):
           HF's DynamicCache in mode default, StaticCache (max_cache_len S + 1, the cache
           HF's generate compiles with) in mode reduce-overhead; ``--cache`` picks one for both.
  train    one training step's forward + backward: forward(input_ids=[B, S], labels=input_ids)
           with grad on (the training graph, the loss inside it), then loss.backward(); the
           gradients are cleared before every call, outside the timing (no optimizer step).

Time: wall time of the whole call, host included: median over ``--repeats`` calls of
(synchronize; t0; out = f(...); synchronize; t1) after warm-up calls. Compile: each row records
the wall time of the first call at its shapes (the compile it triggered, if any, included), the
Dynamo graphs that call compiled, how many of them are recompiles (a graph beyond the first of
its phase: batch 1 is Dynamo's own 0/1 specialization, so one more graph for B > 1 is expected;
more means a shape was not served by the dynamic graph) and graph breaks. Every contender starts
from cold on-disk compile caches (``--warm-caches`` keeps them). The recompile limit is raised
and a hit made an error, so a contender never falls back to eager code silently.

A contender that raises is recorded in the row (``*_ms: null``, ``error``: the first line) and the
run goes on; after ``--max-errors`` errors one contender's remaining rows in that (model, shape,
mode) are skipped with the first error.

Writes OUT/hf_models.json ({environment, runs, rows, contenders}) and OUT/hf_models.png (speed
ratio stock / ours per row, > 1: ours faster; a 0.9x target line). Rows of an existing
OUT/hf_models.json are merged (same model, shape, phase, batch, seq, mode: replaced), so runs
over different subsets build one file; ``--merge`` folds other runs' JSON files in, without
running anything (one folder per GPU when run side by side).

    python -m benchmarks models --models llama --shapes 1b --modes default --out benchmarks/results

Budget (estimates: llama-1b's cold compile of four graphs took ~95 s per contender in
benchmarks/e2e.py on an H200): one (model, 1b, mode) is ~4-6 graphs per contender, ~250-350 s with
its timings; one (model, small) with both modes ~250 s. All rows are ~55 minutes of one GPU: run
one process per GPU (CUDA_VISIBLE_DEVICES, one --out folder each) and fold them into one file with
--merge, e.g. on 8 GPUs one (model, mode) at 1b per GPU, then one model at small per GPU.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
import inductor_bi  # noqa: E402,F401  (registers backend="batch_invariant" where the package is not pip-installed)
from benchmarks.common import cold_compile_caches, environment, median_wall_ms, merge_rows, write_json  # noqa: E402

MODELS = ("llama", "qwen3", "gpt2", "qwen3_moe")
MODES = ("default", "reduce-overhead")
PHASES = ("prefill", "decode", "train")
CONTENDERS = ("stock", "ours")
JSON_NAME, PNG_NAME = "hf_models.json", "hf_models.png"
ROW_KEY = ("device", "model", "shape", "phase", "batch", "seq", "mode")  # one row per GPU: runs on other GPUs add rows
TARGET = 0.9  # the speed target: ours at >= 0.9x stock

# Sizes shared by the four families; PER_MODEL gives a family its own head layout where its real
# checkpoints differ. "1b" is Llama-3.2-1B's layout with a 32000 vocab (~1.2B parameters), Qwen3
# that of Qwen3-1.7B (16 query / 8 KV heads of 128), GPT-2 multi-head with its 4x MLP, Qwen3-MoE
# 32 experts of 768, top 4 (~0.7B active of ~2.6B). "tiny" is the CPU smoke test's size.
SHAPES = {
    "tiny": dict(hidden=32, layers=1, heads=4, kv_heads=2, head_dim=8, intermediate=64, vocab=96,
                 experts=4, top_k=2, moe_intermediate=32, positions=64),
    "small": dict(hidden=1024, layers=6, heads=16, kv_heads=4, head_dim=64, intermediate=2816, vocab=8192,
                  experts=8, top_k=2, moe_intermediate=512, positions=1024),
    "1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, head_dim=64, intermediate=8192, vocab=32000,
               experts=32, top_k=4, moe_intermediate=768, positions=1024),
}  # fmt: skip
PER_MODEL = {("qwen3", "1b"): dict(heads=16, kv_heads=8, head_dim=128, intermediate=6144)}


def shape_of(model: str, shape: str) -> dict:
    return {**SHAPES[shape], **PER_MODEL.get((model, shape), {})}


def config_of(model: str, shape: str):
    """The family's own config class at ``shape``."""
    import transformers as t

    s = shape_of(model, shape)
    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    llama_like = dict(hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                      num_key_value_heads=s["kv_heads"], head_dim=s["head_dim"], intermediate_size=s["intermediate"],
                      vocab_size=s["vocab"], max_position_embeddings=s["positions"], **ids)  # fmt: skip
    if model == "llama":
        return t.LlamaForCausalLM, t.LlamaConfig(**llama_like)
    if model == "qwen3":
        return t.Qwen3ForCausalLM, t.Qwen3Config(**llama_like)
    if model == "gpt2":
        return t.GPT2LMHeadModel, t.GPT2Config(n_embd=s["hidden"], n_layer=s["layers"], n_head=s["heads"],
                                               vocab_size=s["vocab"], n_positions=s["positions"], **ids)  # fmt: skip
    if model == "qwen3_moe":  # HF's default experts implementation, as a user gets it
        return t.Qwen3MoeForCausalLM, t.Qwen3MoeConfig(**llama_like, num_experts=s["experts"],
                                                       num_experts_per_tok=s["top_k"],
                                                       moe_intermediate_size=s["moe_intermediate"])  # fmt: skip
    raise ValueError(f"unknown model {model!r} (one of {', '.join(MODELS)})")


def build_model(model: str, shape: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Random init (seeded), created on ``device`` in ``dtype`` directly: no fp32 host copy of a
    billion parameters."""
    cls, config = config_of(model, shape)
    torch.manual_seed(0)
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            m = cls(config)
    finally:
        torch.set_default_dtype(saved)
    return m.to(device=device, dtype=dtype).eval()


def compile_forward(model: torch.nn.Module, contender: str, mode: str):
    kwargs = dict(dynamic=True)
    if mode != "default":
        kwargs["mode"] = mode
    if contender == "ours":
        kwargs["backend"] = "batch_invariant"
    return torch.compile(model.forward, **kwargs)


# ---------------------------------------------------------------------------------------------
# Decode: a cache holding S tokens, rewound before every call.
# ---------------------------------------------------------------------------------------------


def tokens(vocab: int, shape: tuple, seed: int, device) -> torch.Tensor:
    """Random token ids (3..vocab: 0-2 are pad / bos / eos), the same for both contenders: an MoE's
    routing, hence its work per expert, follows the tokens."""
    return torch.randint(3, vocab, shape, generator=torch.Generator().manual_seed(seed)).to(device)


def cache_kind(mode: str, choice: str) -> str:
    return choice if choice != "auto" else ("static" if mode == "reduce-overhead" else "dynamic")


def filled_cache(model, kind: str, batch: int, seq: int, device):
    """A cache holding ``seq`` random tokens per row, filled by the eager model."""
    from transformers import DynamicCache, StaticCache

    cache = DynamicCache(config=model.config) if kind == "dynamic" else StaticCache(config=model.config, max_cache_len=seq + 1)
    ids = tokens(model.config.vocab_size, (batch, seq), seed=seq * 1000 + batch + 2, device=device)
    with torch.no_grad():
        model(input_ids=ids, past_key_values=cache, use_cache=True)
    return cache


def rewinder(cache):
    """A function that puts ``cache`` back to its state now. A dynamic layer's update replaces
    its tensors (torch.cat), so the saved tensors are reassigned; a static layer writes slot S in
    place (the same slot every call) and advances a length tensor, which is copied back in place
    (its address is static: a CUDA graph reads it)."""
    saved = []
    for layer in cache.layers:
        length = getattr(layer, "cumulative_length", None)
        saved.append((layer, layer.keys, layer.values, length.clone() if isinstance(length, torch.Tensor) else length))

    def rewind():
        for layer, keys, values, length in saved:
            layer.keys, layer.values = keys, values
            if isinstance(length, torch.Tensor):
                layer.cumulative_length.copy_(length)
            elif length is not None:
                layer.cumulative_length = length

    return rewind


# ---------------------------------------------------------------------------------------------
# One contender over the selected rows of one (model, shape, mode).
# ---------------------------------------------------------------------------------------------


def _graph_counts() -> tuple[int, int, int]:
    """(graphs compiled, graph breaks, graphs reduce-overhead ran without CUDA graphs) so far."""
    counters = torch._dynamo.utils.counters
    return (int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values())),
            int(counters["inductor"]["cudagraph_skips"]))  # fmt: skip


def first_line(err: BaseException) -> str:
    """The error's first line; where that only announces another ("backend='...' raised:"), the
    announced one's too."""
    lines = [line.strip() for line in f"{type(err).__name__}: {err}".splitlines() if line.strip()]
    text = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return text[:400]


def run_contender(model, contender: str, mode: str, cases: list[tuple], args, caches: dict, device) -> tuple[dict, dict]:
    """Compile ``model.forward`` once for ``contender`` and run every case (phase, seq, batch):
    first call (compile), warm-up, timed calls. Returns ({case: measurement}, summary)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    if not args.warm_caches:
        cold_compile_caches(f"{contender}_{mode}")
    f = compile_forward(model, contender, mode)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    mark_step = torch.compiler.cudagraph_mark_step_begin if mode == "reduce-overhead" else (lambda: None)
    results, errors, phase_graphs = {}, [], {}
    summary = dict(first_call_s=None, compile_window_s=0.0, graphs=0, graph_breaks=0, errors=0)
    for case in cases:
        phase, seq, batch = case
        if len(errors) >= args.max_errors:
            results[case] = dict(ms=None, error=f"skipped after {len(errors)} errors; first: {errors[0]}")
            continue
        vocab = model.config.vocab_size
        try:
            if phase == "prefill":
                ids = tokens(vocab, (batch, seq), seed=seq * 1000 + batch, device=device)

                def call():
                    return f(input_ids=ids)

                reset = None
            elif phase == "train":
                ids = tokens(vocab, (batch, seq), seed=seq * 1000 + batch + 2, device=device)

                def call():
                    loss = f(input_ids=ids, labels=ids).loss
                    loss.backward()
                    return loss

                reset = functools.partial(model.zero_grad, set_to_none=True)
            else:
                kind = cache_kind(mode, args.cache)
                key = (kind, batch, seq)
                if key not in caches:  # shared by the contenders: the state to rewind to is taken now
                    cache = filled_cache(model, kind, batch, seq, device)
                    caches[key] = cache, rewinder(cache)
                cache, reset = caches[key]
                step = tokens(vocab, (batch, 1), seed=seq * 1000 + batch + 1, device=device)

                def call():
                    return f(input_ids=step, past_key_values=cache, use_cache=True)

            def setup():
                if reset is not None:
                    reset()
                mark_step()

            with torch.set_grad_enabled(phase == "train"):
                graphs0, breaks0, skips0 = _graph_counts()
                setup()
                sync()
                t0 = time.perf_counter()
                out = call()
                sync()
                first_s = time.perf_counter() - t0
                del out
                ms = median_wall_ms(call, args.repeats, warmup=args.warmup, setup=setup, sync=sync)
                graphs1, breaks1, skips1 = _graph_counts()  # after the warm-up: CUDA graphs record there
            graphs = graphs1 - graphs0
            recompiles = max(0, graphs - (0 if phase in phase_graphs else 1))
            phase_graphs[phase] = phase_graphs.get(phase, 0) + graphs
            results[case] = dict(ms=ms, compile_s=first_s, graphs=graphs, recompiles=recompiles, graph_breaks=breaks1 - breaks0,
                                 cudagraph_skips=skips1 - skips0)  # fmt: skip
            summary["first_call_s"] = summary["first_call_s"] if summary["first_call_s"] is not None else first_s
            summary["compile_window_s"] += first_s
            summary["graphs"] += graphs
            summary["graph_breaks"] += breaks1 - breaks0
            skipped = f", {skips1 - skips0} without CUDA graphs" if skips1 > skips0 else ""
            print(f"  {contender:5s} {phase:7s} B={batch:3d} S={seq:4d}  {ms:9.3f} ms   first call {first_s:7.2f} s, "
                  f"{graphs} graph(s), {recompiles} recompile(s){skipped}", flush=True)  # fmt: skip
        except Exception as err:  # recorded in the row; the run goes on
            errors.append(first_line(err))
            results[case] = dict(ms=None, error=errors[-1])
            print(f"  {contender:5s} {phase:7s} B={batch:3d} S={seq:4d}  ERROR {errors[-1]}", flush=True)
            if args.traceback:
                import traceback

                traceback.print_exc()
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    summary["errors"] = len(errors)
    if errors:
        summary["first_error"] = errors[0]
    del f
    torch._dynamo.reset()
    gc.collect()
    return results, summary


def run_model(name: str, shape: str, args, device, dtype) -> tuple[list[dict], list[dict]]:
    print(f"== {name} {shape} ({dtype}, {device})", flush=True)
    t0 = time.perf_counter()
    model = build_model(name, shape, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    print(f"   {params / 1e6:.1f} M parameters, built in {time.perf_counter() - t0:.1f} s", flush=True)
    cases = [(phase, seq, batch) for phase in args.phases for seq in args.seqs for batch in args.batches]
    rows, contenders = [], []
    for mode in args.modes:
        caches = {}
        measured = {}
        for contender in CONTENDERS:
            print(f"-- {name} {shape} mode={mode} {contender}", flush=True)
            measured[contender], summary = run_contender(model, contender, mode, cases, args, caches, device)
            contenders.append(dict(model=name, shape=shape, mode=mode, contender=contender, **summary))
        del caches
        for case in cases:
            phase, seq, batch = case
            s, o = measured["stock"][case], measured["ours"][case]
            row = dict(model=name, shape=shape, phase=phase, batch=batch, seq=seq, mode=mode,
                       stock_ms=s["ms"], ours_ms=o["ms"],
                       ratio=s["ms"] / o["ms"] if s["ms"] is not None and o["ms"] is not None else None,
                       cache=cache_kind(mode, args.cache) if phase == "decode" else None, dtype=str(dtype).removeprefix("torch."),
                       params_m=round(params / 1e6, 1), device=_device_name(device))  # fmt: skip
            for who, m in (("stock", s), ("ours", o)):
                for k in ("compile_s", "graphs", "recompiles", "graph_breaks", "cudagraph_skips"):
                    row[f"{who}_{k}"] = m.get(k)
            errors = [f"{who}: {m['error']}" for who, m in (("stock", s), ("ours", o)) if m.get("error")]
            if errors:
                row["error"] = "; ".join(errors)
            rows.append(row)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows, contenders


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


# ---------------------------------------------------------------------------------------------
# Output: merge into OUT/hf_models.json, draw OUT/hf_models.png.
# ---------------------------------------------------------------------------------------------


def row_key(row: dict) -> tuple:
    return tuple(row.get(k) for k in ROW_KEY)


def contender_key(entry: dict) -> tuple:
    return tuple(entry[k] for k in ("model", "shape", "mode", "contender"))


def merge_docs(old: dict, new: dict) -> dict:
    """Rows and contenders of ``new`` replace ``old``'s by key, runs are appended; ``environment``
    is the newest run's (each row names its device)."""
    return dict(
        environment=new.get("environment", old.get("environment")),
        runs=old.get("runs", []) + new.get("runs", []),
        rows=merge_rows(old.get("rows", []), new.get("rows", []), row_key),
        contenders=merge_rows(old.get("contenders", []), new.get("contenders", []), contender_key),
    )


def plot(result: dict, path: str) -> None:
    try:
        import matplotlib
    except ImportError:  # the "bench" extra; the JSON is the result
        print(f"matplotlib is not installed (pip install matplotlib): {path} not drawn")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    groups = sorted({(r["model"], r["shape"]) for r in rows}, key=lambda g: (_index(MODELS, g[0]), _index(list(SHAPES), g[1])))
    if not groups:
        return
    ncols = min(2, len(groups))
    nrows = -(-len(groups) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(8 * ncols, 3.6 * nrows), squeeze=False)
    colors = {"default": "tab:blue", "reduce-overhead": "tab:orange"}
    for ax, (model, shape) in zip(axes.flat, groups):
        mine = [r for r in rows if r["model"] == model and r["shape"] == shape]
        cases = sorted({(r["phase"], r["seq"], r["batch"]) for r in mine}, key=lambda c: (PHASES.index(c[0]), c[1], c[2]))
        modes = [m for m in MODES if any(r["mode"] == m for r in mine)]
        width = 0.8 / max(1, len(modes))
        for i, mode in enumerate(modes):
            by_case = {(r["phase"], r["seq"], r["batch"]): r for r in mine if r["mode"] == mode}
            xs = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(cases))]
            ratios = [by_case[c]["ratio"] if c in by_case and by_case[c]["ratio"] is not None else 0.0 for c in cases]
            bars = ax.bar(xs, ratios, width=width, color=colors.get(mode), label=mode)
            labels = ["err" if c in by_case and by_case[c]["ratio"] is None else ("" if c not in by_case else f"{by_case[c]['ratio']:.2f}")
                      for c in cases]  # fmt: skip
            ax.bar_label(bars, labels=labels, fontsize=6, rotation=90, padding=2)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.axhline(TARGET, color="tab:red", lw=1, ls="--", label=f"target {TARGET}x")
        ax.set_xticks(range(len(cases)), [f"{p[:3]} B{b} S{s}" for p, s, b in cases], rotation=60, fontsize=7)
        top = max([r["ratio"] for r in mine if r["ratio"] is not None] + [1.0])
        ax.set_ylim(0, top * 1.18)
        ax.set_ylabel("stock ms / ours ms")
        ax.set_title(f"{model} {shape} ({mine[0].get('params_m', '?')} M params)", fontsize=10)
        ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    env = result["environment"]
    fig.suptitle(f"HF models, wall time per call (> 1: batch_invariant faster); {env.get('device')}, torch {env.get('torch')}, "
                 f"triton {env.get('triton')}, transformers {env.get('transformers')}, {env.get('date', '')[:10]}", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def _index(names, name) -> int:
    return list(names).index(name) if name in names else len(names)


def _csv(value: str, allowed=None, cast=str) -> list:
    items = [cast(v) for v in value.split(",") if v]
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not among {list(allowed)}")
    return items


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=lambda v: _csv(v, MODELS), default=list(MODELS))
    ap.add_argument("--shapes", type=lambda v: _csv(v, SHAPES), default=["small", "1b"])
    ap.add_argument("--modes", type=lambda v: _csv(v, MODES), default=list(MODES))
    ap.add_argument("--phases", type=lambda v: _csv(v, PHASES), default=list(PHASES))
    ap.add_argument("--batches", type=lambda v: _csv(v, cast=int), default=[1, 8, 64])
    ap.add_argument("--seqs", type=lambda v: _csv(v, cast=int), default=[64, 512], help="prefill length / decode cache length")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per row (the median is kept)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls after the first (CUDA graphs record on these)")
    ap.add_argument("--cache", choices=("auto", "dynamic", "static"), default="auto",
                    help="decode cache: auto = DynamicCache in mode default, StaticCache in reduce-overhead")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=("auto", "bfloat16", "float16", "float32"), default="auto",
                    help="auto: bfloat16 on CUDA, float32 on the CPU (the Triton interpreter has no bf16)")
    ap.add_argument("--max-errors", type=int, default=2, help="errors before a contender's remaining rows are skipped")
    ap.add_argument("--warm-caches", action="store_true", help="keep the on-disk compile caches (compile times then time loading)")
    ap.add_argument("--traceback", action="store_true", help="print each error's traceback")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--merge", nargs="+", metavar="JSON_OR_DIR", help="merge these runs' hf_models.json into OUT's and redraw; runs nothing")
    ap.add_argument("--plot-only", action="store_true", help="redraw OUT/hf_models.png from OUT/hf_models.json")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    path = os.path.join(args.out, JSON_NAME)
    if args.plot_only or args.merge:
        doc = _load(path)
        for other in args.merge or []:
            doc = merge_docs(doc, _load(os.path.join(other, JSON_NAME) if os.path.isdir(other) else other))
        if not doc.get("rows"):
            raise SystemExit(f"nothing to draw: no rows in {path} or the --merge files")
        if args.merge:
            write_json(path, doc)
        plot(doc, os.path.join(args.out, PNG_NAME))
        return doc
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype != "auto" else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    # A shape no dynamic graph serves recompiles; past the limit Dynamo would run the model eagerly
    # without a word, and the row would time eager code. Count them instead, and fail at the limit.
    with torch._dynamo.config.patch(recompile_limit=64, fail_on_recompile_limit_hit=True):
        return run(args, path, device, dtype)


def run(args, path: str, device: torch.device, dtype: torch.dtype) -> dict:
    import transformers

    env = dict(environment(), transformers=transformers.__version__, device=_device_name(device), dtype=str(dtype).removeprefix("torch."))
    run_args = {k: v for k, v in vars(args).items() if k not in ("merge", "plot_only")}
    doc = merge_docs(_load(path), dict(environment=env, runs=[dict(environment=env, args=run_args)]))
    rows = []
    for name in args.models:
        for shape in args.shapes:
            r, c = run_model(name, shape, args, device, dtype)
            rows += r
            # written after each model: a run cut off by its time limit keeps what it finished
            doc = merge_docs(doc, dict(rows=r, contenders=c))
            write_json(path, doc)
    for row in rows:
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "  -  "
        print(f"{row['model']:9s} {row['shape']:5s} {row['mode']:15s} {row['phase']:7s} B={row['batch']:3d} S={row['seq']:4d}  "
              f"stock {_ms(row['stock_ms'])}  ours {_ms(row['ours_ms'])}  {ratio}" + (f"  [{row['error']}]" if row.get("error") else ""))  # fmt: skip
    plot(doc, os.path.join(args.out, PNG_NAME))
    return doc


def _load(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _ms(value) -> str:
    return f"{value:9.3f} ms" if value is not None else "   error   "


if __name__ == "__main__":
    main()
