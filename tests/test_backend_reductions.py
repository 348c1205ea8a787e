"""Norms, softmax, sums and losses through the backend: row invariance end to end, and the guard."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import inductor_bi
from inductor_bi.kernels import reduction_table
from inductor_bi.passes.guard import find_violations
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal
from tests._support import check_row_alone_and_accuracy, error_chain_text


class RMSNorm(nn.Module):
    """Written by hand, as HF models do: pow / mean / rsqrt."""

    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d) + 0.1 * torch.randn(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, d=32, heads=4, norm="rms"):
        super().__init__()
        make_norm = (lambda: RMSNorm(d)) if norm == "rms" else (lambda: nn.LayerNorm(d))
        self.norm1, self.norm2 = make_norm(), make_norm()
        self.qkv, self.o = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.gate, self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.heads = heads

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        h = x + self.o(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, n, d))
        y = self.norm2(h)
        return h + self.down(F.silu(self.gate(y)) * self.up(y))


@pytest.fixture(scope="module", params=["rms", "layer"])
def compiled_block(request):
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = Block(norm=request.param)
    return copy.deepcopy(block).double(), torch.compile(block, backend="batch_invariant", dynamic=True)


@given(batch=st.integers(2, 9), data=st.data())
@settings(max_examples=4)
def test_transformer_block_row_equals_alone_for_any_batch(compiled_block, batch, data):
    reference, compiled = compiled_block
    row = data.draw(st.integers(0, batch - 1), label="row position")
    x = torch.randn(batch, 12, 32)
    check_row_alone_and_accuracy(compiled, reference, x, row)


def test_no_float_reduction_is_left_to_inductor(graphs):
    torch._dynamo.reset()
    block = Block(norm="layer")
    x = torch.randn(3, 8, 32, requires_grad=True)
    torch.compile(block, backend="batch_invariant")(x).sum().backward()
    assert len(graphs) == 2  # forward and backward
    for gm, rewrites in graphs:
        assert find_violations(gm) == []
        assert rewrites
    forward_ops = {r.replacement for r in graphs[0][1]}
    assert {"inductor_bi.invariant_layer_norm.default", "inductor_bi.invariant_matmul.default"} <= forward_ops


def test_rms_norm_squares_are_summed_in_the_kernel_not_written(graphs, monkeypatch):
    """x.float().pow(2).mean(-1) reads x once: the pow folds into the mean (no fp32 copy of the
    squares), and the result keeps row invariance and accuracy."""
    monkeypatch.setattr(reduction_table, "REDUCTION_FUSE_RMS_NORM", False)  # the mean on its own
    torch._dynamo.reset()
    norm = RMSNorm(64).to(torch.float16)

    def upcast_norm(x):
        h = x.float()
        return norm.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.eps)).to(x.dtype)

    x = torch.randn(5, 3, 64, dtype=torch.float16)
    compiled = torch.compile(upcast_norm, backend="batch_invariant", dynamic=True)
    with torch.no_grad():
        out, alone = compiled(x), compiled(x[2:3])
    gm, rewrites = graphs[0]
    assert [r.original for r in rewrites] == ["aten.mean.dim of x*x"]
    assert not [n for n in gm.graph.nodes if n.target is torch.ops.aten.pow.Tensor_Scalar]
    means = [n for n in gm.graph.nodes if n.target is torch.ops.inductor_bi.invariant_mean.default]
    assert means[0].args[0].meta["val"].dtype == torch.float16  # the fp16 input itself, widened in the kernel
    assert_rows_equal(out[2:3], alone)
    ref = norm.weight.double() * (x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + norm.eps))
    assert_close_to_reference(out, ref, dtype=torch.float16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_residual_add_folds_into_the_norm_with_the_same_row_sums(graphs, monkeypatch, dtype):
    """reduction_table.REDUCTION_FOLD_RESIDUAL_ADD: the norm's row kernel reads x and r of h = x + r
    itself. Rows stay invariant, and the output is what the unfolded graph computes (bitwise in
    fp32; in fp16 Inductor may feed the norm's multiply the unrounded sum, so close)."""
    weight, eps = torch.ones(64, dtype=dtype) + 0.1 * torch.randn(64).to(dtype), 1e-6

    def residual_norm(x, r):  # as HF's LlamaRMSNorm after a residual add
        h = x + r
        hf = h.float()
        return h, weight * (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)).to(dtype)

    x, r = torch.randn(5, 3, 64, dtype=dtype), torch.randn(5, 3, 64, dtype=dtype)
    outs = {}
    monkeypatch.setattr(reduction_table, "REDUCTION_FUSE_RMS_NORM", False)  # the mean on its own (fused: the next test)
    for fold in (False, True):
        torch._dynamo.reset()
        graphs.clear()
        monkeypatch.setattr(reduction_table, "REDUCTION_FOLD_RESIDUAL_ADD", fold)
        compiled = torch.compile(residual_norm, backend="batch_invariant", dynamic=True)
        with torch.no_grad():
            outs[fold], alone = compiled(x, r), compiled(x[2:3], r[2:3])
        assert_rows_equal(outs[fold][1][2:3], alone[1])
        gm, rewrites = graphs[0]
        assert [rw.original for rw in rewrites] == ["aten.mean.dim of x*x" + (" of x = a + b" if fold else "")]
        (mean,) = [n for n in gm.graph.nodes if n.target is torch.ops.inductor_bi.invariant_mean.default]
        assert (len(mean.args) == 6 and mean.args[5] is not None) == fold
    assert torch.equal(outs[True][0], outs[False][0])
    if dtype == torch.float32:
        assert torch.equal(outs[True][1], outs[False][1])
    h = x.double() + r.double()
    assert_close_to_reference(outs[True][1], weight.double() * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rms_norm_and_its_residual_add_run_as_one_row_kernel(graphs, monkeypatch, dtype):
    """reduction_table.REDUCTION_FUSE_RMS_NORM with REDUCTION_FOLD_RESIDUAL_ADD: HF's RMSNorm after a
    residual add becomes one invariant_rms_norm_rows call that also stores h for the residual
    stream; no add, mean, rsqrt or normalize is left for Inductor. Rows stay invariant, h is
    exactly x + r, the output is within tolerance of float64."""
    monkeypatch.setattr(reduction_table, "REDUCTION_FOLD_RESIDUAL_ADD", True)
    monkeypatch.setattr(reduction_table, "REDUCTION_FUSE_RMS_NORM", True)
    weight, eps = torch.ones(64, dtype=dtype) + 0.1 * torch.randn(64).to(dtype), 1e-6

    def residual_norm(x, r):  # the residual stream reads h after the norm, as in a transformer
        h = x + r
        hf = h.float()
        out = weight * (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)).to(dtype)
        return out, h * 2

    torch._dynamo.reset()
    x, r = torch.randn(5, 3, 64, dtype=dtype), torch.randn(5, 3, 64, dtype=dtype)
    compiled = torch.compile(residual_norm, backend="batch_invariant", dynamic=True)
    with torch.no_grad():
        (out, h2), (alone, _) = compiled(x, r), compiled(x[2:3], r[2:3])
    gm, rewrites = graphs[0]
    assert [rw.original for rw in rewrites][-1] == "RMSNorm: mean of x*x, rsqrt, normalize, weight (after x = a + b)"
    targets = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert torch.ops.inductor_bi.invariant_rms_norm_rows.default in targets
    aten = torch.ops.aten
    assert not targets & {aten.add.Tensor, aten.rsqrt.default, torch.ops.inductor_bi.invariant_mean.default}
    assert_rows_equal(out[2:3], alone)
    assert torch.equal(h2, (x + r) * 2)
    h = (x + r).double()
    assert_close_to_reference(out, weight.double() * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps), dtype=dtype)


