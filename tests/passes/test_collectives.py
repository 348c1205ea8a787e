"""passes/collectives.py on a graph: a sum across ranks becomes fixed_order_all_reduce (an
all-gather and a sum in ascending rank order); what it leaves (no group here, a max) stays for
the guard."""

import pytest
import torch

from inductor_bi.kernels import matmul_table
from inductor_bi.passes.collectives import rewrite_collective_sums
from inductor_bi.passes.guard import find_violations
from tests._support import one_rank_group  # noqa: F401  (fixture)
from tests.passes._graph import aten_graph, bi, calls

c10d = torch.ops._c10d_functional


def _all_reduce_graph(op: str, group_name: str, dtype=torch.float32):
    def f(x):
        return c10d.wait_tensor(c10d.all_reduce(x * 2, op, group_name)) + 1

    return aten_graph(f, torch.ones(4, 8, dtype=dtype))


def test_a_sum_across_ranks_becomes_a_sum_in_rank_order(one_rank_group):
    gm = _all_reduce_graph("sum", one_rank_group.group_name, torch.bfloat16)
    (record,) = rewrite_collective_sums(gm)
    assert not calls(gm, c10d.all_reduce.default) and not calls(gm, c10d.wait_tensor.default)
    (call,) = calls(gm, bi.fixed_order_all_reduce.default)
    assert call.args[1:] == ("sum", one_rank_group.group_name)
    assert record.details["accumulate"] == "float32" and "ascending rank order" in record.details["ranks"]
    assert find_violations(gm) == []


def test_an_average_is_rewritten_too(one_rank_group):
    gm = _all_reduce_graph("avg", one_rank_group.group_name)
    assert len(rewrite_collective_sums(gm)) == 1
    (call,) = calls(gm, bi.fixed_order_all_reduce.default)
    assert call.args[1] == "avg"


def test_the_op_adds_the_ranks_in_order_and_averages(one_rank_group):
    x = torch.randn(3, 5, dtype=torch.bfloat16)
    name = one_rank_group.group_name
    assert torch.equal(bi.fixed_order_all_reduce(x, "sum", name), x)  # one rank: x, rounded once
    assert torch.equal(bi.fixed_order_all_reduce(x, "avg", name), x)


def test_an_unknown_group_or_a_max_is_left_for_the_guard():
    gm = _all_reduce_graph("sum", "no-such-group")
    assert rewrite_collective_sums(gm) == [] and calls(gm, c10d.all_reduce.default)
    assert find_violations(gm), "the guard refuses the sum left"
    gm = _all_reduce_graph("max", "no-such-group")
    assert rewrite_collective_sums(gm) == [] and find_violations(gm) == []


def test_a_reduce_scatter_sum_becomes_a_shard_summed_in_rank_order(one_rank_group):
    name = one_rank_group.group_name

    def f(x):
        return c10d.wait_tensor(c10d.reduce_scatter_tensor(x * 2, "sum", 1, name)) + 1

    gm = aten_graph(f, torch.ones(4, 8, dtype=torch.float16))
    (record,) = rewrite_collective_sums(gm)
    assert not calls(gm, c10d.reduce_scatter_tensor.default) and not calls(gm, c10d.wait_tensor.default)
    (call,) = calls(gm, bi.fixed_order_reduce_scatter.default)
    assert call.args[1:] == ("sum", 1, name)
    assert "all-to-all" in record.details["ranks"] and record.details["accumulate"] == "float32"
    assert find_violations(gm) == []


def test_the_reduce_scatter_op_checks_that_the_shards_split_evenly(one_rank_group):
    x = torch.randn(3, 5, dtype=torch.float16)
    name = one_rank_group.group_name
    assert torch.equal(bi.fixed_order_reduce_scatter(x, "sum", 1, name), x)  # one rank: x, rounded once
    with pytest.raises(ValueError, match="split evenly"):
        bi.fixed_order_reduce_scatter(x, "sum", 2, name)


