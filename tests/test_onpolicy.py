"""inductor_bi.onpolicy checks the trainer as it runs: by default its training graph (grad on,
the module in train mode for the call, restored after), or the inference graph on request; the
report says which."""

from __future__ import annotations

import pytest
import torch

from inductor_bi.onpolicy import sampler_trainer_mismatch, token_logprobs
from inductor_bi.testing import assert_close_to_reference

VOCAB = 11


class Recorder(torch.nn.Module):
    """A causal toy LM that records how it was called."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, VOCAB)
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, tokens):
        self.calls.append((torch.is_grad_enabled(), self.training))
        return self.emb(tokens)


def _sampled(model):
    """Two sequences and the log-probs of their last 2 tokens as a sampler would record them."""
    seqs = [torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7])]
    with torch.no_grad():
        lps = [token_logprobs(model(s[None])[0, -3:-1], s[-2:]) for s in seqs]
    model.calls.clear()
    return seqs, lps


@pytest.mark.parametrize(
    "trainer_mode, expected_call, said",
    [("train", (True, True), "training graph"), ("no_grad", (False, False), "inference graph")],
)
def test_trainer_runs_as_its_mode_says_and_is_restored(trainer_mode, expected_call, said):
    model = Recorder().eval()
    seqs, lps = _sampled(model)
    report = sampler_trainer_mismatch(model, seqs, lps, logprobs_fn=token_logprobs, trainer_mode=trainer_mode)
    assert model.calls == [expected_call]
    assert not model.training, "the module's own mode is restored after the check"
    assert report.on_policy and report.trainer_mode == trainer_mode and said in str(report)


def test_a_bound_forward_is_run_as_its_module():
    model = Recorder().eval()
    seqs, lps = _sampled(model)
    sampler_trainer_mismatch(model.forward, seqs, lps, logprobs_fn=token_logprobs)
    assert model.calls == [(True, True)]


def test_an_unknown_trainer_mode_is_refused():
    model = Recorder()
    seqs, lps = _sampled(model)
    with pytest.raises(ValueError, match="trainer_mode"):
        sampler_trainer_mismatch(model, seqs, lps, logprobs_fn=token_logprobs, trainer_mode="eval")


def test_token_logprobs_train_under_strict_mode_with_reproducible_gradients():
    """A trainer differentiates through the log-probs: strict mode must compile that backward,
    and give the same gradient bits on a second run."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5, VOCAB)
    tokens = torch.randint(0, VOCAB, (3, 5))
    f = torch.compile(token_logprobs, backend="batch_invariant", options={"strict": True})
    grads = []
    for _ in range(2):
        x = logits.clone().requires_grad_()
        lp = f(x, tokens)
        assert_close_to_reference(lp, torch.log_softmax(logits.double(), -1).gather(-1, tokens[..., None])[..., 0])
        lp.sum().backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])
