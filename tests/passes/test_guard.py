"""passes/guard.py on a graph: which ops it rejects (violations), which it keeps as exact, and
what strict / non-strict mode do with them."""

import pytest
import torch

from inductor_bi.errors import BatchInvarianceError
from inductor_bi.passes.guard import check_graph, classify, find_batch_statistics, find_violations
from inductor_bi.passes.reductions import rewrite_reductions
from tests.passes._graph import aten_graph


def test_a_float_sum_left_unrewritten_is_a_violation():
    gm = aten_graph(lambda x: x.sum(-1), torch.randn(4, 16))
    (v,) = find_violations(gm)
    assert v.op == "aten.sum.dim_IntList" and v.dtype == "torch.float32" and v.shapes == [(4, 16)]
    assert "floating-point reduction" in v.why


def test_a_rewritten_sum_is_no_violation():
    gm = aten_graph(lambda x: x.sum(-1), torch.randn(4, 16))
    rewrite_reductions(gm)
    assert find_violations(gm) == []


def test_integer_sum_and_max_are_kept_as_exact():
    gm = aten_graph(lambda x, i: (i.sum(-1), x.amax(-1), x.argmax(-1)), torch.randn(4, 16), torch.randint(0, 9, (4, 16)))
    assert find_violations(gm) == []
    verdicts = [classify(n) for n in gm.graph.nodes if classify(n) is not None]
    assert [v[0] for v in verdicts] == ["exact", "exact", "exact"]


def test_index_add_is_a_violation_for_its_atomics():
    gm = aten_graph(lambda x: x.index_add(0, torch.tensor([0, 1, 0]), x[:3]), torch.randn(4, 8))
    (v,) = find_violations(gm)
    assert "atomics" in v.why


def test_integer_index_add_is_not_a_violation():
    gm = aten_graph(lambda x: x.index_add(0, torch.tensor([0, 1, 0]), x[:3]), torch.randint(0, 9, (4, 8)))
    assert find_violations(gm) == []


def test_strict_raises_naming_the_op_and_non_strict_warns():
    gm = aten_graph(lambda x: x.sum(-1), torch.randn(4, 16))
    with pytest.raises(BatchInvarianceError, match="aten.sum.dim_IntList"):
        check_graph(gm, strict=True)
    with pytest.warns(UserWarning, match="strict=False"):
        assert len(check_graph(gm, strict=False)) == 1


def test_nothing_to_reject_neither_raises_nor_warns(recwarn):
    gm = aten_graph(lambda x: x.amax(-1), torch.randn(4, 16))
    assert check_graph(gm, strict=True) == []
    assert not [w for w in recwarn if "inductor_bi" in str(w.message)]


def test_training_batch_norm_on_the_dynamo_graph_is_a_violation():
    (v,) = find_batch_statistics(torch.fx.symbolic_trace(lambda x, m, s: torch.nn.functional.batch_norm(x, m, s, training=True)))
    assert v.op == "F.batch_norm(training=True)" and "whole batch" in v.why


def test_eval_batch_norm_with_running_statistics_is_kept():
    gm = torch.fx.symbolic_trace(lambda x, m, s: torch.nn.functional.batch_norm(x, m, s, training=False))
    assert find_batch_statistics(gm) == []


def _collective_graph(op: str, dtype=torch.float32):
    def f(x):
        return torch.ops._c10d_functional.wait_tensor(torch.ops._c10d_functional.all_reduce(x, op, "0"))

    return aten_graph(f, torch.ones(4, 8, dtype=dtype))


def test_a_collective_sum_across_ranks_is_a_violation():
    """Its order follows the message size (NCCL's algorithm choice), so the batch: refused, never
    passed silently."""
    (v,) = find_violations(_collective_graph("sum"))
    assert v.op == "_c10d_functional.all_reduce.default" and "message size" in v.why
    assert find_violations(_collective_graph("avg"))
    with pytest.raises(BatchInvarianceError, match="all_reduce"):
        check_graph(_collective_graph("sum"), strict=True)


def test_a_collective_max_and_an_integer_sum_are_exact():
    assert find_violations(_collective_graph("max")) == []
    assert find_violations(_collective_graph("sum", torch.int64)) == []
    (verdict,) = [classify(n) for n in _collective_graph("min").graph.nodes if classify(n) is not None]
    assert verdict[0] == "exact"
