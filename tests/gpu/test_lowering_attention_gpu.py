"""fixed_split_attention launched by Inductor's generated code (lowerings/attention.py) gives the
bits of the custom op (``options={"inductor_launches": False}``): a Hugging Face Llama in bf16 in
prefill at several batch sizes, decode steps against a DynamicCache (a symbolic KV length) and a
StaticCache under mode="reduce-overhead"; masks, head broadcasting, scales and the in-place cache
read in a small function; a training step's gradients."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

import inductor_bi.lowerings
from inductor_bi.lowerings._launches import Lowering
from inductor_bi.testing import assert_rows_equal

from tests._support import load_file

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

OP = torch.ops.inductor_bi.fixed_split_attention.default
DEVICE = "cuda"
DISPATCHED = {"inductor_launches": False}


@pytest.fixture(autouse=True)
def fresh_compiles():
    """Every graph compiled here runs our passes (no compile-cache hit that would skip them)."""
    torch._dynamo.reset()
    with torch.compiler.config.patch(force_disable_caches=True):
        yield
    torch._dynamo.reset()


@contextlib.contextmanager
def counting_launches(monkeypatch):
    """A list that grows by one for each attention call traced into Inductor launches ("kv_rows"
    for a cache read in place, else "gathered")."""
    traced = []
    lowering = inductor_bi.lowerings.LOWERINGS[OP]

    def implementation(*args, **kwargs):
        kv_rows = kwargs.get("kv_rows", args[7] if len(args) > 7 else None)
        traced.append("kv_rows" if kv_rows is not None else "gathered")
        return lowering.implementation(*args, **kwargs)

    monkeypatch.setitem(inductor_bi.lowerings.LOWERINGS, OP, Lowering(implementation, lowering.traceable))
    yield traced


def _llama():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=2,
                                      num_attention_heads=8, num_key_value_heads=2, vocab_size=2048)  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).to(DEVICE, torch.bfloat16).eval()


def _compiled(model, **kwargs):
    return torch.compile(model.forward, backend="batch_invariant", dynamic=True, **kwargs)


def test_llama_prefill_launched_gives_the_custom_op_bits_for_every_batch(monkeypatch):
    model = _llama()
    ids = torch.randint(3, 2048, (48, 40), device=DEVICE)
    with counting_launches(monkeypatch) as traced, torch.no_grad():
        launched, dispatched = _compiled(model), _compiled(model, options=DISPATCHED)
        full = launched(input_ids=ids, use_cache=False).logits
        assert traced, "no attention call was launched by Inductor"
        for batch in (1, 3, 17, 48):
            got = launched(input_ids=ids[:batch], use_cache=False).logits
            assert_rows_equal(got, dispatched(input_ids=ids[:batch], use_cache=False).logits, f"batch {batch}: launches vs custom op")
            assert_rows_equal(got[:1], full[:1], f"row 0 alone in a batch of {batch} vs of 48")


bench = load_file("benchmarks/hf_models.py", "bench_hf_models")


def _decode_step(f, cache, rewind, step):
    rewind()
    return f(input_ids=step, past_key_values=cache, use_cache=True).logits


def test_llama_decode_against_a_dynamic_cache_launched_gives_the_custom_op_bits(monkeypatch):
    """A DynamicCache grows by torch.cat: under dynamic=True the KV length is symbolic, and the
    launched graph serves caches of other lengths without a recompile."""
    from torch._dynamo.utils import counters

    model = _llama()
    with counting_launches(monkeypatch) as traced, torch.no_grad():
        launched, dispatched = _compiled(model), _compiled(model, options=DISPATCHED)
        for seq in (37, 300):  # one KV split, then two (256-key splits at head dim 64)
            cache = bench.filled_cache(model, "dynamic", 4, seq, torch.device(DEVICE))
            one = copy.deepcopy(cache)
            one.batch_select_indices(torch.tensor([0], device=DEVICE))
            rewind, rewind_one = bench.rewinder(cache), bench.rewinder(one)
            step = torch.randint(3, 2048, (4, 1), device=DEVICE)
            counters.clear()
            got = _decode_step(launched, cache, rewind, step)
            if seq == 300:
                assert counters["stats"]["unique_graphs"] == 0, "a longer cache recompiled the decode step"
            assert_rows_equal(got, _decode_step(dispatched, cache, rewind, step), f"{seq} cached: launches vs custom op")
            alone = _decode_step(launched, one, rewind_one, step[:1])
            assert_rows_equal(alone, got[:1], f"{seq} cached: row 0 alone vs in a batch of 4")
        assert traced, "no attention call was launched by Inductor"


def test_llama_static_cache_decode_in_cuda_graphs_gives_the_custom_op_bits(monkeypatch):
    from torch._dynamo.utils import counters

    model = _llama()
    seq, batch = 50, 4
    cache = bench.filled_cache(model, "static", batch, seq, torch.device(DEVICE))
    rewind = bench.rewinder(cache)
    step = torch.randint(3, 2048, (batch, 1), device=DEVICE)
    with counting_launches(monkeypatch) as traced, torch.no_grad():
        # the custom op first: its split launches' arrival counters are allocated outside any graph
        want = _decode_step(_compiled(model, options=DISPATCHED), cache, rewind, step).clone()
        graphed = _compiled(model, mode="reduce-overhead")
        counters.clear()
        for _ in range(3):  # warm-up, record, replay
            torch.compiler.cudagraph_mark_step_begin()
            got = _decode_step(graphed, cache, rewind, step).clone()
            assert_rows_equal(got, want, "CUDA graph of the launches vs the custom op")
        assert traced, "no attention call was launched by Inductor"
        assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])


def heads_static(*tensors):
    """[B, H, L, D] inputs with H and D static: under dynamic=True every input dim is symbolic,
    and the head counts and head dims set the kernel's constexprs (a model's reshape makes them
    static; raw inputs need this, else the call stays a custom op)."""
    for t in tensors:
        torch._dynamo.mark_static(t, 1)
        torch._dynamo.mark_static(t, 3)
    return tensors


def _attention_case(case: str, batch: int, gen: torch.Generator):
    """(function, tensors) of one SDPA call shape; every row of dim 0 independent of the others."""
    def rand(*shape, dtype=torch.bfloat16):
        return torch.randn(*shape, generator=gen, device=DEVICE).to(dtype)

    lq, lk = (1, 700) if case.startswith("decode") else (90, 90)
    q, k, v = heads_static(rand(batch, 8, lq, 64), rand(batch, 2, lk, 64), rand(batch, 2, lk, 64))
    if case == "decode_bool_mask":
        mask = torch.rand(batch, 1, 1, lk, generator=gen, device=DEVICE) > 0.3
        return (lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=True)), (q, k, v, mask)
    if case == "decode_float_mask":  # keeps the custom op: the same bits either way
        mask = rand(batch, 1, 1, lk)
        return (lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=True)), (q, k, v, mask)
    if case == "causal_gqa":
        return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)), (q, k, v)
    if case == "mqa_broadcast":
        return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)), (q, *heads_static(k[:, :1], v[:, :1]))
    if case == "kv_heads_differ":
        return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)), (q, k, *heads_static(rand(batch, 4, lk, 64)))
    if case in ("scale_zero", "scale_negative"):
        scale = 0.0 if case == "scale_zero" else -0.3
        return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)), (q, k, v)
    if case == "rank2":  # [L, D] inputs: one head of one row
        return (lambda q, k, v: F.scaled_dot_product_attention(q[0, 0], k[0, 0], v[0, 0], is_causal=True)), (q, k, v)
    if case == "kv_rows":  # a serving step's cache[slots] folded into the kernel (passes/kv_gather.py)
        cache_k, cache_v = rand(16, 2, lk, 64), rand(16, 2, lk, 64)
        for cache in (cache_k, cache_v):
            torch._dynamo.mark_static(cache)  # the slot count must be static to fold the gather
        slots = torch.randint(0, 16, (batch,), generator=gen, device=DEVICE)
        return (lambda q, slots: F.scaled_dot_product_attention(q, cache_k[slots], cache_v[slots], enable_gqa=True)), (q, slots)
    raise ValueError(case)


CASES = ["decode_bool_mask", "decode_float_mask", "causal_gqa", "mqa_broadcast", "kv_heads_differ", "scale_zero", "scale_negative", "rank2", "kv_rows"]


@pytest.mark.parametrize("case", CASES)
def test_attention_calls_launched_give_the_custom_op_bits(monkeypatch, case):
    with counting_launches(monkeypatch) as traced, torch.no_grad():
        f, _ = _attention_case(case, 1, torch.Generator(DEVICE).manual_seed(0))
        launched = torch.compile(f, backend="batch_invariant", dynamic=True)
        dispatched = torch.compile(f, backend="batch_invariant", dynamic=True, options=DISPATCHED)
        outs = {}
        for batch in (2, 5, 33):
            _, tensors = _attention_case(case, batch, torch.Generator(DEVICE).manual_seed(batch))
            outs[batch] = launched(*tensors)
            assert_rows_equal(outs[batch], dispatched(*tensors), f"{case}, batch {batch}: launches vs custom op")
        assert bool(traced) is (case != "decode_float_mask"), f"{case}: launched {len(traced)} calls"
        if case == "kv_rows":
            assert "kv_rows" in traced, "the gather was not folded into the launched kernel"


def test_training_step_launched_gives_the_custom_op_gradients(monkeypatch):
    """The forward graph of a training step launches the kernels; the backward reads the saved
    inputs as before: the same output and gradients."""
    gen = torch.Generator(DEVICE).manual_seed(0)

    def loss(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).float().square().sum()

    with counting_launches(monkeypatch) as traced:
        launched = torch.compile(loss, backend="batch_invariant", dynamic=True)
        dispatched = torch.compile(loss, backend="batch_invariant", dynamic=True, options=DISPATCHED)
        for batch in (2, 5):
            q = torch.randn(batch, 8, 70, 64, generator=gen, device=DEVICE).bfloat16()
            k, v = (torch.randn(batch, 2, 70, 64, generator=gen, device=DEVICE).bfloat16() for _ in range(2))
            results = []
            for f in (launched, dispatched):
                inputs = heads_static(*[x.clone().requires_grad_() for x in (q, k, v)])
                value = f(*inputs)
                value.backward()
                results.append((value, *(x.grad for x in inputs)))
            for name, got, want in zip(("loss", "dq", "dk", "dv"), *results):
                assert torch.equal(got, want), f"batch {batch}: {name} launched vs custom op"
        assert traced, "the training forward's attention was not launched by Inductor"
