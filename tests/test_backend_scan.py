"""The scan pass (passes/scan.py) end to end through the backend (graph in -> graph out: tests/passes/test_scan.py):
a model with cumsum / cumprod / logcumsumexp compiles under strict mode, its rows are invariant,
its backward runs on the invariant kernels; a tiny Hugging Face OPT (position ids from a cumsum of
the attention mask) compiles and is invariant; explain lists the rewrite; what stays refused."""

import copy

import pytest
import torch
import torch.nn as nn

import inductor_bi
from inductor_bi.errors import BatchInvarianceError
from inductor_bi.kernels import scan as scan_kernel
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal

aten = torch.ops.aten
bi = torch.ops.inductor_bi
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------


class ScanModel(nn.Module):
    """Positions from a float mask (OPT-style), a running mean of features, a cumulative
    product of gates and a log-cumulative-sum-exp over time, along different dims."""

    def __init__(self, d=8):
        super().__init__()
        self.proj = nn.Linear(d, d)
        self.freq = nn.Parameter(torch.randn(d) / 4)

    def forward(self, x, mask):
        pos = torch.cumsum(mask, dim=1) * mask
        h = self.proj(x) + torch.sin(pos.unsqueeze(-1) * self.freq)
        running = torch.cumsum(h, dim=1) / torch.arange(1, h.shape[1] + 1, device=h.device).view(1, -1, 1)
        gates = torch.cumprod(torch.sigmoid(h), dim=-1)
        return running + gates + torch.logcumsumexp(h, dim=1)


def _inputs(batch, n=20, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, n)
    mask[:, :3] = 0  # left padding
    return torch.randn(batch, n, d, generator=g), mask


def _float64(model):
    return copy.deepcopy(model).double()


@pytest.mark.parametrize("device", DEVICES)
def test_model_with_scans_compiles_strict_and_its_rows_and_gradients_are_invariant(device, graphs):
    """Forward and backward (aten's scan gradients are reversed scans) under strict mode."""
    torch._dynamo.reset()
    model = ScanModel().to(device)
    compiled = torch.compile(model, backend="batch_invariant", dynamic=True, options={"strict": True})

    def run(x, mask):
        leaf = x.clone().requires_grad_(True)
        out = compiled(leaf, mask)
        out.square().sum().backward()
        return out.detach(), leaf.grad

    x, mask = (t.to(device) for t in _inputs(5))
    full, full_grad = run(x, mask)
    for rows, row in ((slice(0, 1), 0), (slice(2, 4), 3)):  # row 0 alone; row 3 at position 1 of 2
        out, grad = run(x[rows], mask[rows])
        at = row - rows.start
        assert_rows_equal(out[at], full[row], f"row {row} at {at} of {out.shape[0]} vs in 5")
        assert_rows_equal(grad[at], full_grad[row], f"row {row}'s input gradient at {at} of {out.shape[0]} vs in 5")
    backward = [rewrites for gm, rewrites in graphs if any(n.name.startswith("tangents") for n in gm.graph.nodes)]
    assert backward, "no backward graph was compiled"
    replaced = {r.replacement for rewrites in backward for r in rewrites}
    assert {f"inductor_bi.invariant_{op}.default" for op in ("cumsum", "cumprod", "logcumsumexp")} <= replaced
    leaf = x.double().requires_grad_(True)
    ref = _float64(model)(leaf, mask.double())
    ref.square().sum().backward()
    assert_close_to_reference(full, ref, dtype=torch.float32, tol_scale=4)
    assert_close_to_reference(full_grad, leaf.grad, dtype=torch.float32, tol_scale=10)


def _products(x):
    """prod over the last dim, over a middle dim kept, over every element of a row, and with a
    float64 result; (the middle dim's length is symbolic under dynamic=True: it may be 0)."""
    return (
        torch.prod(x, -1),
        torch.prod(x, 1, keepdim=True),
        torch.prod(x.flatten(1)[:, :5], dim=1),
        torch.prod(x[0]).expand(x.shape[0]),
        torch.prod(x, 2, dtype=torch.float64),
    )


