"""The MoE-routing pass (``rewrite_moe_routing``), graph in -> graph out: float histc counts
become exact_histc, a float -> integer cumsum is spelled out as cast + integer cumsum; integer
histc and integer cumsums are left alone."""

import torch

from inductor_bi.passes import rewrite_moe_routing
from inductor_bi.passes.guard import find_violations
from tests.passes._graph import aten, aten_graph, bi, calls, targets


def test_float_histc_becomes_exact_histc_with_int64_counts():
    gm = aten_graph(lambda x: torch.histc(x, bins=4, min=0, max=4), torch.rand(16) * 4)
    (rewrite,) = rewrite_moe_routing(gm)
    assert rewrite.original == "aten.histc.default" and rewrite.replacement == "inductor_bi.exact_histc.default"
    assert rewrite.details == {"count": "int64"}
    (node,) = calls(gm, bi.exact_histc.default)
    assert node.args[1:] == (4, 0.0, 4.0) and aten.histc.default not in targets(gm)


def test_float_cumsum_to_an_integer_dtype_becomes_cast_then_integer_cumsum():
    gm = aten_graph(lambda counts: torch.cumsum(counts, 0, dtype=torch.int32), torch.rand(8))
    (rewrite,) = rewrite_moe_routing(gm)
    assert rewrite.replacement == "aten.cumsum.default (integer)" and rewrite.details == {"cast_first_to": "torch.int32"}
    (cumsum,) = calls(gm, aten.cumsum.default)
    assert cumsum.args[0].target is torch.ops.prims.convert_element_type.default
    assert cumsum.args[0].meta["val"].dtype == torch.int32
    assert find_violations(gm) == []  # an integer scan: exact


def test_integer_cumsum_is_left_alone():
    gm = aten_graph(lambda i: torch.cumsum(i, 0), torch.randint(0, 3, (8,)))
    before = targets(gm)
    assert rewrite_moe_routing(gm) == [] and targets(gm) == before


def test_topk_and_sort_are_left_alone():
    gm = aten_graph(lambda x: (x.topk(2, -1), x.sort(-1)), torch.randn(4, 8))
    before = targets(gm)
    assert rewrite_moe_routing(gm) == [] and targets(gm) == before
