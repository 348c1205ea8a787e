"""passes/scan.py, graph in -> graph out: float scans become the invariant scan ops; integer
scans stay on aten (exact), complex ones stay for the guard."""

import torch

from inductor_bi.passes import PASSES
from inductor_bi.passes.guard import find_violations
from inductor_bi.passes.scan import rewrite_scans
from tests.passes._graph import aten, aten_graph, bi, calls, targets

SCAN_TARGETS = {aten.cumsum.default, aten.cumprod.default, aten.logcumsumexp.default}


def _scans(x, mask):
    return (
        torch.cumsum(x, -1),
        torch.cumprod(x, 0),
        torch.logcumsumexp(x, 1),
        torch.cumsum(mask, 1),  # int64 -> int64: exact, stays on aten
        torch.cumsum(mask, 1, dtype=torch.float32),  # int -> float: scanned as floats
        torch.cumsum(x.half(), 1, dtype=torch.float32),
    )


def test_float_scans_become_invariant_scans_and_integer_ones_stay():
    x, mask = torch.randn(3, 20), torch.randint(0, 2, (3, 20))
    gm = aten_graph(_scans, x, mask)
    assert len(find_violations(gm)) == 5  # before: every float scan
    rewrites = rewrite_scans(gm)
    gm.recompile()
    assert [r.replacement for r in rewrites] == [
        "inductor_bi.invariant_cumsum.default",
        "inductor_bi.invariant_cumprod.default",
        "inductor_bi.invariant_logcumsumexp.default",
        "inductor_bi.invariant_cumsum.default",
        "inductor_bi.invariant_cumsum.default",
    ]
    assert rewrites[3].dtype == "torch.int64 -> torch.float32" and rewrites[0].details["L"] == 20
    assert [t for t in targets(gm) if t in SCAN_TARGETS] == [aten.cumsum.default]  # the integer one
    (cumprod,) = calls(gm, bi.invariant_cumprod.default)
    assert cumprod.args[1:] == (0, None)
    assert find_violations(gm) == []


def test_complex_scans_are_left_for_the_guard():
    z = torch.randn(2, 6, dtype=torch.complex64)
    gm = aten_graph(lambda z: (torch.cumsum(z, 1), torch.cumprod(z, 1)), z)
    assert rewrite_scans(gm) == []
    assert [v.op for v in find_violations(gm)] == ["aten.cumsum.default", "aten.cumprod.default"]


def test_scan_pass_is_in_the_pipeline():
    assert rewrite_scans in PASSES