class WidenedRMSNorm(nn.Module):
    """examples/model.py's RMSNorm: statistics in fp32, eps a module attribute."""

    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d) + 0.1 * torch.randn(d)), eps

    def forward(self, x):
        h = x.float()
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def test_unspecialized_eps_is_read_by_the_row_kernel_not_converted_by_a_host_kernel(graphs, monkeypatch):
    """Under dynamic=True Dynamo passes a module's float eps as a 0-dim float64 CPU tensor that
    the graph widens to fp32: a CPU op, for which Inductor compiles a C++ kernel on a GPU model
    too (v12, H200, under cProfile: C++ builds and a CPU ISA probe, 37 s of the llama-1b compile).
    The fused norm reads the tensor itself on the host, as the same fp32 value: no op on a host
    scalar is left in the graph, and the output is the norm's."""
    monkeypatch.setattr(reduction_table, "REDUCTION_FUSE_RMS_NORM", True)
    torch._dynamo.reset()
    norm = WidenedRMSNorm(32)
    x = torch.randn(5, 3, 32)
    compiled = torch.compile(norm, backend="batch_invariant", dynamic=True)
    with torch.no_grad():
        out, alone = compiled(x), compiled(x[2:3])
    gm = graphs[0][0]
    fused = [n for n in gm.graph.nodes if n.target is torch.ops.inductor_bi.invariant_rms_norm_rows.default]
    assert len(fused) == 1
    eps_tensor = fused[0].args[6]
    assert eps_tensor is not None and eps_tensor.op == "placeholder"  # Dynamo did pass eps as a tensor
    host_ops = [n for n in gm.graph.nodes if n.op == "call_function" and isinstance(v := n.meta.get("val"), torch.Tensor) and v.dim() == 0]
    assert host_ops == []
    assert_rows_equal(out[2:3], alone)

    def literal_eps(x):  # eps a constant in the code: Dynamo passes no tensor for it
        h = x.float()
        return norm.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype)

    with torch.no_grad():
        assert torch.equal(out, torch.compile(literal_eps, backend="batch_invariant", dynamic=True)(x))  # the same fp32 eps
    h = x.double()
    assert_close_to_reference(out, norm.weight.double() * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5), dtype=torch.float32)


