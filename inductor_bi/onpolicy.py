"""On-policy check: are the sampler's log-probs exactly the trainer's?

In RL fine-tuning the sampler (a serving engine: KV cache, dynamic batches, one token at a time)
generates sequences and records the log-prob of each token it picked; the trainer then recomputes
those log-probs in one forward over the full sequences, batched its own way. If the two differ, the
"on-policy" update is silently off-policy. With a batch-invariant model they are bitwise equal.

    from inductor_bi.onpolicy import sampler_trainer_mismatch, token_logprobs

    # sampler side, per step: logits [T, V] -> the picked tokens' log-probs [T]
    logprobs = token_logprobs_fn(logits, next_tokens)
    ...
    report = sampler_trainer_mismatch(
        trainer_forward,     # tokens [B, L] -> logits [B, L, V], causal (e.g. the compiled model)
        sequences,           # list of 1-D token tensors: prompt + generated tokens
        sampler_logprobs,    # list of 1-D fp32 tensors: one per generated token (the last ones)
        batch_size=8, shuffle_seed=0,
    )
    assert report.on_policy, report

The trainer is checked as it really runs, by default (``trainer_mode="train"``): grad on, so its
forward is the training graph (the one its backward and optimizer step follow), and, where
``trainer_forward`` is a module or a module's bound method, that module in train mode for the call.
``trainer_mode="no_grad"`` is the cheaper check of the inference graph (no saved activations).
The report says which was checked.

Both sides must turn logits into log-probs with the same batch-invariant function: by default
``invariant_token_logprobs()`` (``token_logprobs`` compiled with ``backend="batch_invariant"``).
Compile ``token_logprobs`` with it on the sampler side too, or pass your own ``logprobs_fn``.
"""

from __future__ import annotations

import contextlib
import functools
import random
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch

LogprobsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

TRAINER_MODES = {
    "train": "the training graph (grad on, train mode)",
    "no_grad": "the inference graph (torch.no_grad)",
}


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)[..., token]`` in fp32: logits [..., V], tokens [...] -> [...].

    The token is picked by indexing, not ``gather``: the same values, and a backward (an index
    put, summed in a fixed order under the backend) that strict mode trains through, where
    gather's backward is a scatter_add it refuses."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    flat = logprobs.reshape(-1, logprobs.shape[-1])
    rows = torch.arange(flat.shape[0], device=flat.device)
    return flat[rows, tokens.reshape(-1)].reshape(tokens.shape)


@functools.lru_cache(maxsize=None)
def invariant_token_logprobs() -> LogprobsFn:
    """``token_logprobs`` compiled with the batch_invariant backend (one compile serves every T):
    a row's log-probs do not depend on the other rows of the call."""
    return torch.compile(token_logprobs, backend="batch_invariant", dynamic=True)


@dataclass(frozen=True)
class TokenMismatch:
    sequence: int  # index into ``sequences``
    position: int  # the token's position in its sequence
    token: int
    sampler: float
    trainer: float

    def __str__(self) -> str:
        return (
            f"sequence {self.sequence}, position {self.position} (token {self.token}): "
            f"sampler {self.sampler!r} vs trainer {self.trainer!r}"
        )


@dataclass(frozen=True)
class OnPolicyReport:
    num_sequences: int
    num_tokens: int  # tokens compared
    num_differing: int  # tokens whose sampler and trainer log-probs are not bitwise equal
    first_difference: Optional[TokenMismatch]  # the first in (sequence, position) order
    max_abs_diff: float
    trainer_mode: str = "train"  # which trainer graph was checked (TRAINER_MODES)

    @property
    def on_policy(self) -> bool:
        """True when every compared log-prob is bitwise equal."""
        return self.num_differing == 0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["first_difference"] = str(self.first_difference) if self.first_difference else None
        d["on_policy"] = self.on_policy
        return d

    def __str__(self) -> str:
        trainer = f"trainer: {TRAINER_MODES[self.trainer_mode]}"
        if self.on_policy:
            return f"on-policy: all {self.num_tokens} log-probs of {self.num_sequences} sequences are bitwise equal ({trainer})"
        return (
            f"off-policy: {self.num_differing} of {self.num_tokens} log-probs differ "
            f"(max abs diff {self.max_abs_diff:.3e}; {trainer}); first: {self.first_difference}"
        )


