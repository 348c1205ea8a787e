"""passes/rms_norm.py, graph in -> graph out: a hand-written RMSNorm (after the reductions pass)
becomes one invariant_rms_norm_rows; anything else is left as it was."""

import pytest
import torch

from inductor_bi.kernels import reduction_table
from inductor_bi.passes.reductions import rewrite_reductions
from inductor_bi.passes.rms_norm import fuse_rms_norms
from tests.passes._graph import aten_graph, bi, targets


def _rms_norm(h, w):
    c = h.float()
    n = c * torch.rsqrt(c.pow(2).mean(-1, keepdim=True) + 1e-6)
    return w * n.to(h.dtype)


def _after_reductions(fn, *inputs):
    gm = aten_graph(fn, *inputs)
    rewrite_reductions(gm)
    return gm


@pytest.mark.skipif(not reduction_table.REDUCTION_FUSE_RMS_NORM, reason="the fusion is switched off in kernels/reduction_table.py")
def test_hand_written_rms_norm_becomes_one_row_kernel():
    gm = _after_reductions(_rms_norm, torch.randn(4, 16, dtype=torch.bfloat16), torch.randn(16, dtype=torch.bfloat16))
    assert bi.invariant_mean.default in targets(gm)
    (rewrite,) = fuse_rms_norms(gm)
    assert rewrite.replacement == "inductor_bi.invariant_rms_norm_rows.default"
    assert bi.invariant_rms_norm_rows.default in targets(gm) and bi.invariant_mean.default not in targets(gm)


def test_a_mean_that_is_not_an_rms_norm_is_left_alone():
    gm = _after_reductions(lambda x: x - x.mean(-1, keepdim=True), torch.randn(4, 16))
    before = targets(gm)
    assert fuse_rms_norms(gm) == [] and targets(gm) == before


def test_without_the_reductions_pass_there_is_nothing_to_fuse():
    gm = aten_graph(_rms_norm, torch.randn(4, 16), torch.randn(16))
    assert fuse_rms_norms(gm) == []