def test_rms_norm_whose_pieces_are_reused_is_not_fused(graphs, monkeypatch):
    monkeypatch.setattr(reduction_table, "REDUCTION_FUSE_RMS_NORM", True)
    torch._dynamo.reset()

    def norm_and_scale(x):
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return x * rstd, rstd  # the rsqrt is an output too: the chain stays as it was

    x = torch.randn(4, 32)
    with torch.no_grad():
        out, rstd = torch.compile(norm_and_scale, backend="batch_invariant")(x)
    assert [rw.original for rw in graphs[0][1]] == ["aten.mean.dim of x*x"]
    assert_close_to_reference(out, x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-6), dtype=torch.float32)


def test_broadcast_add_is_not_folded(graphs, monkeypatch):
    monkeypatch.setattr(reduction_table, "REDUCTION_FOLD_RESIDUAL_ADD", True)
    torch._dynamo.reset()
    x, bias = torch.randn(3, 40), torch.randn(40)
    with torch.no_grad():
        out = torch.compile(lambda x: (x + bias).pow(2).mean(-1), backend="batch_invariant")(x)
    assert [rw.original for rw in graphs[0][1]] == ["aten.mean.dim of x*x"]
    assert_close_to_reference(out, (x.double() + bias.double()).pow(2).mean(-1), dtype=torch.float32)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x.pow(2).mean(-1),  # squares in fp16: they may overflow, as in eager
        lambda x: (lambda sq: sq.mean(-1) + sq[..., 0])(x.float().pow(2)),  # the squares are used twice
        lambda x: x.float().pow(3).mean(-1),
    ],
    ids=["fp16-squares", "squares-reused", "cube"],
)
def test_squares_the_graph_needs_are_not_folded(graphs, fn):
    torch._dynamo.reset()
    x = torch.randn(3, 40, dtype=torch.float16) * 300  # 300**2 overflows fp16
    with torch.no_grad():
        out = torch.compile(fn, backend="batch_invariant")(x)
    assert [r.original for r in graphs[0][1]] == ["aten.mean.dim"]
    assert torch.equal(out.isinf(), fn(x).isinf())


def test_attention_output_needs_no_copy_to_merge_heads(graphs):
    """fixed_split_attention writes [B, L, H, D] memory (kernels.attention.empty_output), so the
    block's transpose(1, 2).reshape(...) stays a view: no copy kernel between attention and o."""
    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(Block(norm="rms"), backend="batch_invariant")(torch.randn(2, 8, 32))
    gm, _ = graphs[0]
    assert any(n.target is torch.ops.inductor_bi.fixed_split_attention.default for n in gm.graph.nodes)
    assert not [n for n in gm.graph.nodes if n.target in (torch.ops.aten.clone.default, torch.ops.aten.copy.default)]


def test_training_gradients_match_reference():
    torch._dynamo.reset()
    block = Block(norm="rms")
    x = torch.randn(3, 8, 32, requires_grad=True)
    torch.compile(block, backend="batch_invariant")(x).square().sum().backward()
    got = [x.grad.clone()] + [p.grad.clone() for p in block.parameters()]
    ref_block = copy.deepcopy(block).double()
    ref_block.zero_grad()
    x64 = x.detach().double().requires_grad_(True)
    ref_block(x64).square().sum().backward()
    want = [x64.grad] + [p.grad for p in ref_block.parameters()]
    for g, w in zip(got, want):
        assert_close_to_reference(g, w, dtype=torch.float32, tol_scale=50)


