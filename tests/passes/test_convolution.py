"""passes/convolution.py, graph in -> graph out: its decompositions lower a float convolution to
im2col + matmul (which the matmul pass then makes invariant_matmul), ``lowered_convolutions``
reports what each became; a complex convolution is left for the guard."""

import torch
import torch.fx.traceback as fx_traceback
from torch.fx.experimental.proxy_tensor import make_fx

from inductor_bi.passes.convolution import DECOMPOSITIONS, lowered_convolutions
from inductor_bi.passes.guard import find_violations
from inductor_bi.passes.matmul import rewrite_matmuls
from tests.passes._graph import aten, bi, targets

CONVOLUTIONS = {aten.convolution.default, aten._convolution.default, aten.convolution_backward.default}


def _decomposed(fn, *inputs):
    with fx_traceback.preserve_node_meta():  # keeps original_aten, as aot_autograd does
        return make_fx(fn, decomposition_table=DECOMPOSITIONS, tracing_mode="fake")(*inputs)


def test_float_conv2d_becomes_im2col_and_an_invariant_matmul():
    gm = _decomposed(lambda x, w, b: torch.nn.functional.conv2d(x, w, b, padding=1), torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4))
    assert not CONVOLUTIONS & set(targets(gm))
    (record,) = lowered_convolutions(gm)
    assert record.original == "aten.convolution.default"
    assert record.replacement == "im2col + invariant_matmul" and record.details["K"] == "27"
    rewrite_matmuls(gm)
    assert bi.invariant_matmul.default in targets(gm)
    assert find_violations(gm) == []


def test_a_patch_convolution_needs_no_im2col():
    gm = _decomposed(lambda x, w: torch.nn.functional.conv2d(x, w, stride=4), torch.randn(2, 3, 8, 8), torch.randn(4, 3, 4, 4))
    (record,) = lowered_convolutions(gm)
    assert record.replacement == "invariant_matmul" and "reshape" in record.details["im2col"]


def test_a_graph_without_convolutions_reports_none():
    gm = _decomposed(lambda x: x.relu(), torch.randn(3))
    assert lowered_convolutions(gm) == []
