"""MoE routing ops (kernels/moe.py, passes/moe.py): invariant grouped matmul, exact histc,
integer cumsum; and the pass on an aten graph."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.experimental.proxy_tensor import make_fx

import inductor_bi  # noqa: F401  (registers torch.ops.inductor_bi)
from inductor_bi.kernels.moe import exact_histc, grouped_mm_weight_grad, invariant_grouped_mm
from inductor_bi.passes.guard import find_violations
from inductor_bi.passes.moe import rewrite_moe_routing
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal

K, N, G = 48, 40, 4


def _offsets(counts):
    return torch.tensor(counts, dtype=torch.int32).cumsum(0, dtype=torch.int32)


def _reference(a, b, offs):
    out = torch.zeros(a.shape[0], b.shape[2], dtype=torch.float64)
    start = 0
    for g, end in enumerate(offs.tolist()):
        out[start:end] = a[start:end].double() @ b[g].double()
        start = end
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_mm_matches_float64(dtype):
    a, b = torch.randn(13, K).to(dtype), torch.randn(G, K, N).to(dtype)
    offs = _offsets([3, 0, 6, 2])  # an empty group; rows 11, 12 past the last offset
    out = invariant_grouped_mm(a, b, offs)
    assert out.dtype == dtype and out.shape == (13, N)
    assert_close_to_reference(out[:11], _reference(a, b, offs)[:11], dtype=dtype)
    assert torch.equal(out[11:], torch.zeros(2, N, dtype=dtype))


@given(counts=st.lists(st.integers(0, 9), min_size=G, max_size=G), data=st.data())
@settings(max_examples=6)
def test_grouped_mm_row_bits_do_not_depend_on_its_group(counts, data):
    """A token's expert output: the same alone in its group as among any other tokens."""
    total = sum(counts)
    if total == 0:
        return
    torch.manual_seed(total)
    a, b = torch.randn(total, K), torch.randn(G, K, N)
    offs = _offsets(counts)
    out = invariant_grouped_mm(a, b, offs)
    row = data.draw(st.integers(0, total - 1), label="row")
    group = int((offs <= row).sum())
    alone_counts = [1 if g == group else 0 for g in range(G)]
    alone = invariant_grouped_mm(a[row : row + 1], b, _offsets(alone_counts))
    assert_rows_equal(out[row : row + 1], alone)


def test_grouped_mm_rejects_bad_offsets():
    a, b = torch.randn(5, K), torch.randn(G, K, N)
    with pytest.raises(RuntimeError, match="non-decreasing"):
        invariant_grouped_mm(a, b, torch.tensor([2, 1, 3, 5], dtype=torch.int32))
    with pytest.raises(RuntimeError, match="<= 5"):
        invariant_grouped_mm(a, b, torch.tensor([2, 3, 4, 6], dtype=torch.int32))
    with pytest.raises(RuntimeError, match="shape"):
        invariant_grouped_mm(a, b, torch.tensor([2, 3, 5], dtype=torch.int32))


def test_grouped_mm_custom_op_gradients_match_float64():
    a = torch.randn(9, K, requires_grad=True)
    b = torch.randn(G, K, N, requires_grad=True)
    offs = _offsets([2, 4, 0, 3])
    torch.ops.inductor_bi.invariant_grouped_mm(a, b, offs).square().sum().backward()
    a64, b64 = a.detach().double().requires_grad_(True), b.detach().double().requires_grad_(True)
    out64 = torch.cat([a64[s:e] @ b64[g] for g, (s, e) in enumerate([(0, 2), (2, 6), (6, 6), (6, 9)])])
    out64.square().sum().backward()
    assert_close_to_reference(a.grad, a64.grad, dtype=torch.float32, tol_scale=10)
    assert_close_to_reference(b.grad, b64.grad, dtype=torch.float32, tol_scale=10)
    assert torch.equal(grouped_mm_weight_grad(a.detach(), torch.ones(9, N), offs, G)[2], torch.zeros(K, N))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "values, bins, lo, hi",
    [
        ("ids", 8, 0, 7),  # MoE: integer-valued expert ids, max = last bin
        ("normal", 10, -1.5, 2.0),  # values outside the range are dropped
        ("normal", 7, 0, 0),  # min == max: the data's range
        ("const", 5, 0, 0),  # all equal: widened by 1 each way
        ("edges", 4, 0, 1),  # exactly on bin edges, the top edge, NaN
    ],
)
def test_exact_histc_equals_aten(dtype, values, bins, lo, hi):
    g = torch.Generator().manual_seed(0)
    x = {
        "ids": lambda: torch.randint(0, 8, (1000,), generator=g).to(dtype),
        "normal": lambda: torch.randn(999, generator=g, dtype=dtype),
        "const": lambda: torch.full((17,), 3.25, dtype=dtype),
        "edges": lambda: torch.tensor([0, 0.25, 0.5, 0.75, 1.0, 1.0, -0.0, float("nan"), 1.5, -1e-9], dtype=dtype),
    }[values]()
    want = torch.histc(x, bins=bins, min=lo, max=hi)
    got = exact_histc(x, bins, lo, hi)
    assert got.dtype == want.dtype and torch.equal(got, want), (got, want)