def test_per_row_cross_entropy_equals_alone():
    torch._dynamo.reset()
    loss = torch.compile(lambda z, t: F.cross_entropy(z, t, reduction="none"), backend="batch_invariant", dynamic=True)
    logits, target = torch.randn(7, 50), torch.randint(0, 50, (7,))
    batched = loss(logits, target)
    for row in (0, 4):
        assert_rows_equal(batched[row : row + 1], loss(logits[row : row + 1], target[row : row + 1]))
    assert_close_to_reference(batched, F.cross_entropy(logits.double(), target, reduction="none"))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reduced_cross_entropy_matches_reference(reduction):
    torch._dynamo.reset()
    logits, target = torch.randn(6, 40), torch.randint(0, 40, (6,))
    out = torch.compile(lambda z, t: F.cross_entropy(z, t, reduction=reduction), backend="batch_invariant")(logits, target)
    assert_close_to_reference(out, F.cross_entropy(logits.double(), target, reduction=reduction))


def _index_add_model(x, idx):
    return torch.zeros(4, x.shape[1]).index_add(0, idx, x)  # the guard must name this line


_INDEX = torch.tensor([0, 1, 1, 2, 3, 3])


def test_guard_rejects_index_add_naming_the_source_line():
    torch._dynamo.reset()
    with pytest.raises(Exception) as info:
        torch.compile(_index_add_model, backend="batch_invariant")(torch.randn(6, 5), _INDEX)
    text = error_chain_text(info.value)
    assert "BatchInvarianceError" in text and "accumulates with atomics" in text
    assert "torch.zeros(4, x.shape[1]).index_add(0, idx, x)" in text and "test_backend_reductions.py" in text


def test_non_strict_warns_and_compiles():
    torch._dynamo.reset()
    x = torch.randn(6, 5)
    with pytest.warns(UserWarning, match="(?s)strict=False.*index_add"):
        out = torch.compile(_index_add_model, backend="batch_invariant", options={"strict": False})(x, _INDEX)
    assert torch.allclose(out, _index_add_model(x, _INDEX))


def test_attention_dropout_is_rejected_in_strict_mode():
    torch._dynamo.reset()
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(Exception) as info:
        torch.compile(lambda q: F.scaled_dot_product_attention(q, q, q, dropout_p=0.1), backend="batch_invariant")(q)
    assert "dropout_p=0.1" in error_chain_text(info.value)


def test_batch_invariance_error_is_public():
    assert issubclass(inductor_bi.BatchInvarianceError, RuntimeError)


# ---------------------------------------------------------------------------------------------
# Shapes the pass reads from the graph: symbolic normalized shapes
# ---------------------------------------------------------------------------------------------


def _layer_norm_over_last_dim(x):
    return F.layer_norm(x, x.shape[-1:])  # under dynamic=True the normalized shape is symbolic


def test_layer_norm_with_a_symbolic_normalized_shape_compiles_for_any_batch_and_hidden_size(graphs):
    """F.layer_norm(x, x.shape[-1:]) gives the pass SymInt nodes for normalized_shape: it must
    rewrite the op (one graph for every batch and hidden size, no specialization) and stay
    invariant and accurate; explain reports it too."""
    torch._dynamo.reset()
    compiled = torch.compile(_layer_norm_over_last_dim, backend="batch_invariant", dynamic=True)
    for batch, hidden in ((5, 24), (3, 40)):
        x = torch.randn(batch, hidden)
        with torch.no_grad():
            out, alone = compiled(x), compiled(x[1:2])
        assert_rows_equal(out[1:2], alone)
        assert_close_to_reference(out, F.layer_norm(x.double(), (hidden,)), dtype=torch.float32)
        if batch == 5:
            compiled_first = len(graphs)  # a dynamic graph and Dynamo's batch-1 one
    assert len(graphs) == compiled_first  # the second shape compiled nothing: no size was specialized
    assert {r.original for _, rewrites in graphs for r in rewrites} == {"aten.native_layer_norm.default"}
    report = inductor_bi.explain(_layer_norm_over_last_dim, torch.randn(5, 24))
    (rewrite,) = [r for _, r in report.rewrites]
    assert rewrite.replacement == "inductor_bi.invariant_layer_norm.default"
    assert rewrite.details["block_r"] == "f(R) (R symbolic)"


# ---------------------------------------------------------------------------------------------
# Large and tiny magnitudes through the backend
# ---------------------------------------------------------------------------------------------


def test_var_of_large_values_is_finite_and_invariant_through_the_backend():
    """torch.var of 600 values ~1e18 (variance ~1e36, its squares' sum past fp32): eager gives a
    finite variance, the compiled one gave inf."""
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: torch.var(x, -1), backend="batch_invariant", dynamic=True)
    x = torch.randn(4, 600) * 1e18
    with torch.no_grad():
        out, alone = compiled(x), compiled(x[2:3])
    assert_rows_equal(out[2:3], alone)
    assert_close_to_reference(out, torch.var(x.double(), -1))