@pytest.mark.parametrize("device", DEVICES)
def test_products_run_on_the_scan_kernel_strict_invariant_and_close(device, graphs):
    """A float prod is a cumprod's last element (aten's cumprod backward uses prod on some
    versions): compiled strict, a row alone == the row in a batch, close to float64, an empty
    product is 1."""
    torch._dynamo.reset()
    compiled = torch.compile(_products, backend="batch_invariant", dynamic=True, options={"strict": True})
    g = torch.Generator().manual_seed(0)
    x = (1 + torch.rand(5, 7, 6, generator=g) / 4).to(device)
    full = compiled(x)
    for got, want in zip(full, _products(x.double())):
        assert_close_to_reference(got, want, dtype=torch.float32, tol_scale=4)
    alone = compiled(x[3:4])
    for i in (0, 1, 2, 4):
        assert_rows_equal(alone[i], full[i][3:4], f"product {i}: row 3 alone vs in 5")
    empty = compiled(x[:, :0])
    assert all(torch.equal(e, w) for e, w in zip(empty, _products(x[:, :0]))), "an empty product is 1"
    replaced = {r.replacement for _, rewrites in graphs for r in rewrites}
    assert any("invariant_cumprod" in r for r in replaced)


def test_complex_cumsum_is_still_refused_under_strict():
    torch._dynamo.reset()
    with pytest.raises(Exception) as info:
        torch.compile(lambda z: torch.cumsum(z, 1) * 2, backend="batch_invariant")(torch.randn(2, 5, dtype=torch.complex64))
    assert isinstance(info.value, BatchInvarianceError) or "BatchInvarianceError" in repr(info.value)
    assert "aten.cumsum" in str(info.value)


def test_explain_lists_the_scan_rewrite_with_its_pinned_block():
    report = inductor_bi.explain(lambda x: torch.cumsum(x, -1), torch.randn(3, 40))
    ((graph, r),) = report.rewrites
    assert r.original == "aten.cumsum.default" and r.replacement == "inductor_bi.invariant_cumsum.default"
    assert r.details["block"] == scan_kernel.SCAN_BLOCK_CUDA  # explain reports the CUDA launch
    assert report.violations == [] and report.guard_error is None
    assert "invariant_cumsum" in report.to_text()


# ---------------------------------------------------------------------------------------------
# Hugging Face OPT: learned positions from torch.cumsum(attention_mask, dim=1)
# ---------------------------------------------------------------------------------------------


def _tiny_opt():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.OPTConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, ffn_dim=64, num_attention_heads=2,
        max_position_embeddings=32, word_embed_proj_dim=32, pad_token_id=1, attn_implementation="sdpa",
    )  # fmt: skip
    return transformers.OPTForCausalLM(config).eval()


def test_hf_opt_without_a_mask_compiles_strict_and_row_zero_is_invariant(graphs):
    """Without an attention mask OPT scans a float mask of ones for its position ids: the issue's
    refusal. (An int64 mask's cumsum is exact and stays on aten: see the graph test above.)"""
    torch._dynamo.reset()
    model = _tiny_opt()
    compiled = torch.compile(model, backend="batch_invariant", dynamic=True, fullgraph=True)
    ids = torch.randint(3, 64, (5, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = compiled(input_ids=ids, use_cache=False).logits
        for batch in (1, 2):
            alone = compiled(input_ids=ids[:batch], use_cache=False).logits
            assert_rows_equal(alone[0], full[0], f"row 0 in a batch of {batch} vs 5")
        eager = model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(full, eager, rtol=1e-4, atol=1e-4)
    assert "aten.cumsum.default" in {r.original for _, rewrites in graphs for r in rewrites}
