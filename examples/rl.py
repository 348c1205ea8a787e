"""RL fine-tuning that is truly on-policy: the sampler's log-probs are the trainer's, bit for bit.

A GRPO-style loop on the Llama-style decoder of examples/model.py. Each step the serving engine
(KV cache, dynamic batching, chunked prefill mixed with decode) samples a group of completions per
prompt, every request with its own seeded noise, and records each sampled token's log-prob. A
task with a checkable reward scores each completion exactly from its tokens. The trainer
recomputes those log-probs WITH grad through its own compiled forward (whole sequences, shuffled,
in micro-batches of its own), weights each token by its group-normalised advantage times the
importance ratio exp(trainer - sampler) (clipped, as PPO and GRPO do), backpropagates, takes an
Adam step and hands the new weights to the sampler.

Sampler and trainer hold the same weights when the trainer scores, so every ratio should be
exactly 1. Anything else is the numerics of batching, and turns the "on-policy" update silently
off-policy. Per step the script records the largest |sampler - trainer| log-prob and the mean
ratio for stock ``torch.compile(..., dynamic=True)`` and for ``backend="batch_invariant"``, each a
full run from the same initial weights and seeds, beside the reward:

    python examples/rl.py --device cpu --out results/rl-cpu                 # tiny model, ~2 min
    python examples/rl.py --device cuda --contenders stock --out results/rl-gpu
    python examples/rl.py --device cuda --contenders batch_invariant --out results/rl-gpu

The CUDA default is the gpu preset (Llama-3.2-1B shapes, bf16, 20 steps), one contender a
command to keep each command short. The task: make the completion's tokens multiples of 4
(``reward``). It writes OUT/rl.json (per-step results with the device, versions and date,
rewritten after every step; a run of some ``--contenders`` keeps the other contenders' results of
the same config) and OUT/rl.png (with matplotlib). The backend compiles the trainer's backward in
strict mode (the default); ``--non-strict`` compiles ops it cannot make invariant anyway, with a
warning. On the CPU the backend's kernels run in Triton's interpreter (slow, exact), in fp32,
where stock may happen to agree.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import random
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llm  # noqa: E402  (examples/llm.py: the serving engine; it registers the backend)
import model as llama  # noqa: E402  (examples/model.py: the Llama-style model)
from llm import Engine, EngineConfig, Request, compile_for  # noqa: E402
from model import ModelArgs  # noqa: E402

from inductor_bi.onpolicy import token_logprobs  # noqa: E402  (picks by indexing: its gradient trains under strict mode)

# ---------------------------------------------------------------------------------------------
# The task: a reward computed exactly from the tokens
# ---------------------------------------------------------------------------------------------


def reward(completion: list[int], modulus: int) -> float:
    """Hit the target class: the fraction of completion tokens whose id is a multiple of
    ``modulus``. Exact from the tokens, dense (a random policy scores about 1/modulus whatever the
    vocabulary, so even a random 32k-vocabulary model gets a signal) and learnable in a few steps."""
    return sum(t % modulus == 0 for t in completion) / len(completion)


def group_advantages(rewards: list[float]) -> list[float]:
    """GRPO: each reward minus its group's mean, over the group's standard deviation (0 when the
    group agrees: no signal)."""
    mean, std = statistics.fmean(rewards), statistics.pstdev(rewards)
    return [(r - mean) / std if std > 0 else 0.0 for r in rewards]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class RLConfig:
    model: ModelArgs
    dtype: str
    steps: int
    prompts: int  # prompts per step
    group: int  # completions sampled per prompt (GRPO's group)
    prompt_len: tuple[int, int]  # inclusive range
    completion_len: int
    modulus: int  # the task's (reward)
    lr: float  # Adam
    clip: float  # PPO / GRPO ratio clip
    train_batch: int  # sequences per trainer micro-batch
    max_tokens_per_step: int  # the engine's token budget per forward
    max_prefill_chunk: int
    kv_len_multiple: int
    arrival_window: int  # requests arrive at random engine steps in [0, arrival_window]
    seed: int = 0


PRESETS = {
    # Triton's interpreter runs the backend's kernels on a CPU: a model small enough for seconds a
    # step. n_kv_heads == n_heads: GQA's key / value gradient sums over the group dim, a row of 2
    # per output element, the interpreter's slowest launch.
    "cpu": RLConfig(
        model=ModelArgs(vocab_size=16, dim=16, n_layers=1, n_heads=1, n_kv_heads=1, ffn_dim=32, max_seq_len=16, max_batch=8),
        dtype="float32", steps=10, prompts=2, group=4, prompt_len=(2, 5), completion_len=4, modulus=4, lr=5e-2,
        clip=0.2, train_batch=4, max_tokens_per_step=8, max_prefill_chunk=3, kv_len_multiple=8, arrival_window=3,
    ),
    # Llama-3.2-1B's shapes (examples/model.py's llama-1b) in bf16, trained on fp32 master weights.
    "gpu": RLConfig(
        model=replace(llama.PRESETS["llama-1b"], max_seq_len=128, max_batch=64),
        dtype="bfloat16", steps=20, prompts=16, group=8, prompt_len=(16, 64), completion_len=32, modulus=4, lr=3e-5,
        clip=0.2, train_batch=16, max_tokens_per_step=512, max_prefill_chunk=48, kv_len_multiple=32, arrival_window=24,
    ),
}

CONTENDERS = llm.MODES  # stock torch.compile, the backend


def request_seed(run_seed: int, step: int, rid: int) -> int:
    """The sampling seed of request ``rid`` of ``step``: the same in every contender."""
    return random.Random(f"sample/{run_seed}/{step}/{rid}").getrandbits(43)


# ---------------------------------------------------------------------------------------------
# The loop: sample, score, train, hand the weights over
# ---------------------------------------------------------------------------------------------


class Contender:
    """One full run: a sampler (serving engine on a KV cache, no grad) and a trainer (grad on,
    train mode), separate copies of the same initial weights, compiled the contender's way."""

    def __init__(self, name: str, cfg: RLConfig, device, strict: bool = True):
        self.name, self.cfg, self.device = name, cfg, torch.device(device)
        dtype = getattr(torch, cfg.dtype)
        torch._dynamo.reset()  # each contender compiles from scratch
        self.sampler = llama.build_model(cfg.model, self.device, dtype, seed=cfg.seed)  # eval, no grad, KV cache
        self.trainer = copy.deepcopy(self.sampler).train().requires_grad_(True)
        for layer in self.trainer.layers:
            layer.self_attn.kv_cache = None  # the trainer sees whole sequences
        self.params = list(self.trainer.parameters())
        # bf16 weights cannot take Adam's small steps: the optimizer keeps fp32 master copies and
        # the trainer (and then the sampler) gets them rounded, as mixed-precision training does.
        self.master = None if dtype == torch.float32 else [p.detach().float().clone() for p in self.params]
        self.optimizer = torch.optim.Adam(self.master or self.params, lr=cfg.lr)
        self.step_fn = compile_for(name, self.sampler.step, strict)
        self.forward = compile_for(name, self.trainer, strict)
        self.logprobs = compile_for(name, token_logprobs, strict)

    # -- sampling ---------------------------------------------------------------------------

    def prompts(self, step: int) -> list[list[int]]:
        rng = random.Random(f"prompts/{self.cfg.seed}/{step}")
        v = self.cfg.model.vocab_size
        return [[rng.randrange(v) for _ in range(rng.randint(*self.cfg.prompt_len))] for _ in range(self.cfg.prompts)]

    def serve(self, requests: list[Request], engine_seed: int) -> Engine:
        cfg = self.cfg
        engine_config = EngineConfig(cfg.max_tokens_per_step, cfg.max_prefill_chunk, cfg.kv_len_multiple, seed=engine_seed, sample=True)
        engine = Engine(self.step_fn, self.logprobs, cfg.model, self.device, engine_config)
        engine.run(requests)
        return engine

    def rollout(self, step: int) -> tuple[list[Request], Engine]:
        """``group`` requests per prompt, arriving at random engine steps, each with its own seed."""
        rng = random.Random(f"arrivals/{self.cfg.seed}/{step}")
        requests = []
        for prompt in self.prompts(step):
            for _ in range(self.cfg.group):
                rid = len(requests)
                requests.append(Request(rid, list(prompt), self.cfg.completion_len, rng.randint(0, self.cfg.arrival_window),
                                        seed=request_seed(self.cfg.seed, step, rid)))
        engine = self.serve(requests, engine_seed=self.cfg.seed * 1_000_003 + step)
        return requests, engine

    # -- training ---------------------------------------------------------------------------

    def train(self, requests: list[Request], advantages: list[float], step: int) -> dict:
        """One optimizer step over every sampled token: the trainer scores all sequences (shuffled,
        ``train_batch`` a forward, right-padded) with the weights the sampler used, so the ratios
        are exactly 1 unless the two compute differently."""
        cfg, device = self.cfg, self.device
        order = list(range(len(requests)))
        random.Random(f"shuffle/{cfg.seed}/{step}").shuffle(order)
        total = sum(len(r.generated) for r in requests)
        diffs, ratios, differing, loss_sum = [], [], 0, 0.0
        for start in range(0, len(order), cfg.train_batch):
            members = [requests[i] for i in order[start : start + cfg.train_batch]]
            tokens = torch.zeros(len(members), max(len(r.sequence) for r in members), dtype=torch.long)
            rows, cols, targets, adv = [], [], [], []
            for row, r in enumerate(members):
                tokens[row, : len(r.sequence)] = torch.tensor(r.sequence)
                n, first = len(r.generated), len(r.prompt)
                rows += [row] * n
                cols += range(first - 1, first - 1 + n)  # token t is scored by the logits at t - 1
                targets += r.generated
                adv += [advantages[r.rid]] * n
            old = torch.cat([torch.stack(r.logprobs) for r in members])  # the sampler's, fp32
            logits = self.forward(tokens.to(device))
            new = self.logprobs(logits[torch.tensor(rows, device=device), torch.tensor(cols, device=device)],
                                torch.tensor(targets, device=device))
            ratio = torch.exp(new - old)
            adv = torch.tensor(adv, dtype=torch.float32, device=device)
            loss = -torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv).sum() / total
            loss.backward()
            loss_sum += loss.item()
            diffs.append((new.detach() - old).abs())
            differing += int((new.detach().view(torch.int32) != old.view(torch.int32)).sum())  # bitwise
            ratios.append(ratio.detach())
        diffs, ratios = torch.cat(diffs), torch.cat(ratios)
        self._optimizer_step()
        return {
            "loss": loss_sum,
            "max_abs_diff": diffs.max().item(),
            "mean_ratio": ratios.double().mean().item(),
            "tokens_differing": differing,
            "tokens": len(diffs),
        }

    def _optimizer_step(self) -> None:
        if self.master is not None:
            for m, p in zip(self.master, self.params):
                m.grad = p.grad.float()
        self.optimizer.step()
        with torch.no_grad():
            if self.master is not None:
                for m, p in zip(self.master, self.params):
                    p.copy_(m)
        for p in self.params:
            p.grad = None

    def sync(self) -> float:
        """The sampler gets the trainer's new weights; returns the largest change of a weight."""
        with torch.no_grad():
            changed = max((t - s).abs().max().item() for t, s in zip(self.trainer.parameters(), self.sampler.parameters()))
        self.sampler.load_state_dict(self.trainer.state_dict())  # in place: the compiled step sees them
        return changed

    # -- one RL step ------------------------------------------------------------------------

    def step(self, step: int) -> dict:
        t0 = time.perf_counter()
        requests, engine = self.rollout(step)
        t1 = time.perf_counter()
        rewards = [reward(r.generated, self.cfg.modulus) for r in requests]
        g = self.cfg.group
        advantages = [a for i in range(0, len(rewards), g) for a in group_advantages(rewards[i : i + g])]
        metrics = self.train(requests, advantages, step)
        t2 = time.perf_counter()
        metrics["max_weight_change"] = self.sync()
        sizes = engine.stats["step_sizes"]
        return {
            "step": step,
            "reward": statistics.fmean(rewards),
            **metrics,
            "engine_steps": engine.stats["steps"],
            "engine_step_sizes": sorted(set(sizes)),
            "mixed_prefill_decode_steps": engine.stats["mixed_steps"],
            "serve_seconds": round(t1 - t0, 3),
            "train_seconds": round(t2 - t1, 3),
        }


