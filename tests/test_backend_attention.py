"""The attention pre-pass end to end (CPU, Triton interpreter): what it does to the Dynamo graph
(dropout values, float64), and what compiled attention computes, forward and backward (learned
masks, broadcast K/V heads, any scale). Invariance is ``torch.equal``; accuracy is against float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import inductor_bi
from inductor_bi.passes.attention import rewrite_attention_calls
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal
from tests._support import error_chain_text, float64_attention

aten = torch.ops.aten
ATTENTION = torch.ops.inductor_bi.fixed_split_attention.default
INVARIANT_MATMUL = torch.ops.inductor_bi.invariant_matmul.default

pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")


def compile_bi(fn, **kwargs):
    torch._dynamo.reset()
    return torch.compile(fn, backend="batch_invariant", **kwargs)


def dynamo_graph(fn, *args, dynamic=True) -> torch.fx.GraphModule:
    """The graph Dynamo hands a backend for ``fn(*args)`` (run eagerly, nothing rewritten)."""
    seen = []

    def backend(gm, example_inputs):
        seen.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=backend, dynamic=dynamic)(*args)
    return seen[0]


def targets(gm: torch.fx.GraphModule) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def leaves(*tensors, dtype=None):
    return [t.detach().clone().to(dtype or t.dtype).requires_grad_(True) for t in tensors]


# ----------------------------------------------------------------------------------------------
# Backward: a learned float mask, GQA, causal, rows that see no key
# ----------------------------------------------------------------------------------------------


def _attend_with_bias(q, k, v, bias):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def test_learned_mask_gets_its_gradient():
    """A float attn_mask that requires grad (a relative-position bias) gets d(loss)/d(scores),
    summed to its broadcast shape: close to float64, and the gradient of a per-row mask (summed
    over the heads it is broadcast to) is the same bits for a row alone as in a batch."""
    f = compile_bi(_attend_with_bias, dynamic=True)
    gen = torch.Generator().manual_seed(0)
    b, h, lq, lk = 3, 2, 6, 21
    q, k, v = torch.randn(b, h, lq, 16, generator=gen), torch.randn(b, h, lk, 16, generator=gen), torch.randn(b, h, lk, 16, generator=gen)
    bias = torch.randn(b, 1, lq, lk, generator=gen)
    weight = torch.randn(b, h, lq, 16, generator=gen)  # a loss whose rows do not mix

    def grads(rows, dtype=None, fn=f):
        ins = leaves(q[rows], k[rows], v[rows], bias[rows], dtype=dtype)
        (fn(*ins) * weight[rows].to(ins[0].dtype)).sum().backward()
        return [t.grad for t in ins]

    batched = grads(slice(0, b))
    assert batched[3] is not None
    want = grads(slice(0, b), torch.float64, fn=lambda q, k, v, m: float64_attention(q, k, v, attn_mask=m))
    for got, ref in zip(batched, want):
        assert_close_to_reference(got, ref, dtype=torch.float32, tol_scale=10)
    alone = grads(slice(1, 2))
    for got, one in zip(batched, alone):
        assert_rows_equal(got[1:2], one, "gradient of row 1")


def test_shared_bias_parameter_gets_its_gradient_summed_over_the_batch():
    """A relative-position bias [H, Lq, Lk] shared by the batch, as a module parameter."""

    class RelativeBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.randn(2, 7, 7))

        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)

    module = RelativeBias()
    q, k, v = (torch.randn(3, 2, 7, 16) for _ in range(3))
    compile_bi(module)(q, k, v).square().sum().backward()
    ref = module.bias.detach().double().requires_grad_(True)
    float64_attention(q, k, v, attn_mask=ref).square().sum().backward()
    assert_close_to_reference(module.bias.grad, ref.grad, dtype=torch.float32, tol_scale=10)


@pytest.mark.parametrize("heads", [(4, 2, True), (4, 1, False)], ids=["gqa", "mqa-broadcast"])
def test_backward_with_grouped_heads_and_a_causal_bias_matches_float64(heads):
    hq, hkv, gqa = heads
    gen = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, hq, 9, 16, generator=gen), torch.randn(2, hkv, 9, 16, generator=gen), torch.randn(2, hkv, 9, 16, generator=gen)
    # A learned bias with the causal part folded in (torch's SDPA takes a mask or is_causal, not both).
    causal = torch.ones(9, 9, dtype=torch.bool).tril()
    mask = torch.randn(9, 9, generator=gen).masked_fill(~causal, float("-inf"))
    f = compile_bi(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=gqa))
    ins = leaves(q, k, v, mask)
    f(*ins).square().sum().backward()
    ref = leaves(q, k, v, mask, dtype=torch.float64)
    float64_attention(*ref[:3], attn_mask=ref[3], enable_gqa=gqa).square().sum().backward()
    for got, want in zip(ins, ref):
        assert_close_to_reference(got.grad, want.grad, dtype=torch.float32, tol_scale=10)


def test_a_row_that_sees_no_key_gets_zero_gradients_like_torch():
    """Its output is 0 whatever q, k, v are, so no gradient flows through it (torch gives 0s);
    recomputing softmax over a row of -inf gave NaN in every gradient."""
    q, k, v = leaves(*(torch.randn(1, 2, 4, 16) for _ in range(3)))
    mask = torch.ones(4, 4, dtype=torch.bool).tril()
    mask[2] = False
    torch.ops.inductor_bi.fixed_split_attention(q, k, v, mask, False, None, False).sum().backward()
    eq, ek, ev = leaves(q, k, v)
    F.scaled_dot_product_attention(eq, ek, ev, attn_mask=mask).sum().backward()
    assert torch.equal(q.grad[:, :, 2], torch.zeros(1, 2, 16))
    for got, want in ((q, eq), (k, ek), (v, ev)):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Any scale, compiled
# ----------------------------------------------------------------------------------------------


class ScaledAttention(nn.Module):
    """The scale as a module attribute: a SymFloat under dynamic=True."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)


