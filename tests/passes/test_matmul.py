"""passes/matmul.py, graph in -> graph out: which matmuls become invariant_matmul."""

import pytest
import torch

from inductor_bi.passes.matmul import rewrite_matmuls
from tests.passes._graph import aten, aten_graph, bi, calls, targets

MATMULS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}


@pytest.mark.parametrize(
    "name, fn, shapes",
    [
        ("mm", lambda a, b: a @ b, [(4, 8), (8, 3)]),
        ("addmm", lambda c, a, b: torch.addmm(c, a, b), [(3,), (4, 8), (8, 3)]),
        ("bmm", lambda a, b: torch.bmm(a, b), [(2, 4, 8), (2, 8, 3)]),
        ("baddbmm", lambda c, a, b: torch.baddbmm(c, a, b), [(2, 4, 3), (2, 4, 8), (2, 8, 3)]),
    ],
)
def test_float_matmul_becomes_invariant_matmul(name, fn, shapes):
    gm = aten_graph(fn, *(torch.randn(s) for s in shapes))
    (rewrite,) = rewrite_matmuls(gm)
    assert rewrite.original == f"aten.{name}.default"
    assert rewrite.replacement == "inductor_bi.invariant_matmul.default"
    assert rewrite.dtype == "torch.float32" and rewrite.shapes == [tuple(s) for s in shapes]
    assert not MATMULS & set(targets(gm)) and len(calls(gm, bi.invariant_matmul.default)) == 1


def test_the_record_carries_the_pinned_tile_and_k_chunks():
    gm = aten_graph(lambda a, b: a @ b, torch.randn(4, 40), torch.randn(40, 3))
    (rewrite,) = rewrite_matmuls(gm)
    assert rewrite.details["kernel"] == "invariant_matmul"
    assert {"tile", "k_chunk", "K"} <= set(rewrite.details) and rewrite.details["K"].startswith("40 = ")


def test_complex_matmul_becomes_invariant_matmul():
    z = torch.randn(4, 8, dtype=torch.complex64)
    gm = aten_graph(lambda a, b: a @ b, z, z.t().contiguous())
    (rewrite,) = rewrite_matmuls(gm)
    assert rewrite.dtype == "torch.complex64" and "complex" in rewrite.details
    assert calls(gm, bi.invariant_matmul.default)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_integer_matmul_is_left_alone(dtype):
    a = torch.randint(0, 5, (4, 8), dtype=dtype)
    gm = aten_graph(lambda a, b: a @ b, a, a.t().contiguous())
    before = targets(gm)
    assert rewrite_matmuls(gm) == []
    assert targets(gm) == before and aten.mm.default in before


def test_non_matmul_ops_are_untouched():
    gm = aten_graph(lambda a, b: (a @ b).relu() + 1, torch.randn(4, 8), torch.randn(8, 3))
    rewrite_matmuls(gm)
    assert aten.relu.default in targets(gm) and aten.add.Tensor in targets(gm)