def _module_of(fn) -> Optional[torch.nn.Module]:
    """The module ``fn`` runs: the module itself, a bound method's owner, or one torch.compile
    wrapped (``_torchdynamo_orig_callable``); None for any other callable."""
    for candidate in (fn, getattr(fn, "_torchdynamo_orig_callable", None)):
        if isinstance(candidate, torch.nn.Module):
            return candidate
        owner = getattr(candidate, "__self__", None)
        if isinstance(owner, torch.nn.Module):
            return owner
    return None


@contextlib.contextmanager
def _as_trainer(trainer_forward, trainer_mode: str):
    """Grad and the module's train flag as ``trainer_mode`` says, restored after."""
    if trainer_mode not in TRAINER_MODES:
        raise ValueError(f"trainer_mode must be one of {sorted(TRAINER_MODES)}, got {trainer_mode!r}")
    training = trainer_mode == "train"
    module = _module_of(trainer_forward)
    was_training = module.training if module is not None else None
    try:
        if module is not None:
            module.train(training)
        with torch.set_grad_enabled(training):
            yield
    finally:
        if module is not None:
            module.train(was_training)


def trainer_logprobs(
    trainer_forward: Callable[[torch.Tensor], torch.Tensor],
    sequences: Sequence[torch.Tensor],
    num_scored: Sequence[int],
    *,
    batch_size: Optional[int] = None,
    shuffle_seed: Optional[int] = None,
    pad_token: int = 0,
    logprobs_fn: Optional[LogprobsFn] = None,
    trainer_mode: str = "train",
) -> list[torch.Tensor]:
    """The trainer's log-probs of the last ``num_scored[i]`` tokens of each sequence (detached).

    Sequences are grouped into batches of ``batch_size`` (all at once by default), after a shuffle
    when ``shuffle_seed`` is given, right-padded with ``pad_token`` to the batch's longest, and
    scored in one ``trainer_forward`` call per batch, run as ``trainer_mode`` says (the module's
    docstring). Right padding is harmless only for a causal model, whose logits at position t
    depend on tokens 0..t alone. Token t is scored with the logits at position t - 1.
    """
    logprobs_fn = logprobs_fn or invariant_token_logprobs()
    n = len(sequences)
    if len(num_scored) != n:
        raise ValueError(f"{n} sequences but {len(num_scored)} scored-token counts")
    for i, (seq, k) in enumerate(zip(sequences, num_scored)):
        if seq.dim() != 1:
            raise ValueError(f"sequence {i}: expected a 1-D token tensor, got shape {tuple(seq.shape)}")
        if not 0 <= k < len(seq):
            raise ValueError(f"sequence {i}: cannot score the last {k} of {len(seq)} tokens (the first has no logits)")
    order = list(range(n))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    batch_size = batch_size or n
    out: list[Optional[torch.Tensor]] = [None] * n
    for start in range(0, n, batch_size):
        members = order[start : start + batch_size]
        seqs = [sequences[i] for i in members]
        device = seqs[0].device
        longest = max(len(s) for s in seqs)
        tokens = torch.full((len(seqs), longest), pad_token, dtype=torch.long, device=device)
        for row, s in enumerate(seqs):
            tokens[row, : len(s)] = s
        # Gather the scoring rows of every member into one [N, V] call: a row-invariant
        # logprobs_fn gives each row the bits it would get alone (and the sampler's [T, V] shape).
        rows, cols, targets, counts = [], [], [], []
        for row, (i, s) in enumerate(zip(members, seqs)):
            k = num_scored[i]
            positions = torch.arange(len(s) - k, len(s), device=device)
            rows.append(torch.full_like(positions, row))
            cols.append(positions - 1)
            targets.append(s[len(s) - k :].to(device=device, dtype=torch.long))
            counts.append(k)
        with _as_trainer(trainer_forward, trainer_mode):
            logits = trainer_forward(tokens)
            scored = logprobs_fn(logits[torch.cat(rows), torch.cat(cols)], torch.cat(targets))
        for i, lp in zip(members, scored.detach().split(counts)):
            out[i] = lp
    return out  # type: ignore[return-value]


