"""passes/reductions.py, graph in -> graph out: float reductions become invariant row ops; exact
ones (integer, max / min) are left alone."""

import pytest
import torch

from inductor_bi.passes.reductions import rewrite_reductions
from tests.passes._graph import aten, aten_graph, bi, calls, targets


def _rewritten(fn, *inputs):
    gm = aten_graph(fn, *inputs)
    return gm, rewrite_reductions(gm)


def test_float_sum_over_last_dim_becomes_invariant_sum():
    gm, (rewrite,) = _rewritten(lambda x: x.sum(-1), torch.randn(4, 16))
    assert rewrite.original == "aten.sum.dim_IntList" and rewrite.replacement == "inductor_bi.invariant_sum.default"
    assert rewrite.details["R"] == 16 and rewrite.shapes == [(4, 16)]
    assert aten.sum.dim_IntList not in targets(gm) and calls(gm, bi.invariant_sum.default)


def test_float_mean_becomes_invariant_mean():
    gm, (rewrite,) = _rewritten(lambda x: x.mean(1), torch.randn(4, 6, 5))
    assert rewrite.replacement == "inductor_bi.invariant_mean.default" and rewrite.details["R"] == 6
    assert aten.mean.dim not in targets(gm)


@pytest.mark.parametrize(
    "fn, original, replacement",
    [
        (lambda x: torch.softmax(x, -1), "aten._softmax.default", "inductor_bi.invariant_softmax.default"),
        (lambda x: torch.log_softmax(x, -1), "aten._log_softmax.default", "inductor_bi.invariant_log_softmax.default"),
        (lambda x: torch.nn.functional.layer_norm(x, (16,)), "aten.native_layer_norm.default", "inductor_bi.invariant_layer_norm.default"),
    ],
)
def test_fused_row_ops_become_their_invariant_kernel(fn, original, replacement):
    gm, rewrites = _rewritten(fn, torch.randn(4, 16))
    assert [(r.original, r.replacement) for r in rewrites] == [(original, replacement)]
    assert getattr(aten, original.split(".")[1]).default not in targets(gm)


def test_integer_sum_is_left_alone():
    gm, rewrites = _rewritten(lambda x: x.sum(-1), torch.randint(0, 9, (4, 16)))
    assert rewrites == [] and aten.sum.dim_IntList in targets(gm)


def test_max_and_argmax_are_left_alone():
    gm, rewrites = _rewritten(lambda x: (x.amax(-1), x.argmax(-1)), torch.randn(4, 16))
    assert rewrites == [] and {aten.amax.default, aten.argmax.default} <= set(targets(gm))


def test_complex_sum_is_summed_over_its_real_and_imaginary_parts():
    gm, (rewrite,) = _rewritten(lambda z: z.sum(-1), torch.randn(4, 8, dtype=torch.complex64))
    assert "inductor_bi.invariant_sum.default" in rewrite.replacement and "complex" in rewrite.details
    assert calls(gm, bi.invariant_sum.default)