@pytest.mark.parametrize("scale", [0.0, -0.5])
def test_zero_and_negative_scales_are_finite_and_invariant_when_compiled(scale):
    f = compile_bi(ScaledAttention(scale), dynamic=True)
    q, k, v = (torch.randn(3, 2, 11, 16) for _ in range(3))
    out = f(q, k, v)
    assert_close_to_reference(out, float64_attention(q, k, v, is_causal=True, scale=scale), dtype=torch.float32)
    assert_rows_equal(out[2:], f(q[2:], k[2:], v[2:]))


# ----------------------------------------------------------------------------------------------
# Multi-query attention by broadcasting (Falcon): one K/V head, no enable_gqa
# ----------------------------------------------------------------------------------------------


class MultiQueryAttention(nn.Module):
    def __init__(self, d=32, heads=4):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * self.head_dim)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 1, 2 * self.head_dim).transpose(1, 2).split(self.head_dim, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, N, hd] against [B, 1, N, hd]
        return out.transpose(1, 2).reshape(b, n, -1)


def test_multi_query_attention_by_broadcast_compiles_and_is_invariant(graphs):
    module = MultiQueryAttention()
    f = compile_bi(module, dynamic=True)
    x = torch.randn(4, 10, 32)
    out = f(x)
    assert any(ATTENTION in targets(gm) for gm, _ in graphs)
    with torch.no_grad():
        want = module.double()(x.double())
    module.float()
    assert_close_to_reference(out, want, dtype=torch.float32)
    assert_rows_equal(out[2:], f(x[2:]))  # rows 2-3 as a batch of 2: the same dynamic graph
    out.square().sum().backward()  # the single K/V head's gradient sums over the query heads
    grad = module.kv.weight.grad.clone()
    module.zero_grad()
    module.double()(x.double()).square().sum().backward()
    assert_close_to_reference(grad, module.kv.weight.grad, dtype=torch.float32, tol_scale=10)


# ----------------------------------------------------------------------------------------------
# dropout_p: zero is no dropout, whatever form it arrives in; nonzero is refused with its value
# ----------------------------------------------------------------------------------------------


