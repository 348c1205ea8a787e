"""passes/kv_gather.py, graph in -> graph out: fixed_split_attention of cache[rows] reads the
cache in place (kv_rows); any other gather is left alone."""

import pytest
import torch

from inductor_bi.kernels import attention_table
from inductor_bi.passes.kv_gather import fold_kv_gathers
from tests.passes._graph import aten, aten_graph, bi, calls, targets

pytestmark = pytest.mark.skipif(not attention_table.ATTENTION_FOLD_KV_GATHER, reason="the fold is switched off in kernels/attention_table.py")


def _step(q, k_cache, v_cache, rows):
    return bi.fixed_split_attention(q, k_cache[rows], v_cache[rows], None, False, None, False)


def _inputs(rows_dtype=torch.int64):
    cache = torch.randn(5, 2, 8, 16)
    return torch.randn(2, 2, 1, 16), cache, cache.clone(), torch.tensor([3, 0], dtype=rows_dtype)


def test_cache_gather_feeding_attention_is_read_in_place():
    gm = aten_graph(_step, *_inputs())
    assert len(calls(gm, aten.index.Tensor)) == 2
    (rewrite,) = fold_kv_gathers(gm)
    assert rewrite.details["slots"] == 5 and "no gather copy" in rewrite.details["kv_rows"]
    assert calls(gm, aten.index.Tensor) == []
    (attention,) = calls(gm, bi.fixed_split_attention.default)
    assert len(attention.args) == 8 and attention.args[-1].op == "placeholder"  # rows: kv_rows
    assert calls(gm, aten._assert_async.msg)  # the slots' range check torch's indexing made


def test_gathers_of_different_rows_are_left_alone():
    def step(q, k_cache, v_cache, rows):
        return bi.fixed_split_attention(q, k_cache[rows], v_cache[rows.flip(0)], None, False, None, False)

    gm = aten_graph(step, *_inputs())
    before = targets(gm)
    assert fold_kv_gathers(gm) == [] and targets(gm) == before


def test_a_gather_used_elsewhere_too_is_left_alone():
    def step(q, k_cache, v_cache, rows):
        k = k_cache[rows]
        return bi.fixed_split_attention(q, k, v_cache[rows], None, False, None, False), k.sum()

    gm = aten_graph(step, *_inputs())
    assert fold_kv_gathers(gm) == [] and len(calls(gm, aten.index.Tensor)) == 2
