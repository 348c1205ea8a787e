"""examples/rl.py on CPU: a GRPO-style loop whose sampler (serving engine, KV cache, dynamic
batching, seeded sampling) and trainer (compiled forward with grad, its own shuffled micro-batches,
strict mode) agree bit for bit under the backend, every step, while Adam really moves the weights.

Two RL steps of the CPU preset, backend only (stock is the script's comparison, and on a CPU in
fp32 it may happen to agree); the kernels run in Triton's interpreter.
"""

import json
import math
import random
from dataclasses import replace

import pytest
import torch

from tests._support import load_example

rl = load_example("rl")
llm = rl.llm  # the llm module rl.py runs (examples/llm.py)

CFG = replace(rl.PRESETS["cpu"], steps=2)


def test_reward_is_the_fraction_of_tokens_in_the_target_class():
    assert rl.reward([0, 4, 5, 8], 4) == 0.75
    assert rl.reward([1, 2, 3, 5, 6, 7], 4) == 0.0
    assert rl.reward([12], 4) == 1.0
    assert rl.reward([3, 6, 9], 3) == 1.0
    assert rl.reward([0, 1, 2], 2) == 2 / 3


def test_group_advantages_are_normalised_within_the_group():
    assert rl.group_advantages([1.0, 0.0, 1.0, 0.0]) == [1.0, -1.0, 1.0, -1.0]
    assert rl.group_advantages([0.25] * 4) == [0.0] * 4  # a group that agrees teaches nothing
    adv = rl.group_advantages([0.0, 0.25, 0.5, 1.0])
    assert math.isclose(sum(adv), 0.0, abs_tol=1e-12) and math.isclose(sum(a * a for a in adv) / 4, 1.0)


def test_gumbel_max_samples_from_the_softmax():
    """argmax(logits + gumbel_noise(seed, position)) over many seeds: the frequencies are the
    softmax's (within 4 standard errors), and the noise is a pure function of its arguments."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    n = 4000
    counts = torch.bincount(torch.stack([(logits.double() + llm.gumbel_noise(s, 3, 5, "cpu")).argmax() for s in range(n)]), minlength=5)
    p = torch.softmax(logits.double(), -1)
    assert ((counts / n - p).abs() <= 4 * (p * (1 - p) / n).sqrt()).all(), (counts / n, p)
    assert torch.equal(llm.gumbel_noise(7, 3, 5, "cpu"), llm.gumbel_noise(7, 3, 5, "cpu"))
    assert not torch.equal(llm.gumbel_noise(7, 3, 5, "cpu"), llm.gumbel_noise(7, 4, 5, "cpu"))
    assert not torch.equal(llm.gumbel_noise(7, 3, 5, "cpu"), llm.gumbel_noise(8, 3, 5, "cpu"))


@pytest.fixture(scope="module")
def run():
    contender = rl.Contender("batch_invariant", CFG, "cpu", strict=True)
    initial = [p.detach().clone() for p in contender.trainer.parameters()]
    steps = [contender.step(i) for i in range(CFG.steps)]
    return contender, initial, steps


def test_backend_is_exactly_on_policy_at_every_step(run):
    _, _, steps = run
    for s in steps:
        assert s["max_abs_diff"] == 0.0, s
        assert s["mean_ratio"] == 1.0, s
        assert s["tokens_differing"] == 0 and s["tokens"] == CFG.prompts * CFG.group * CFG.completion_len
        # Not vacuous: the engine batched steps of several sizes, prefill chunks mixed with decode.
        assert s["mixed_prefill_decode_steps"] > 0 and len(s["engine_step_sizes"]) > 2, s


def test_the_optimizer_moves_the_weights_and_the_sampler_gets_them(run):
    contender, initial, steps = run
    assert all(s["max_weight_change"] > 0 for s in steps)
    now = list(contender.trainer.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(initial, now))  # every parameter trained
    assert all(torch.equal(a, b) for a, b in zip(now, contender.sampler.parameters()))


def test_a_requests_samples_are_the_same_alone_and_in_a_batch(run):
    """The same request (prompt, seed) served alone and among others arriving around it: the same
    sampled tokens and bitwise the same log-probs, though its steps were batched differently."""
    contender = run[0]
    rng = random.Random(5)
    v = CFG.model.vocab_size
    prompt = [rng.randrange(v) for _ in range(5)]
    alone = llm.Request(0, list(prompt), CFG.completion_len, 0, seed=1234)
    contender.serve([alone], engine_seed=1)
    batched = llm.Request(0, list(prompt), CFG.completion_len, 1, seed=1234)
    others = [llm.Request(i, [rng.randrange(v) for _ in range(rng.randint(2, 5))], CFG.completion_len, rng.randint(0, 2), seed=i)
              for i in range(1, 6)]
    contender.serve([batched] + others, engine_seed=2)
    assert batched.step_sizes != alone.step_sizes
    assert batched.generated == alone.generated
    assert torch.equal(torch.stack(batched.logprobs), torch.stack(alone.logprobs))


def test_main_writes_results(tmp_path, capsys):
    """The command line end to end, on the eager reference (fast): the JSON has the environment,
    the config and each contender's steps; without matplotlib the plot is skipped with a message."""
    assert rl.main(["--device", "cpu", "--contenders", "eager", "--steps", "2", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "rl.json").read_text())
    env = results["environment"]
    assert env["device"] == "cpu" and env["torch"] == torch.__version__ and env["date"]
    assert results["config"]["steps"] == 2 and len(results["contenders"]["eager"]["steps"]) == 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in capsys.readouterr().out
    else:
        assert (tmp_path / "rl.png").exists()
