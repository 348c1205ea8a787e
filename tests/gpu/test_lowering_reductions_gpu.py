"""Row reductions launched by Inductor's generated code (inductor_launches, the default) on CUDA:
the bits of the custom-op launches for every batch size (row 0 alone == row 0 in a batch), no
custom-op call left at run time, and the Hugging Face models whose layers hold them (Llama /
Qwen3 RMSNorm with Dynamo's eps tensor, GPT-2 LayerNorm) in CUDA graphs (mode="reduce-overhead")
with no graph skipped."""

from __future__ import annotations

import collections
import math

import pytest
import torch

from inductor_bi.kernels import reduction
from inductor_bi.testing import assert_rows_equal

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

BATCHES = (1, 3, 17, 48)
# an fp64 eps halfway between two fp32 values: rounded once to fp32 (ties to even) on both paths
MIDPOINT_EPS = math.ldexp(1 + 3 / 2**24, -17)
LAUNCHED = ("invariant_rms_norm_rows", "invariant_layer_norm", "invariant_softmax", "invariant_log_softmax",
            "invariant_sum", "invariant_mean", "invariant_var_mean", "invariant_std_mean")  # fmt: skip


class HandWrittenRMSNorm(torch.nn.Module):
    """HF Llama's RMSNorm after a residual add; eps a float attribute, which Dynamo passes as a
    0-dim CPU tensor under dynamic=True."""

    def __init__(self, hidden: int, eps: float):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(hidden))
        self.eps = eps

    def forward(self, x, r):
        h = x + r
        var = h.float().pow(2).mean(-1, keepdim=True)
        n = h.float() * torch.rsqrt(var + self.eps)
        return self.weight * n.to(x.dtype), h


class RowReductions(torch.nn.Module):
    """Every other row reduction over the last dim; the scale makes the hidden size static, as a
    model's weights do (a symbolic reduced extent keeps the custom op)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.rand(hidden) + 0.5)
        self.norm = torch.nn.LayerNorm(hidden)

    def forward(self, x, r):
        x = x * self.scale
        var, mean = torch.var_mean(x, -1)
        std, _ = torch.std_mean(x.float(), -1, correction=0)
        return (self.norm(x), torch.softmax(x.float(), -1), torch.log_softmax(x, -1), x.sum(-1), x.float().mean(-1, keepdim=True), var, mean, std)


def _count_custom_op_calls(monkeypatch) -> collections.Counter:
    """Calls of the custom ops' host code (the launches Inductor makes do not go through it)."""
    calls = collections.Counter()
    for name in LAUNCHED:
        def counted(*args, _name=name, _fn=getattr(reduction, name), **kwargs):
            calls[_name] += 1
            return _fn(*args, **kwargs)

        monkeypatch.setattr(reduction, name, counted)
    return calls


@pytest.mark.parametrize("hidden", [1000, 5120], ids=["one-step", "looped"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    "make", [lambda h: HandWrittenRMSNorm(h, 1e-6), lambda h: HandWrittenRMSNorm(h, MIDPOINT_EPS), RowReductions], ids=["rms-norm", "rms-norm-midpoint-eps", "reductions"]
)
def test_launched_row_reductions_give_the_custom_op_bits_for_every_batch(make, dtype, hidden, monkeypatch):
    calls = _count_custom_op_calls(monkeypatch)
    torch.manual_seed(0)
    model = make(hidden).to("cuda", dtype)
    torch._dynamo.reset()
    launched = torch.compile(model, backend="batch_invariant", dynamic=True)
    dispatched = torch.compile(model, backend="batch_invariant", dynamic=True, options={"inductor_launches": False})
    # small values: eps matters to the RMSNorm
    x = torch.randn(48, 7, hidden, device="cuda", dtype=dtype) * 1e-3
    r = torch.randn(48, 7, hidden, device="cuda", dtype=dtype) * 1e-3
    with torch.no_grad():
        full = launched(x, r)
        for batch in BATCHES:
            calls.clear()
            got = launched(x[:batch], r[:batch])
            assert not calls, f"the launched graph called custom ops: {dict(calls)}"
            want = dispatched(x[:batch], r[:batch])
            for i, (g, f, w) in enumerate(zip(got, full, want)):
                assert_rows_equal(g[:1], f[:1], f"output {i}: row 0 alone in a batch of {batch} vs of 48")
                assert_rows_equal(g, w, f"output {i}, batch {batch}: launches vs custom ops")
    assert calls, "the dispatched graph runs the custom ops (the counter sees them)"


# the op each model's norms become
NORM_OP = {"llama": "invariant_rms_norm_rows", "qwen3": "invariant_rms_norm_rows", "gpt2": "invariant_layer_norm"}


@pytest.mark.parametrize("name", list(NORM_OP))
def test_hf_model_norms_are_launched_and_run_in_cuda_graphs(name, monkeypatch):
    """The norms of every layer launched by Inductor (no custom-op call at run time) with the
    custom ops' bits, row 0 alone == row 0 in a batch; under mode="reduce-overhead" no graph is
    skipped (eps as Dynamo passes it used to reach the kernel as a CPU tensor, splitting the CUDA
    graph at every norm) and the replays give the launches' bits."""
    pytest.importorskip("transformers")
    from torch._dynamo.utils import counters

    from tests._zoo import BY_NAME, HF_GPU, build

    calls = _count_custom_op_calls(monkeypatch)
    model = build(BY_NAME[name], HF_GPU, torch.bfloat16, "cuda")
    torch._dynamo.reset()
    launched = torch.compile(model.forward, backend="batch_invariant", dynamic=True)
    dispatched = torch.compile(model.forward, backend="batch_invariant", dynamic=True, options={"inductor_launches": False})
    graphed = torch.compile(model.forward, backend="batch_invariant", dynamic=True, mode="reduce-overhead")
    ids = torch.randint(0, HF_GPU.vocab, (8, 40), device="cuda")
    counters.clear()
    with torch.no_grad():
        full = launched(input_ids=ids, use_cache=False).logits
        for batch in (1, 3, 8):
            calls.clear()
            got = launched(input_ids=ids[:batch], use_cache=False).logits
            assert_rows_equal(got[:1], full[:1], f"row 0 alone in a batch of {batch} vs of 8")
            assert not calls[NORM_OP[name]], f"{name}'s norms ran as custom ops: {dict(calls)}"
            assert_rows_equal(got, dispatched(input_ids=ids[:batch], use_cache=False).logits, f"batch {batch}: launches vs custom ops")
            for _ in range(3):  # warm-up, record, replay
                replayed = graphed(input_ids=ids[:batch], use_cache=False).logits.clone()
            assert_rows_equal(replayed, got, f"batch {batch}: CUDA graph replay vs launches")
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