def run_contender(name: str, cfg: RLConfig, device, strict: bool = True, log=print, on_step=None) -> dict:
    """``cfg.steps`` RL steps from the initial weights; ``on_step(results so far)`` after each
    (a run cut short by a time limit keeps the steps it finished)."""
    t0 = time.perf_counter()
    contender = Contender(name, cfg, device, strict)
    steps = []

    def results() -> dict:
        return {
            "strict": strict if name == "batch_invariant" else None,
            "complete": len(steps) == cfg.steps,
            "steps": steps,
            "always_on_policy": all(s["max_abs_diff"] == 0.0 and s["mean_ratio"] == 1.0 for s in steps),
            "steps_off_policy": sum(s["max_abs_diff"] != 0.0 for s in steps),
            "total_seconds": round(time.perf_counter() - t0, 2),  # compiles included
        }

    for i in range(cfg.steps):
        s = contender.step(i)
        steps.append(s)
        log(f"[{name}] step {i + 1}/{cfg.steps}: reward {s['reward']:.3f}, max |sampler - trainer| {s['max_abs_diff']:.3g}, "
            f"mean ratio {s['mean_ratio']!r} ({s['tokens_differing']}/{s['tokens']} log-probs differ); "
            f"{s['engine_steps']} engine steps of {s['engine_step_sizes'][0]}..{s['engine_step_sizes'][-1]} tokens; "
            f"Adam moved a weight by up to {s['max_weight_change']:.2g}; "
            f"serve {s['serve_seconds']:.1f} s, train {s['train_seconds']:.1f} s")
        if on_step:
            on_step(results())
    return results()


