"""passes/attention.py on the Dynamo graph, graph in -> graph out: F.scaled_dot_product_attention
becomes fixed_split_attention; dropout is refused; float64 goes to the math path."""

import torch
import torch.nn.functional as F

from inductor_bi.passes.attention import SDPA_TARGETS, rewrite_attention_calls
from tests.passes._graph import bi, dynamo_graph, targets


def _qkv(dtype=torch.float32):
    return [torch.randn(2, 4, 8, 16, dtype=dtype) for _ in range(3)]


def test_sdpa_becomes_fixed_split_attention():
    gm = dynamo_graph(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), *_qkv())
    (rewrite,), refusals = rewrite_attention_calls(gm)
    assert refusals == []
    assert rewrite.original == "F.scaled_dot_product_attention" and rewrite.replacement == "inductor_bi.fixed_split_attention.default"
    assert rewrite.shapes == [(2, 4, 8, 16)] * 3 and rewrite.dtype == "torch.float32" and "kv_split" in rewrite.details
    assert not SDPA_TARGETS & set(targets(gm)) and bi.fixed_split_attention.default in targets(gm)
    (node,) = [n for n in gm.graph.nodes if n.target is bi.fixed_split_attention.default]
    assert node.args[4] is True  # is_causal travels with the call


def test_nonzero_dropout_is_refused_and_left_alone():
    gm = dynamo_graph(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.1), *_qkv())
    rewrites, (refusal,) = rewrite_attention_calls(gm)
    assert rewrites == [] and "dropout_p=0.1" in refusal.why
    assert SDPA_TARGETS & set(targets(gm))


def test_float64_attention_takes_the_math_path():
    gm = dynamo_graph(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), *_qkv(torch.float64))
    (rewrite,), _ = rewrite_attention_calls(gm)
    assert rewrite.replacement == "aten._scaled_dot_product_attention_math (float64)"
    assert bi.fixed_split_attention.default not in targets(gm) and not SDPA_TARGETS & set(targets(gm))


def test_a_graph_without_attention_is_left_alone():
    gm = dynamo_graph(lambda x: torch.softmax(x, -1), torch.randn(2, 3))
    before = targets(gm)
    assert rewrite_attention_calls(gm) == ([], []) and targets(gm) == before