def test_exact_histc_rejects_what_aten_rejects():
    with pytest.raises(TypeError):
        exact_histc(torch.ones(3, dtype=torch.bfloat16), 4, 0, 1)
    with pytest.raises(RuntimeError, match="max must be larger"):
        exact_histc(torch.ones(3), 4, 2, 1)
    with pytest.raises(RuntimeError, match="not finite"):
        exact_histc(torch.ones(3), 4, 0, float("inf"))


# ---------------------------------------------------------------------------------------------
# The pass, on an aten graph shaped like Hugging Face's grouped_mm experts forward.
# ---------------------------------------------------------------------------------------------


def _moe_like(x, expert_ids, w):
    """Sort by expert, count with histc (float ids, as HF does on CPU), offsets by cumsum(int32),
    grouped matmul, restore the order."""
    ids_sorted, perm = torch.sort(expert_ids)
    counts = torch.histc(ids_sorted.float(), bins=w.shape[0], min=0, max=w.shape[0] - 1)
    offs = torch.cumsum(counts, dim=0, dtype=torch.int32)
    out = torch._grouped_mm(x[perm], w, offs=offs)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.shape[0])
    return out[inv], counts, offs


def test_pass_rewrites_grouped_mm_histc_and_cumsum_and_leaves_nothing_unsafe():
    # aten._grouped_mm's meta function takes bf16 only (fp32 MoE weights go through
    # transformers::grouped_mm_fallback instead, which tests/test_hf_models.py covers).
    x, w = torch.randn(10, K).bfloat16(), torch.randn(G, K, N).bfloat16()
    expert_ids = torch.randint(0, G, (10,))
    gm = make_fx(_moe_like, tracing_mode="fake")(x, expert_ids, w)
    assert find_violations(gm)  # before: histc and a float-input cumsum
    rewrites = rewrite_moe_routing(gm)
    gm.graph.lint()
    gm.recompile()
    assert {r.replacement for r in rewrites} == {
        "inductor_bi.invariant_grouped_mm.default",
        "inductor_bi.exact_histc.default",
        "aten.cumsum.default (integer)",
    }
    assert find_violations(gm) == []
    targets = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
    assert "aten._grouped_mm.default" not in targets and "aten.histc.default" not in targets
    out, counts, offs = gm(x, expert_ids, w)
    _, want_counts, want_offs = _moe_like(x, expert_ids, w)
    assert torch.equal(counts, want_counts) and torch.equal(offs, want_offs) and offs.dtype == torch.int32
    want = torch.stack([x[i].double() @ w[expert_ids[i]].double() for i in range(10)])
    assert_close_to_reference(out, want, dtype=torch.bfloat16)
    # row 3 alone (its own graph: make_fx bakes the shapes in): same bits
    gm_alone = make_fx(_moe_like, tracing_mode="fake")(x[3:4], expert_ids[3:4], w)
    rewrite_moe_routing(gm_alone)
    gm_alone.recompile()
    alone, _, _ = gm_alone(x[3:4], expert_ids[3:4], w)
    assert_rows_equal(out[3:4], alone)


def test_pass_leaves_other_forms_to_the_guard():
    def f(x, w):
        # batched (3-D x 3-D, no offsets) grouped_mm, bf16 histc, float cumsum
        return torch._grouped_mm(x.view(2, 3, K), w[:2]), torch.histc(x, bins=4), x.cumsum(0)

    x, w = torch.randn(6, K).bfloat16(), torch.randn(G, K, N).bfloat16()
    gm = make_fx(f, tracing_mode="fake")(x, w)
    assert rewrite_moe_routing(gm) == []
