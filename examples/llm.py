"""A Llama-style decoder served with dynamic batching: is a request's output its own?

The experiment: one prompt is submitted N times to a small serving engine, each time arriving at a
random step among random companion requests. Every engine step batches whatever is running
(prefill chunks of new requests mixed with decode tokens of old ones), so each submission's tokens
are computed in different batch compositions. Greedy decoding should then give N identical
completions -- and, on the stricter measure, N bitwise identical logits sequences. With stock
torch.compile the logits change with the batch; with ``backend="batch_invariant"`` they cannot.
The same run checks that the serving log-probs are exactly the ones a trainer computes in one
forward over the full sequences (``inductor_bi.onpolicy``). On the CPU the tiny random model is made
undecided at the target's first generated tokens (``plant_near_ties``, ``--near-ties``): its logits
move with the batch by an ulp or two, which flips a token only where two tokens nearly tie, as they
do somewhere in a trained model's long generation.

    python examples/llm.py                                   # tiny model on CPU, a few minutes
    python examples/llm.py --device cuda --preset llama-1b --requests 500 --out results.json

The model (RMSNorm, rotary embeddings, GQA attention through F.scaled_dot_product_attention,
SwiGLU MLP, a static KV cache) is examples/model.py; this file is the engine and the experiment.
Parameter names follow Hugging Face's Llama, so ``--checkpoint`` can load a LlamaForCausalLM state
dict whose config matches the flags (Llama 3's rope scaling is not implemented).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

try:
    import inductor_bi  # noqa: F401  (registers the backend when run from a source tree)
except ImportError:  # run from the repository root without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import inductor_bi  # noqa: F401
from inductor_bi.onpolicy import sampler_trainer_mismatch, token_logprobs

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/model.py, however this file is loaded
from model import PRESETS, ModelArgs, Transformer, build_model  # noqa: E402  (the model: examples/model.py)

# ---------------------------------------------------------------------------------------------
# Near-ties: the tiny random model made undecided where a trained one would be
# ---------------------------------------------------------------------------------------------


@dataclass
class NearTie:
    generated: list[int]  # the tokens generated before it (one branch of the ones before)
    tokens: tuple[int, int]  # the two candidates for the next token, lower id first
    margin_before: float  # their logits' distance before, in exact (float64) arithmetic
    margin_ulps: float  # logit(higher id) - logit(lower id) now, in exact arithmetic, in ulps
    ulp: float  # of the logits' dtype at the top logit


@torch.no_grad()
def plant_near_ties(model: Transformer, prompt: list[int], steps: int) -> list[NearTie]:
    """Make the model undecided about each of the first ``steps`` tokens it generates after
    ``prompt``, whichever of the two candidates it picked before (2^steps - 1 near-ties).

    At each of those points the runner-up token's output row is moved until its logit and the top
    one's are half an ulp apart in exact arithmetic, the higher id ahead: argmax gives an exact tie
    to the lower id, so half an ulp sits on the decision boundary and a change in the last bit of
    either logit, as a batch-dependent reduction order makes, can pick the other token. Each move
    is orthogonal to the hidden states of every other point, so no other logit there changes;
    only the runner-up rows change, and the token embeddings not at all.

    A trained LLM meets near-ties somewhere in a long generation. A small random model's top two
    logits lie ~10^5 times further apart than a batch moves them, so no token of its would flip."""
    if 2**steps - 1 > model.args.dim:
        raise ValueError(f"near-ties over {steps} steps are {2**steps - 1} points, more than the hidden size "
                         f"({model.args.dim}) can keep apart: ask for at most {(model.args.dim + 1).bit_length() - 1} steps")
    exact = copy.deepcopy(model).double()  # the same weights; everything in float64
    device = model.lm_head.weight.device
    hidden = []
    exact.lm_head.register_forward_hook(lambda _m, inputs, _out: hidden.append(inputs[0][:, -1]))
    w = exact.lm_head.weight
    points = []  # (generated, h, top, runner-up)
    level = [[]]
    for _ in range(steps):  # every branch of the points before, one forward per step
        hidden.clear()
        exact(torch.tensor([prompt + g for g in level], device=device))
        nxt = []
        for g, h in zip(level, hidden[0]):
            top, runner_up = (w @ h).topk(2).indices.tolist()
            points.append((g, h, top, runner_up))
            nxt += [g + [top], g + [runner_up]]
        level = nxt
    hs = torch.stack([h for _, h, _, _ in points])  # [points, dim]
    dtype = model.lm_head.weight.dtype
    ulps, moves = [], {}
    for i, (_, h, top, runner_up) in enumerate(points):
        logits = w @ h
        ulp = torch.finfo(dtype).eps * 2.0 ** torch.floor(torch.log2(logits[top].abs())).item()
        want = logits[top] + (0.5 * ulp if runner_up > top else -0.5 * ulp)
        moves.setdefault(runner_up, torch.zeros(len(points), dtype=torch.float64, device=device))[i] = want - logits[runner_up]
        ulps.append(ulp)
    for row, change in moves.items():
        # The smallest change of the row that moves its logit at its points and at no other.
        delta = hs.T @ torch.linalg.solve(hs @ hs.T, change)
        model.lm_head.weight[row] = (w[row] + delta).to(dtype)
    now = model.lm_head.weight.double()
    ties = []
    for (g, h, top, runner_up), ulp in zip(points, ulps):
        before, after = w @ h, now @ h
        lo, hi = sorted((top, runner_up))
        ties.append(NearTie(g, (lo, hi), (before[top] - before[runner_up]).item(), ((after[hi] - after[lo]) / ulp).item(), ulp))
    return ties


# ---------------------------------------------------------------------------------------------
# Serving engine: dynamic batching, chunked prefill, greedy decoding or seeded sampling
# ---------------------------------------------------------------------------------------------


def gumbel_noise(seed: int, position: int, vocab_size: int, device) -> torch.Tensor:
    """Gumbel(0, 1) noise [vocab_size] (float64) for the token at ``position`` of the request
    seeded ``seed`` (0 <= seed < 2^43): argmax(logits + noise) samples from softmax(logits) (the
    Gumbel-max trick). A pure function of (seed, position, vocab id): its own generator, drawn and
    transformed for this one row alone, so neither its values nor the rounding of its logs (a CPU
    rounds a vectorized block and a scalar tail differently) can depend on the batch."""
    if not (0 <= seed < 2**43 and 0 <= position < 2**20):
        raise ValueError(f"gumbel_noise: need 0 <= seed < 2^43 and 0 <= position < 2^20, got {seed}, {position}")
    generator = torch.Generator(device=device).manual_seed(seed << 20 | position)
    u = torch.rand(vocab_size, generator=generator, device=device, dtype=torch.float64)
    return -torch.log(-torch.log(u))


@dataclass
class Request:
    rid: int
    prompt: list[int]
    max_new_tokens: int
    arrival: int  # the engine step at which the request arrives
    is_target: bool = False
    record_logits: bool = False
    seed: int = 0  # its sampling noise's seed (EngineConfig.sample)
    # Filled in by the engine.
    slot: int = -1
    prefilled: int = 0  # prompt tokens whose keys/values are in the cache
    generated: list[int] = field(default_factory=list)
    logprobs: list[torch.Tensor] = field(default_factory=list)  # fp32, one per generated token
    logits: list[torch.Tensor] = field(default_factory=list)  # the row each token was picked from
    step_sizes: list[int] = field(default_factory=list)  # T of every step this request was in
    prefill_chunks: list[int] = field(default_factory=list)  # how its prompt was cut

    @property
    def done(self) -> bool:
        return len(self.generated) >= self.max_new_tokens

    @property
    def sequence(self) -> list[int]:
        return self.prompt + self.generated


@dataclass
class EngineConfig:
    max_tokens_per_step: int = 24  # token budget of one forward (decode tokens + prefill chunks)
    max_prefill_chunk: int = 12  # a prompt longer than its chunk is prefilled over several steps
    kv_len_multiple: int = 16  # attend over cache positions [0, kv_len), kv_len rounded up to this
    seed: int = 0  # chunk sizes are drawn at random, so one prompt is chunked differently each time
    sample: bool = False  # False: greedy. True: sample from softmax(logits), noise from each request's seed


class Engine:
    """Each step: admit arrived requests into free cache slots, then batch one decode token per
    running request plus prefill chunks (random sizes, within the token budget), run one forward
    over the T flattened tokens, and pick the next token for every row that ends its request's
    known tokens: greedily, or (``config.sample``) by Gumbel-max with the request's own noise.

    The schedule depends on the arrivals, lengths and the engine's seed only (there is no EOS),
    never on the tokens generated: every mode serves the same batches, step for step."""

    def __init__(self, step_fn, logprobs_fn, args: ModelArgs, device, config: EngineConfig):
        self.step_fn, self.logprobs_fn = step_fn, logprobs_fn
        self.args, self.device, self.config = args, torch.device(device), config
        self.rng = random.Random(config.seed)
        self.stats = {"steps": 0, "tokens": 0, "mixed_steps": 0, "step_sizes": [], "step_seconds": []}

    def run(self, requests: list[Request]) -> list[Request]:
        waiting = sorted(requests, key=lambda r: (r.arrival, r.rid))
        for r in waiting:
            if not r.prompt or r.max_new_tokens < 1:
                raise ValueError(f"request {r.rid} needs a prompt and max_new_tokens >= 1")
            if len(r.prompt) + r.max_new_tokens - 1 > self.args.max_seq_len:
                raise ValueError(f"request {r.rid} needs more than max_seq_len={self.args.max_seq_len} positions")
        running: list[Request] = []
        free_slots = list(range(self.args.max_batch))
        now = 0
        while waiting or running:
            if not running and waiting[0].arrival > now:
                now = waiting[0].arrival  # idle until the next request arrives
            while waiting and waiting[0].arrival <= now and free_slots:
                request = waiting.pop(0)
                request.slot = free_slots.pop(0)
                running.append(request)
            self._step(running)
            for request in [r for r in running if r.done]:
                running.remove(request)
                free_slots.append(request.slot)
            now += 1
        return requests

    def _schedule(self, running: list[Request]) -> list[tuple[Request, list[int], int]]:
        """(request, tokens, first position) per request in this step: decode tokens first (one
        per request past its prompt), then prefill chunks while the token budget lasts."""
        budget = self.config.max_tokens_per_step
        work = []
        for r in running:
            if r.prefilled == len(r.prompt) and budget > 0:
                work.append((r, [r.generated[-1]], len(r.sequence) - 1))
                budget -= 1
        for r in running:
            remaining = len(r.prompt) - r.prefilled
            if remaining > 0 and budget > 0:
                chunk = min(remaining, budget, self.rng.randint(1, self.config.max_prefill_chunk))
                work.append((r, r.prompt[r.prefilled : r.prefilled + chunk], r.prefilled))
                budget -= chunk
        return work

    @torch.no_grad()
    def _step(self, running: list[Request]) -> None:
        work = self._schedule(running)
        tokens, slots, positions = [], [], []
        for r, toks, start in work:
            tokens += toks
            slots += [r.slot] * len(toks)
            positions += range(start, start + len(toks))
        n = len(tokens)
        multiple = self.config.kv_len_multiple
        kv_len = min(self.args.max_seq_len, -(-(max(positions) + 1) // multiple) * multiple)

        def as_tensor(xs):
            return torch.tensor(xs, dtype=torch.long, device=self.device)

        t0 = time.perf_counter()
        logits = self.step_fn(as_tensor(tokens), as_tensor(slots), as_tensor(positions), kv_len)
        next_tokens = logits.argmax(-1)  # greedy (temperature 0); ties pick the lowest id
        if self.config.sample:
            next_tokens = self._sample(work, logits, next_tokens)
        logprobs = self.logprobs_fn(logits, next_tokens)
        next_tokens_host = next_tokens.tolist()  # waits for the GPU
        self.stats["step_seconds"].append(time.perf_counter() - t0)

        self.stats["steps"] += 1
        self.stats["tokens"] += n
        self.stats["step_sizes"].append(n)
        self.stats["mixed_steps"] += any(r.prefilled == len(r.prompt) for r, _, _ in work) and any(
            r.prefilled < len(r.prompt) for r, _, _ in work
        )
        row = 0
        for r, toks, start in work:
            row += len(toks)
            r.step_sizes.append(n)
            if r.prefilled < len(r.prompt):
                r.prefilled += len(toks)
                r.prefill_chunks.append(len(toks))
                if r.prefilled < len(r.prompt):
                    continue  # mid-prompt chunk: no token to pick yet
            last = row - 1  # the row of this request's newest token predicts its next one
            r.generated.append(next_tokens_host[last])
            r.logprobs.append(logprobs[last].clone())
            if r.record_logits:
                r.logits.append(logits[last].clone())

    def _sample(self, work, logits, next_tokens):
        """Gumbel-max at the rows that pick a token (a decode token, a prompt's last chunk), each with
        noise for (its request's seed, the position of the token it picks)."""
        rows, noise, row = [], [], 0
        for r, toks, start in work:
            row += len(toks)
            if r.prefilled + len(toks) >= len(r.prompt):
                rows.append(row - 1)
                noise.append(gumbel_noise(r.seed, start + len(toks), logits.shape[-1], logits.device))
        if not rows:
            return next_tokens  # only mid-prompt chunks: nothing to pick
        rows = torch.tensor(rows, device=logits.device)
        next_tokens = next_tokens.clone()
        next_tokens[rows] = (logits[rows].double() + torch.stack(noise)).argmax(-1)  # adds: exact, any batch
        return next_tokens


# ---------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------


@dataclass
class Workload:
    runs: int = 8  # submissions of the target prompt
    requests: int = 8  # random companion requests
    target_prompt_len: int = 16
    prompt_len: tuple[int, int] = (4, 20)  # companions' prompt lengths (inclusive range)
    max_new_tokens: tuple[int, int] = (4, 10)  # companions' generation lengths
    target_new_tokens: int = 8
    seed: int = 0

    def build(self, vocab_size: int, max_batch: int) -> list[Request]:
        """The target prompt ``runs`` times among ``requests`` random companions, all arriving at
        random steps over a window sized so the engine stays about full."""
        rng = random.Random(self.seed)
        target = [rng.randrange(vocab_size) for _ in range(self.target_prompt_len)]
        total = self.runs + self.requests
        mean_new = (self.max_new_tokens[0] + self.max_new_tokens[1]) / 2
        window = max(1, int(total * mean_new / max_batch))
        out = []
        for i in range(total):
            is_target = i < self.runs
            if is_target:
                prompt, new = list(target), self.target_new_tokens
            else:
                prompt = [rng.randrange(vocab_size) for _ in range(rng.randint(*self.prompt_len))]
                new = rng.randint(*self.max_new_tokens)
            out.append(Request(i, prompt, new, rng.randint(0, window), is_target, record_logits=is_target))
        return out


MODES = ("stock", "batch_invariant")


def compile_for(mode: str, fn, strict: bool = True):
    """``fn`` compiled as ``mode`` says (``eager``: as it is, a reference for debugging);
    ``strict=False`` makes the backend warn instead of refusing an op it cannot make invariant."""
    if mode == "eager":
        return fn
    if mode == "stock":
        return torch.compile(fn, dynamic=True)
    if mode == "batch_invariant":
        return torch.compile(fn, backend="batch_invariant", dynamic=True, options={"strict": strict})
    raise ValueError(f"unknown mode {mode!r}; expected one of {('eager',) + MODES}")


@dataclass
class CompiledModel:
    """The three functions the experiment runs, compiled for one mode."""

    mode: str
    step: Callable  # the engine's forward: Transformer.step
    forward: Callable  # the trainer's forward: Transformer.forward
    logprobs: Callable  # (logits, tokens) -> log-probs, on both sides


def compile_model(mode: str, model: Transformer) -> CompiledModel:
    return CompiledModel(mode, compile_for(mode, model.step), compile_for(mode, model), compile_for(mode, token_logprobs))


def serve(compiled: CompiledModel, model: Transformer, workload: Workload, engine_config: EngineConfig, device):
    """Run the workload through a fresh engine (and a clean cache); returns (requests, engine)."""
    model.setup_kv_cache()
    engine = Engine(compiled.step, compiled.logprobs, model.args, device, engine_config)
    requests = workload.build(model.args.vocab_size, model.args.max_batch)
    engine.run(requests)
    return requests, engine


def compare_target_runs(requests: list[Request]) -> dict:
    """Unique completions of the target prompt, and the runs whose logits differ from run 0's at
    any generated step (random weights give wide margins, so tokens rarely flip: logits cannot
    hide a difference)."""
    targets = [r for r in requests if r.is_target]
    completions = [tuple(r.generated) for r in targets]
    first_diff_step = []  # per run: the first generated step whose logits differ from run 0's
    for r in targets:
        diff = [i for i, (a, b) in enumerate(zip(targets[0].logits, r.logits)) if not torch.equal(a, b)]
        first_diff_step.append(diff[0] if diff else None)
    return {
        "runs": len(targets),
        "unique_completions": len(set(completions)),
        "logits_differing_runs": sum(step is not None for step in first_diff_step),
        "first_differing_step_per_run": first_diff_step,
        "distinct_batch_histories": len({tuple(r.step_sizes) for r in targets}),
        "completion_0": list(completions[0]),
    }


def check_onpolicy(compiled: CompiledModel, requests: list[Request], device):
    """The trainer scores every served sequence (prompt + completion) in one forward per batch of
    4 shuffled sequences: batched nothing like the engine's steps."""
    return sampler_trainer_mismatch(
        compiled.forward,
        [torch.tensor(r.sequence, device=device) for r in requests],
        [torch.stack(r.logprobs) for r in requests],
        batch_size=4,
        shuffle_seed=1,
        logprobs_fn=compiled.logprobs,
    )


def run_mode(mode: str, model: Transformer, workload: Workload, engine_config: EngineConfig, device) -> dict:
    """Compile for ``mode``, serve the workload, compare the target's runs, check on-policy."""
    torch._dynamo.reset()
    compiled = compile_model(mode, model)
    t0 = time.perf_counter()
    requests, engine = serve(compiled, model, workload, engine_config, device)
    serve_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = check_onpolicy(compiled, requests, device)
    check_s = time.perf_counter() - t0
    sizes = engine.stats["step_sizes"]
    return {
        "mode": mode,
        **compare_target_runs(requests),
        "onpolicy": report.as_dict(),
        "engine": {
            "requests": len(requests),
            "steps": engine.stats["steps"],
            "tokens": engine.stats["tokens"],
            "mixed_prefill_decode_steps": engine.stats["mixed_steps"],
            "step_size_min": min(sizes),
            "step_size_mean": round(sum(sizes) / len(sizes), 2),
            "step_size_max": max(sizes),
            "chunked_prompts": sum(len(r.prefill_chunks) > 1 for r in requests),
        },
        "serve_seconds": round(serve_s, 2),
        "onpolicy_seconds": round(check_s, 2),
    }


def print_table(results: list[dict]) -> None:
    header = f"{'mode':18s}{'runs':>6s}{'unique completions':>20s}{'runs w/ differing logits':>26s}{'on-policy tokens differing':>28s}"
    print(header)
    print("-" * len(header))
    for r in results:
        op = r["onpolicy"]
        print(
            f"{r['mode']:18s}{r['runs']:6d}{r['unique_completions']:20d}{r['logits_differing_runs']:26d}"
            f"{op['num_differing']:>14d} / {op['num_tokens']:<11d}"
        )


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--preset", default=None, choices=sorted(PRESETS), help="model shape (default: tiny on CPU, llama-1b on CUDA)")
    ap.add_argument("--dim", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--kv-heads", type=int)
    ap.add_argument("--ffn-dim", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--max-seq-len", type=int)
    ap.add_argument("--slots", type=int, help="KV cache slots (requests running at once)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--checkpoint", help="a state dict for the model (HF Llama names accepted)")
    ap.add_argument("--runs", type=int, default=8, help="submissions of the target prompt")
    ap.add_argument("--requests", type=int, default=None, help="random companion requests")
    ap.add_argument("--max-tokens-per-step", type=int)
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: stock, batch_invariant, eager")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--near-ties", type=int, default=None, metavar="STEPS",
                    help="make the model undecided at each of the target's first STEPS generated tokens "
                         "(plant_near_ties; default: 4 for the tiny random model, 0 otherwise)")
    ap.add_argument("--out", help="write the results as JSON here")
    return ap.parse_args(argv)


def config_from_args(a):
    """(ModelArgs, Workload, EngineConfig, dtype) from the command line."""
    preset = a.preset or ("tiny" if a.device == "cpu" else "llama-1b")
    args = ModelArgs(**asdict(PRESETS[preset]))
    for flag, name in [("dim", "dim"), ("layers", "n_layers"), ("heads", "n_heads"), ("kv_heads", "n_kv_heads"),
                       ("ffn_dim", "ffn_dim"), ("vocab", "vocab_size"), ("max_seq_len", "max_seq_len"), ("slots", "max_batch")]:
        if getattr(a, flag) is not None:
            setattr(args, name, getattr(a, flag))
    dtype = getattr(torch, a.dtype or ("float32" if a.device == "cpu" else "bfloat16"))
    if preset == "tiny":
        workload = Workload(runs=a.runs, requests=8 if a.requests is None else a.requests, seed=a.seed)
        engine = EngineConfig(seed=a.seed)
    else:  # long prompts, chunked prefill over several steps, many requests at once
        workload = Workload(
            runs=a.runs, requests=500 if a.requests is None else a.requests, target_prompt_len=200,
            prompt_len=(16, 300), max_new_tokens=(16, 96), target_new_tokens=64, seed=a.seed,
        )
        engine = EngineConfig(max_tokens_per_step=512, max_prefill_chunk=256, kv_len_multiple=64, seed=a.seed)
    if a.max_tokens_per_step:
        engine.max_tokens_per_step = a.max_tokens_per_step
    return args, workload, engine, dtype


def main(argv=None) -> int:
    a = parse_args(argv)
    warnings.filterwarnings("ignore", message="inductor_bi: running batch-invariant Triton kernels on the CPU")
    args, workload, engine_config, dtype = config_from_args(a)
    device = torch.device(a.device)
    model = build_model(args, device, dtype, seed=a.seed, checkpoint=a.checkpoint)
    print(f"model {args}, {dtype}, {device}; torch {torch.__version__}")
    print(f"workload: one prompt ({workload.target_prompt_len} tokens, {workload.target_new_tokens} new) submitted "
          f"{workload.runs} times among {workload.requests} random requests; engine {engine_config}")
    near_ties = a.near_ties if a.near_ties is not None else (4 if (a.preset or "tiny") == "tiny" and a.device == "cpu" and not a.checkpoint else 0)
    ties = []
    if near_ties:
        target = next(r.prompt for r in workload.build(args.vocab_size, args.max_batch) if r.is_target)
        ties = plant_near_ties(model, target, min(near_ties, workload.target_new_tokens))
        before = sorted(t.margin_before for t in ties)[len(ties) // 2]
        print(f"near-ties: the model is made undecided at each of the target's first {len(ties).bit_length()} generated tokens "
              f"({len(ties)} points, one per branch): the top two logits, {before:.3g} apart (median) before, are "
              f"{min(t.margin_ulps for t in ties):.2f}-{max(t.margin_ulps for t in ties):.2f} ulp ({ties[0].ulp:.1e}) apart in exact arithmetic.\n"
              f"  A trained LLM meets such near-ties over a long generation, a small random model almost never: without them "
              f"its logits would still differ with the batch, its tokens would not (--near-ties 0).")

    results = []
    t_all = time.perf_counter()
    for mode in a.modes.split(","):
        t0 = time.perf_counter()
        res = run_mode(mode, model, workload, engine_config, device)
        res["total_seconds"] = round(time.perf_counter() - t0, 2)
        results.append(res)
        e = res["engine"]
        print(f"[{mode}] {e['requests']} requests in {e['steps']} steps, tokens per step {e['step_size_min']}.."
              f"{e['step_size_max']} (mean {e['step_size_mean']}), {e['mixed_prefill_decode_steps']} steps mixed "
              f"prefill and decode, {e['chunked_prompts']} prompts prefilled in several chunks; target runs saw {res['distinct_batch_histories']} distinct batch histories; "
              f"{res['total_seconds']} s (compile included)")
    print()
    print_table(results)
    print()
    for r in results:
        steps = r["first_differing_step_per_run"]
        if r["logits_differing_runs"]:
            print(f"{r['mode']}: first generated step whose logits differ from run 0, per run: {steps}")
        else:
            print(f"{r['mode']}: every run's logits are bitwise identical to run 0's at every step")
        first = r["onpolicy"]["first_difference"]
        if first:
            print(f"{r['mode']}: first sampler/trainer log-prob mismatch: {first}")
    by_mode = {r["mode"]: r for r in results}
    if "stock" in by_mode and by_mode["stock"]["logits_differing_runs"] == 0:
        print("\nNote: stock torch.compile gave bitwise identical logits in every run of this workload on this "
              "machine (its kernels' orders happened not to depend on these batch shapes); try a larger model, "
              "more requests or a GPU.")
    bi = by_mode.get("batch_invariant")
    failed = bi is not None and (
        bi["unique_completions"] != 1 or bi["logits_differing_runs"] != 0 or bi["onpolicy"]["num_differing"] != 0
    )
    print(f"\ntotal {time.perf_counter() - t_all:.1f} s")
    if a.out:
        Path(a.out).write_text(json.dumps({"model": asdict(args), "dtype": str(dtype), "device": str(device),
                                           "torch": torch.__version__, "workload": asdict(workload),
                                           "near_ties": [asdict(t) for t in ties],
                                           "engine": asdict(engine_config), "results": results}, indent=2))
        print(f"wrote {a.out}")
    if failed:
        print("batch_invariant: NOT invariant (a bug: please report it with this output)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