def sampler_trainer_mismatch(
    trainer_forward: Callable[[torch.Tensor], torch.Tensor],
    sequences: Sequence[torch.Tensor],
    sampler_logprobs: Sequence[torch.Tensor],
    *,
    batch_size: Optional[int] = None,
    shuffle_seed: Optional[int] = None,
    pad_token: int = 0,
    logprobs_fn: Optional[LogprobsFn] = None,
    trainer_mode: str = "train",
) -> OnPolicyReport:
    """Compare, bitwise, the sampler's log-probs with the trainer's.

    ``sampler_logprobs[i][j]`` is the log-prob the sampler gave the token at position
    ``len(sequences[i]) - len(sampler_logprobs[i]) + j`` (the generated tokens are the last ones).
    The trainer's are computed by ``trainer_logprobs`` (see there for ``batch_size``,
    ``shuffle_seed``, ``pad_token``, ``logprobs_fn``, ``trainer_mode``). Returns an ``OnPolicyReport``.
    """
    if len(sequences) != len(sampler_logprobs):
        raise ValueError(f"{len(sequences)} sequences but {len(sampler_logprobs)} sampler log-prob tensors")
    counts = [len(lp) for lp in sampler_logprobs]
    trainer = trainer_logprobs(
        trainer_forward, sequences, counts, batch_size=batch_size, shuffle_seed=shuffle_seed,
        pad_token=pad_token, logprobs_fn=logprobs_fn, trainer_mode=trainer_mode,
    )
    num_tokens = num_differing = 0
    first: Optional[TokenMismatch] = None
    max_abs = 0.0
    for i, (seq, s_lp, t_lp) in enumerate(zip(sequences, sampler_logprobs, trainer)):
        s_lp = s_lp.detach().to(device=t_lp.device).reshape(-1)
        if s_lp.dtype != t_lp.dtype:
            raise ValueError(f"sequence {i}: sampler log-probs are {s_lp.dtype}, the trainer's {t_lp.dtype}")
        differs = _bits(s_lp) != _bits(t_lp)
        num_tokens += len(s_lp)
        num_differing += int(differs.sum())
        if differs.any():
            max_abs = max(max_abs, float((s_lp.double() - t_lp.double()).abs()[differs].max()))
            if first is None:
                j = int(differs.nonzero()[0])
                position = len(seq) - len(s_lp) + j
                first = TokenMismatch(i, position, int(seq[position]), float(s_lp[j]), float(t_lp[j]))
    return OnPolicyReport(len(sequences), num_tokens, num_differing, first, max_abs, trainer_mode)


def _bits(x: torch.Tensor) -> torch.Tensor:
    """The raw bits: -0.0 differs from 0.0, and a NaN equals the same NaN."""
    return x.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[x.element_size()])


def assert_on_policy(*args, **kwargs) -> OnPolicyReport:
    """``sampler_trainer_mismatch`` that raises AssertionError (with the report) on any difference."""
    report = sampler_trainer_mismatch(*args, **kwargs)
    if not report.on_policy:
        raise AssertionError(str(report))
    return report


__all__ = [
    "TRAINER_MODES",
    "OnPolicyReport",
    "TokenMismatch",
    "assert_on_policy",
    "invariant_token_logprobs",
    "sampler_trainer_mismatch",
    "token_logprobs",
    "trainer_logprobs",
]
