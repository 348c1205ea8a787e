"""passes/index_accumulate.py, graph in -> graph out: a gradient's accumulating put over the
destination's leading dims becomes a fixed-order op; other puts are left for the guard."""

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import inductor_bi  # noqa: F401  (registers torch.ops.inductor_bi)
from inductor_bi.passes.guard import find_violations
from inductor_bi.passes.index_accumulate import rewrite_gradient_index_puts
from inductor_bi.testing import assert_close_to_reference

aten = torch.ops.aten
FIXED_PUT = torch.ops.inductor_bi.fixed_order_index_put_accumulate.default
FIXED_EMBEDDING = torch.ops.inductor_bi.fixed_order_embedding_dense_backward.default
ACCUMULATING = {aten.index_put.default, aten._unsafe_index_put.default, aten._unsafe_masked_index_put_accumulate.default}


def _graph(fn, *inputs, tag="is_backward"):
    """fn's aten graph, every op tagged as aot_autograd tags a backward's (tag None: untagged, as
    an inference graph's)."""
    gm = make_fx(fn, tracing_mode="fake")(*inputs)
    for node in gm.graph.nodes:
        if node.op == "call_function" and tag is not None:
            node.meta["partitioner_tag"] = tag
    return gm


def _targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def _rewrite_and_compare(gm, *inputs):
    want = gm(*inputs)
    rewrites = rewrite_gradient_index_puts(gm)
    gm.recompile()
    got = gm(*inputs)
    assert_close_to_reference(got, want.double())
    return rewrites


D, IDS, V = torch.randn(6, 4), torch.tensor([[1, -2, 1], [5, 0, 1]]), torch.randn(2, 3, 4)
MASK = torch.tensor([[True], [False]]).expand(2, 3).unsqueeze(-1).contiguous()

GRADIENT_PUTS = {
    # name: (fn, inputs, the op the pass replaces it with, what it is given)
    "masked (embedding backward)": (
        lambda d, m, i, v: aten._unsafe_masked_index_put_accumulate(d, m, [i], v), (D, MASK, IDS, V), FIXED_PUT, "mask",
    ),
    "index_put accumulate": (lambda d, i, v: aten.index_put(d, [i], v, True), (D, IDS, V), FIXED_PUT, None),
    "_unsafe_index_put accumulate": (lambda d, i, v: aten._unsafe_index_put(d, [i], v, True), (D, IDS, V), FIXED_PUT, None),
    "two leading indices": (
        lambda d, i, v: aten.index_put(d.view(2, 3, 4), [i % 2, i.abs() % 3], v, True), (D, IDS, V), FIXED_PUT, None,
    ),
    "embedding_dense_backward": (
        lambda g, i: aten.embedding_dense_backward(g, i, 7, 1, False), (V, IDS.abs()), FIXED_EMBEDDING, None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(GRADIENT_PUTS))
def test_a_gradients_accumulating_put_becomes_the_fixed_order_op(name):
    fn, inputs, replacement, extra = GRADIENT_PUTS[name]
    gm = _graph(fn, *inputs)
    original = {t for t in _targets(gm) if t in ACCUMULATING | {aten.embedding_dense_backward.default}}
    (rewrite,) = _rewrite_and_compare(gm, *inputs)
    assert rewrite.original == str(next(iter(original))) and rewrite.replacement == str(replacement)
    assert "ascending source position" in rewrite.details["order"]
    targets = _targets(gm)
    assert replacement in targets and not (ACCUMULATING | {aten.embedding_dense_backward.default}) & set(targets)
    if extra == "mask":
        (node,) = [n for n in gm.graph.nodes if n.target is FIXED_PUT]
        assert node.args[3] is not None  # the mask travels with it
    assert not find_violations(gm)


LEFT_ALONE = {
    # name: (fn, inputs, tag): nothing to order, or not a gradient, or a form the pass does not serve
    "plain put (no accumulate)": (lambda d, i, v: aten.index_put(d, [i], v, False), (D, IDS, V), "is_backward"),
    "forward graph": (lambda d, i, v: aten.index_put(d, [i], v, True), (D, IDS, V), "is_forward"),
    "inference graph": (lambda d, i, v: aten.index_put(d, [i], v, True), (D, IDS, V), None),
    "forward index_add": (lambda d, i, v: d.index_add(0, i.flatten() % 6, v.flatten(0, 1)), (D, IDS, V), None),
    "None in the indices": (lambda d, i, v: aten.index_put(d, [None, i % 4], v.transpose(0, 2), True), (D, IDS, V), "is_backward"),
    "integer dest": (lambda d, i, v: aten.index_put(d.long(), [i], v.long(), True), (D, IDS, V), "is_backward"),
    "complex dest": (lambda d, i, v: aten.index_put(d.to(torch.complex64), [i], v.to(torch.complex64), True), (D, IDS, V), "is_backward"),
}


@pytest.mark.parametrize("name", sorted(LEFT_ALONE))
def test_other_puts_are_left_for_the_guard(name):
    fn, inputs, tag = LEFT_ALONE[name]
    gm = _graph(fn, *inputs, tag=tag)
    before = _targets(gm)
    assert rewrite_gradient_index_puts(gm) == []
    assert _targets(gm) == before
    floating_accumulation = name not in ("plain put (no accumulate)", "integer dest")
    assert bool(find_violations(gm)) == floating_accumulation  # the guard still refuses those


def test_autograd_pre_hook_mark_counts_without_the_partitioners_tag():
    gm = _graph(lambda d, i, v: aten.index_put(d, [i], v, True), D, IDS, V, tag=None)
    for node in gm.graph.nodes:
        node.meta["autograd_backward"] = True
    assert len(rewrite_gradient_index_puts(gm)) == 1