def _std_and_std_mean(x):
    return torch.std(x, -1), *torch.std_mean(x, [-1], correction=0, keepdim=True)


@pytest.mark.parametrize("scale", [1.0, 1e25, 1e-30])
def test_std_is_one_row_kernel_finite_and_nonzero_where_float32_holds_it(graphs, scale):
    """std / std_mean decompose to sqrt(var): the pass makes each one invariant_std_mean, whose
    kernel takes the root before the row's scale goes back. std of values ~1e25 (variance past
    fp32) is finite and of values ~1e-30 (variance under fp32) nonzero, as eager gives them;
    sqrt(var) gave inf and 0. Rows stay invariant."""
    torch._dynamo.reset()
    compiled = torch.compile(_std_and_std_mean, backend="batch_invariant", dynamic=True)
    x = torch.randn(4, 600) * scale
    with torch.no_grad():
        outs, alone = compiled(x), compiled(x[1:2])
    for out, one in zip(outs, alone):
        assert_rows_equal(out[1:2], one)
    for out, ref in zip(outs, _std_and_std_mean(x.double())):
        assert_close_to_reference(out, ref)
    assert graphs
    for gm, _ in graphs:
        targets = {n.target for n in gm.graph.nodes}
        assert torch.ops.aten.sqrt.default not in targets and torch.ops.inductor_bi.invariant_var_mean.default not in targets


# ---------------------------------------------------------------------------------------------
# Per-sample norms: group norm and instance norm
# ---------------------------------------------------------------------------------------------
# Their statistics are per sample (per (sample, group) / (sample, channel)): Inductor's
# decompositions turn them into var_mean over those rows, forward, and sums, backward, which the
# pass rewrites. Instance norm runs aten's batch_norm on an [N * C, ...] view: it must not be
# taken for batch norm on batch statistics, which is refused.


@pytest.mark.parametrize(
    "make_norm",
    [
        lambda: nn.GroupNorm(2, 6),
        lambda: nn.GroupNorm(6, 6),  # wav2vec2's feature extractor: one group per channel
        lambda: nn.InstanceNorm1d(6, affine=True),
        lambda: nn.InstanceNorm1d(6, affine=True, track_running_stats=True),
    ],
    ids=["group_norm", "group_per_channel", "instance_norm", "instance_norm_running_stats"],
)
def test_group_and_instance_norm_train_with_invariant_rows_and_float64_gradients(graphs, make_norm):
    torch._dynamo.reset()
    torch.manual_seed(0)
    norm = make_norm()
    if getattr(norm, "weight", None) is not None:
        with torch.no_grad():
            norm.weight.add_(0.1 * torch.randn_like(norm.weight))
            norm.bias.add_(0.1 * torch.randn_like(norm.bias))
    reference = copy.deepcopy(norm).double()
    compiled = torch.compile(norm, backend="batch_invariant", dynamic=True)  # strict: nothing may be refused
    x = (torch.randn(5, 6, 7) * 2 + 1).requires_grad_(True)
    g = torch.randn(5, 6, 7)  # a normalized row's sum of squares is constant: its gradient would be noise
    out = compiled(x)
    (out * g).sum().backward()
    x_ref = x.detach().double().requires_grad_(True)
    want = reference(x_ref)
    (want * g.double()).sum().backward()
    assert_close_to_reference(out, want, dtype=torch.float32)
    assert_close_to_reference(x.grad, x_ref.grad, dtype=torch.float32, tol_scale=10)
    for p, q in zip(norm.parameters(), reference.parameters()):
        assert_close_to_reference(p.grad, q.grad, dtype=torch.float32, tol_scale=10)
    # a row's output and its input gradient are its own, alone or in the batch
    x_alone = x.detach()[2:3].clone().requires_grad_(True)
    (compiled(x_alone) * g[2:3]).sum().backward()
    assert_rows_equal(compiled(x_alone).detach(), out.detach()[2:3])
    assert_rows_equal(x_alone.grad, x.grad[2:3])
    assert any(r.replacement == "inductor_bi.invariant_var_mean.default" for _, rewrites in graphs for r in rewrites)


def test_explain_reports_group_norm_as_rewritten_not_refused():
    report = inductor_bi.explain(nn.GroupNorm(4, 8), torch.randn(3, 8, 10))
    assert report.violations == [] and report.guard_error is None
    assert "inductor_bi.invariant_var_mean.default" in {r.replacement for _, r in report.rewrites}