# ---------------------------------------------------------------------------------------------
# Results: JSON and plot
# ---------------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=Path(__file__).parent,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [
        ("max_abs_diff", "max |sampler - trainer| log-prob", lambda v: v),
        ("mean_ratio", "mean importance ratio - 1", lambda v: v - 1.0),
        ("reward", "mean reward", lambda v: v),
    ]
    for ax, (key, title, f) in zip(axes, panels):
        for i, (name, res) in enumerate(results["contenders"].items()):
            xs = [s["step"] + 1 for s in res["steps"]]
            # Dashed over solid: where the contenders agree (the reward, often) both stay visible.
            ax.plot(xs, [f(s[key]) for s in res["steps"]], marker="o", linestyle=("-", "--", ":")[i % 3], label=name)
        if key != "reward":
            ax.set_yscale("symlog", linthresh=1e-9)  # exactly 0 stays on the axis
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
        ax.legend()
    env, cfg = results["environment"], results["config"]
    fig.suptitle(f"On-policy RL ({cfg['dtype']}, {env['device_name']}, torch {env['torch']}, {env['date'][:10]})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def config_from_args(a) -> RLConfig:
    preset = a.preset or ("cpu" if a.device == "cpu" else "gpu")
    cfg = copy.deepcopy(PRESETS[preset])
    for flag in ("steps", "prompts", "group", "lr", "train_batch", "seed", "dtype"):
        if getattr(a, flag) is not None:
            setattr(cfg, flag, getattr(a, flag))
    return cfg


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--preset", choices=sorted(PRESETS), help="default: cpu on the CPU, gpu on CUDA")
    ap.add_argument("--steps", type=int, help="RL steps")
    ap.add_argument("--prompts", type=int, help="prompts per step")
    ap.add_argument("--group", type=int, help="completions per prompt")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--train-batch", type=int, help="sequences per trainer forward")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--seed", type=int)
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated: stock, batch_invariant (eager: debugging)")
    ap.add_argument("--non-strict", action="store_true",
                    help="compile ops the backend cannot make invariant anyway (options={'strict': False}), with a warning")
    ap.add_argument("--out", help="directory for rl.json and rl.png")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    warnings.filterwarnings("ignore", message="inductor_bi: running batch-invariant Triton kernels on the CPU")
    cfg = config_from_args(a)
    device = torch.device(a.device)
    print(f"config {cfg}\non {device}, torch {torch.__version__}")
    env = environment(device)
    results = {"environment": env, "config": asdict(cfg), "contenders": {}}
    out = Path(a.out) if a.out else None
    if out and (out / "rl.json").exists():
        old = json.loads((out / "rl.json").read_text())
        if old.get("config") == json.loads(json.dumps(asdict(cfg))):
            results["contenders"] = old["contenders"]  # the other contenders' runs of this config
        else:
            print(f"{out / 'rl.json'} holds a run of another config: replacing it")
    if out:
        out.mkdir(parents=True, exist_ok=True)

    def record(name, res):
        results["contenders"][name] = {"environment": env, **res}
        if out:
            (out / "rl.json").write_text(json.dumps(results, indent=2))

    for name in a.contenders.split(","):
        record(name, run_contender(name, cfg, device, strict=not a.non_strict, on_step=lambda res, name=name: record(name, res)))
    print()
    for name, res in results["contenders"].items():
        worst = max(s["max_abs_diff"] for s in res["steps"])
        ratios = [s["mean_ratio"] for s in res["steps"]]
        print(f"{name:16s} steps off-policy {res['steps_off_policy']}/{len(res['steps'])}, largest |sampler - trainer| {worst!r}, "
              f"mean ratio {min(ratios)!r}..{max(ratios)!r}, reward {res['steps'][0]['reward']:.3f} -> {res['steps'][-1]['reward']:.3f}")
    if out:
        print(f"wrote {out / 'rl.json'}")
        if plot(results, out / "rl.png"):
            print(f"wrote {out / 'rl.png'}")
    bi = results["contenders"].get("batch_invariant")
    if bi is not None and not bi["always_on_policy"]:
        print("batch_invariant: NOT on-policy (a bug: please report it with this output)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