def _row_parallel_graph(group_name: str, k: int, bias: bool = False):
    """A rank's row-parallel linear as DTensor leaves it after the matmul pass: invariant_matmul
    of [rows, K] by [K, N], viewed back to [batch, seq, N], summed across ranks."""

    def f(x, w, b):
        y = bi.invariant_matmul(x.view(-1, k), w, b if bias else None, 1.0, 1.0).view(2, 3, 8)
        return c10d.wait_tensor(c10d.all_reduce(y, "sum", group_name)) * 2

    return aten_graph(f, torch.ones(2, 3, k), torch.ones(k, 8), torch.ones(8))


def test_a_row_parallel_matmul_of_whole_k_chunks_is_merged_in_chunk_order(one_rank_group):
    k = 2 * matmul_table.MATMUL_INTERPRETER.k_chunk
    gm = _row_parallel_graph(one_rank_group.group_name, k)
    (record,) = rewrite_collective_sums(gm)
    assert not calls(gm, bi.invariant_matmul.default) and not calls(gm, c10d.all_reduce.default)
    (call,) = calls(gm, bi.chunk_ordered_all_reduce_matmul.default)
    assert call.args[2] == one_rank_group.group_name
    assert "ascending chunk order" in record.details["ranks"]
    assert find_violations(gm) == []
    x, w = torch.randn(2, 3, k), torch.randn(k, 8)
    assert torch.equal(gm(x, w, torch.ones(8)), bi.invariant_matmul(x.view(-1, k), w, None, 1.0, 1.0).view(2, 3, 8) * 2)


def test_a_k_of_partial_chunks_or_a_bias_is_summed_in_rank_order_instead(one_rank_group):
    chunk = matmul_table.MATMUL_INTERPRETER.k_chunk
    for gm in (_row_parallel_graph(one_rank_group.group_name, chunk + 32), _row_parallel_graph(one_rank_group.group_name, chunk, bias=True)):
        (record,) = rewrite_collective_sums(gm)
        assert calls(gm, bi.fixed_order_all_reduce.default) and calls(gm, bi.invariant_matmul.default)
        assert not calls(gm, bi.chunk_ordered_all_reduce_matmul.default)


def test_a_sum_of_row_parallel_matmuls_is_merged_term_by_term(one_rank_group):
    """all_reduce(a1 @ b1 + a2 @ b2): each term's sum across ranks in chunk order, then the add
    the one-device graph does (a sum across ranks is linear)."""
    k, name = matmul_table.MATMUL_INTERPRETER.k_chunk, one_rank_group.group_name

    def f(a1, b1, a2, b2):
        y = bi.invariant_matmul(a1, b1, None, 1.0, 1.0) + bi.invariant_matmul(a2, b2, None, 1.0, 1.0)
        return c10d.wait_tensor(c10d.all_reduce(y, "sum", name))

    args = (torch.randn(3, k), torch.randn(k, 8), torch.randn(3, 2 * k), torch.randn(2 * k, 8))
    gm = aten_graph(f, *args)
    (record,) = rewrite_collective_sums(gm)
    assert len(calls(gm, bi.chunk_ordered_all_reduce_matmul.default)) == 2 and not calls(gm, c10d.all_reduce.default)
    assert len(record.shapes) == 4
    a1, b1, a2, b2 = args
    assert torch.equal(gm(*args), bi.invariant_matmul(a1, b1, None, 1.0, 1.0) + bi.invariant_matmul(a2, b2, None, 1.0, 1.0))
    # a term used twice, or a term that is not a whole-chunk matmul, leaves the rank-order sum
    gm = aten_graph(lambda a, b: c10d.wait_tensor(c10d.all_reduce(a @ b + a, "sum", name)), torch.randn(3, k), torch.randn(k, k))
    rewrite_collective_sums(gm)
    assert calls(gm, bi.fixed_order_all_reduce.default) and not calls(gm, bi.chunk_ordered_all_reduce_matmul.default)
