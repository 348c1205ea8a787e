"""passes/index_accumulate.py end to end (which accumulating puts become fixed-order sums, graph
in -> graph out: tests/passes/test_index_accumulate.py): a Llama-style model with nn.Embedding
trained under strict mode, its embedding gradient close to float64, the same bits run to run and for a row alone or in a batch."""

import copy
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import inductor_bi  # noqa: F401  (registers torch.ops.inductor_bi)
from inductor_bi.errors import BatchInvarianceError
from inductor_bi.testing import assert_close_to_reference
from tests._support import GraphRecorder, error_chain_text

aten = torch.ops.aten
FIXED_PUT = torch.ops.inductor_bi.fixed_order_index_put_accumulate.default
ACCUMULATING = {aten.index_put.default, aten._unsafe_index_put.default, aten._unsafe_masked_index_put_accumulate.default}


def _targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


# ---------------------------------------------------------------------------------------------
# Compiled: which graphs get the rewrite
# ---------------------------------------------------------------------------------------------


def test_gather_by_index_trains_its_gradient_put_rewritten(graphs):
    torch._dynamo.reset()
    w = torch.randn(7, 5, requires_grad=True)
    ids = torch.tensor([[3, 1, 3], [0, 3, 6]])
    torch.compile(lambda w, i: (w[i] * torch.arange(5.0)).sum(), backend="batch_invariant")(w, ids).backward()
    forward, backward = graphs
    assert not [r for r in forward[1] if r.replacement == str(FIXED_PUT)]
    assert [r.original for r in backward[1] if r.replacement == str(FIXED_PUT)] == ["aten.index_put.default"]
    want = torch.zeros(7, 5).index_put((ids,), torch.arange(5.0).expand(2, 3, 5), accumulate=True)
    assert torch.equal(w.grad, want)


def test_gather_trains_its_gradient_scatter_add_rewritten(graphs):
    """log_softmax(x).gather(-1, t): the gradient is a scatter_add, summed in a fixed order now
    (strict mode used to refuse it), with aten's values."""
    torch._dynamo.reset()
    x = torch.randn(4, 9, requires_grad=True)
    t = torch.tensor([[2], [8], [0], [2]])
    torch.compile(lambda x, t: torch.log_softmax(x, -1).gather(-1, t).sum(), backend="batch_invariant")(x, t).backward()
    _, backward = graphs
    assert [r.original for r in backward[1] if r.replacement == "inductor_bi.fixed_order_scatter_add.default"] == [
        "aten.scatter_add.default"
    ]
    want = x.detach().double().requires_grad_()
    torch.log_softmax(want, -1).gather(-1, t).sum().backward()
    assert_close_to_reference(x.grad, want.grad)


def test_forward_scatter_stays_refused_in_a_training_graph():
    torch._dynamo.reset()
    x = torch.randn(6, 4, requires_grad=True)
    idx = torch.tensor([0, 2, 0, 1, 2, 2])
    with pytest.raises(Exception) as info:
        torch.compile(lambda x, i: torch.zeros(3, 4).index_add(0, i, x), backend="batch_invariant")(x, idx)
    text = error_chain_text(info.value)
    assert "BatchInvarianceError" in text and "index_put" in text and "forward scatter" in text, text


# ---------------------------------------------------------------------------------------------
# End to end: a Llama-style model with nn.Embedding, trained under strict mode
# ---------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(d) + 0.5)

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class TinyLlama(nn.Module):
    """Embedding, pre-norm causal attention block, gated SiLU MLP, final norm, LM head, log-softmax."""

    def __init__(self, vocab=29, d=16, heads=2, ffn=32):
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(vocab, d)
        self.attn_norm, self.mlp_norm, self.final_norm = RMSNorm(d), RMSNorm(d), RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.gate, self.up = nn.Linear(d, ffn, bias=False), nn.Linear(d, ffn, bias=False)
        self.down = nn.Linear(ffn, d, bias=False)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids):
        x = self.embed(ids)
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(attn.transpose(1, 2).reshape(b, t, d))
        h = self.mlp_norm(x)
        x = x + self.down(F.silu(self.gate(h)) * self.up(h))
        return torch.log_softmax(self.head(self.final_norm(x)), dim=-1)


def _row0_loss(model, ids, targets):
    """The loss of row 0 only: the other rows are in the batch, their losses are not counted."""
    logp = model(ids)
    return F.nll_loss(logp[0], targets[0], reduction="sum")


def _embedding_grad(model, compiled, ids, targets):
    model.zero_grad()
    _row0_loss(compiled, ids, targets).backward()
    return model.embed.weight.grad.clone()


@pytest.fixture(scope="module")
def trained():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = TinyLlama()
    reference = copy.deepcopy(model).double()
    ids = torch.randint(0, 29, (3, 7))
    ids[1:, :3] = ids[0, :3]  # other rows share row 0's tokens: their weight rows get zeros added
    targets = torch.randint(0, 29, (3, 7))
    compiled = torch.compile(model, backend="batch_invariant", options={"strict": True})
    with GraphRecorder() as recorder:
        batched = [_embedding_grad(model, compiled, ids, targets) for _ in range(2)]
        alone = _embedding_grad(model, compiled, ids[:1], targets[:1])
    _row0_loss(reference, ids, targets).backward()
    return types.SimpleNamespace(
        batched=batched, alone=alone, want=reference.embed.weight.grad, rewritten=recorder.rewritten, ids=ids
    )


def test_strict_training_compiles_with_the_embedding_gradient_rewritten(trained):
    backward = [(gm, rw) for gm, rw in trained.rewritten if any(r.replacement == str(FIXED_PUT) for r in rw)]
    assert len(backward) == 2  # the batch of 3 and the row alone: one backward graph each
    for gm, rewrites in backward:
        assert [r.original for r in rewrites if r.replacement == str(FIXED_PUT)] == ["aten._unsafe_masked_index_put_accumulate.default"]
        assert not ACCUMULATING & set(_targets(gm))


def test_embedding_gradient_is_close_to_float64(trained):
    assert_close_to_reference(trained.batched[0], trained.want, dtype=torch.float32, tol_scale=10)
    assert trained.batched[0][trained.ids[0]].abs().sum() > 0  # row 0's tokens got gradient


def test_embedding_gradient_bits_are_the_same_run_to_run(trained):
    assert torch.equal(trained.batched[0], trained.batched[1])


def test_row_alone_gives_the_embedding_gradient_bits_of_the_batch(trained):
    assert torch.equal(trained.alone, trained.batched[0])