class DropoutAttention(nn.Module):
    """dropout_p as Hugging Face passes it: a module attribute, in training mode."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0, is_causal=True)


def _attend_with_dropout(q, k, v, p):
    return F.scaled_dot_product_attention(q, k, v, dropout_p=p)


QKV = tuple(torch.randn(2, 2, 5, 16) for _ in range(3))


@pytest.mark.parametrize("form", ["attribute", "argument"])
def test_zero_dropout_under_dynamic_is_no_dropout(form):
    """Under dynamic=True Dynamo passes a float as a 0-dim tensor and ``.item()``: the pass reads
    the value Dynamo traced with (and guarded on) and drops a zero dropout."""
    if form == "attribute":
        fn, args = DropoutAttention(0.0).train(), QKV
    else:
        fn, args = _attend_with_dropout, (*QKV, 0.0)
    gm = dynamo_graph(fn, *args)
    rewrites, refusals = rewrite_attention_calls(gm)
    assert not refusals and len(rewrites) == 1 and ATTENTION in targets(gm)
    out = compile_bi(fn, dynamic=True)(*args)
    assert_close_to_reference(out, float64_attention(*QKV, is_causal=form == "attribute"), dtype=torch.float32)


@pytest.mark.parametrize("form", ["attribute", "argument", "constant"])
def test_nonzero_dropout_is_refused_naming_its_value(form):
    if form == "attribute":
        fn, args = DropoutAttention(0.1).train(), QKV
    elif form == "argument":
        fn, args = _attend_with_dropout, (*QKV, 0.1)
    else:
        fn, args = (lambda q, k, v: _attend_with_dropout(q, k, v, 0.1)), QKV
    with pytest.raises(Exception) as info:
        compile_bi(fn, dynamic=True)(*args)
    text = error_chain_text(info.value)
    assert "BatchInvarianceError" in text and "dropout_p=0.1:" in text and "dropout_p=item" not in text


def test_a_compiled_zero_dropout_does_not_serve_a_nonzero_one():
    """The zero the pass dropped is guarded: the same compiled function called with 0.2 is
    recompiled, and refused, never run without its dropout."""
    f = compile_bi(_attend_with_dropout, dynamic=True)
    f(*QKV, 0.0)
    with pytest.raises(Exception) as info:
        f(*QKV, 0.2)
    assert "dropout_p=0.2:" in error_chain_text(info.value)


def test_dropout_known_only_at_run_time_is_refused_saying_what_to_do():
    """A dropout with no value at compile time (an unbacked SymFloat, read from a tensor's data)
    is refused, saying what to pass instead. Dynamo graph-breaks before SDPA on one today, so
    such a graph is made from a traced one."""
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    gm = dynamo_graph(_attend_with_dropout, *QKV, 0.0)
    item = next(n for n in gm.graph.nodes if n.op == "call_method" and n.target == "item")
    item.meta["example_value"] = ShapeEnv().create_unbacked_symfloat()
    rewrites, refusals = rewrite_attention_calls(gm)
    assert not rewrites and len(refusals) == 1
    assert "known only at run time" in refusals[0].why and "Python float" in refusals[0].why


# ----------------------------------------------------------------------------------------------
# float64: aten's math path, whose matmuls and softmax the aten passes rewrite
# ----------------------------------------------------------------------------------------------


def _attend_fp64(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=-0.4)


def test_float64_attention_runs_the_math_path_strictly_and_invariantly(graphs):
    """The kernel has no fp64 tiles: the pass sends fp64 SDPA to aten's math path (q k^T,
    softmax, p v, each rewritten to an invariant kernel), not to the CPU flash kernel the strict
    guard refuses. Bool masks, rows that see no key and a negative scale as torch's math path."""
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, 2, 8, 16, generator=gen, dtype=torch.float64) for _ in range(3))
    mask = (torch.rand(3, 1, 8, 8, generator=gen) > 0.3) & torch.ones(8, 8, dtype=torch.bool).tril()
    mask[:, :, 4] = False  # a row that sees no key: 0, as torch gives it
    f = compile_bi(_attend_fp64, dynamic=True)
    ins = leaves(q, k, v)
    out = f(*ins, mask)
    rewritten = [t for gm, rewrites in graphs for t in targets(gm)]
    assert INVARIANT_MATMUL in rewritten and ATTENTION not in rewritten
    ref_ins = leaves(q, k, v)
    want = float64_attention(*ref_ins, attn_mask=mask, scale=-0.4)
    assert_close_to_reference(out, want)
    assert torch.equal(out[:, :, 4], torch.zeros(3, 2, 16, dtype=torch.float64))
    assert_rows_equal(out[1:3], f(q[1:3], k[1:3], v[1:3], mask[1:3]))
    out.square().sum().backward()
    want.square().sum().backward()
    for got, ref in zip(ins, ref_ins):
        assert_close_to_reference(got.grad, ref.grad, tol_scale=100)


def test_explain_reports_float64_attention_on_the_math_path():
    report = inductor_bi.explain(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), *(t.double() for t in QKV))
    dynamo = next(g for g in report.graphs if g.kind == "dynamo")
    assert [r.replacement for r in dynamo.rewrites] == ["aten._scaled_dot_product_attention_math (float64)"]
    assert not report.violations
