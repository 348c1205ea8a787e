"""Collectives in a compiled graph (torch.distributed on the CPU, gloo): a sum across ranks runs as
an all-gather (a reduce-scatter: an all-to-all) and a sum in ascending rank order
(passes/collectives.py), so a row's bits do not follow the batch; a sum across ranks left as it
is (a coalesced all-reduce) is refused under strict mode and warned about otherwise; a max across
ranks is exact and stays."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import inductor_bi  # noqa: F401
from inductor_bi.errors import BatchInvarianceError
from inductor_bi.testing import assert_close_to_reference
from tests._distributed import run_ranks
from tests._support import error_chain_text, one_rank_group  # noqa: F401  (fixture)

funcol = pytest.importorskip("torch.distributed._functional_collectives")


def _row_parallel_linear(op: str):
    def f(x, w):
        return funcol.all_reduce(x @ w, op, dist.group.WORLD)

    return f


def test_a_sum_across_ranks_compiles_under_strict_mode(one_rank_group):
    torch._dynamo.reset()
    compiled = torch.compile(_row_parallel_linear("sum"), backend="batch_invariant", dynamic=True)
    x, w = torch.randn(4, 16), torch.randn(16, 8)
    assert_close_to_reference(compiled(x, w), x.double() @ w.double(), dtype=torch.float32)  # one rank


def _reduce_scatter(x, w):
    return funcol.reduce_scatter_tensor(x @ w, "sum", 0, dist.group.WORLD)


def test_a_reduce_scatter_sum_compiles_under_strict_mode(one_rank_group):
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    compiled = torch.compile(_reduce_scatter, backend="batch_invariant", dynamic=True)
    x, w = torch.randn(4, 16), torch.randn(16, 8)
    out, codes = run_and_get_code(compiled, x, w)
    assert "fixed_order_reduce_scatter" in "\n".join(codes)
    assert_close_to_reference(out, x.double() @ w.double(), dtype=torch.float32)  # one rank


def _coalesced_sum(x, w):
    return funcol.all_reduce_coalesced([x @ w, x], "sum", dist.group.WORLD)[0]


def test_a_coalesced_sum_across_ranks_is_refused_under_strict_mode(one_rank_group):
    torch._dynamo.reset()
    compiled = torch.compile(_coalesced_sum, backend="batch_invariant", dynamic=True)
    with pytest.raises(Exception) as caught:
        compiled(torch.randn(4, 16), torch.randn(16, 8))
    chain = error_chain_text(caught.value)
    assert BatchInvarianceError.__name__ in chain and "all_reduce_coalesced" in chain and "message size" in chain


def test_non_strict_mode_warns_about_a_coalesced_sum_and_runs_it(one_rank_group):
    torch._dynamo.reset()
    compiled = torch.compile(_coalesced_sum, backend="batch_invariant", dynamic=True, options={"strict": False})
    x, w = torch.randn(4, 16), torch.randn(16, 8)
    with pytest.warns(UserWarning, match="all_reduce_coalesced"):
        out = compiled(x, w)
    assert_close_to_reference(out, x.double() @ w.double(), dtype=torch.float32)


def test_a_max_across_ranks_compiles_under_strict_mode(one_rank_group):
    torch._dynamo.reset()
    compiled = torch.compile(_row_parallel_linear("max"), backend="batch_invariant", dynamic=True)
    x, w = torch.randn(4, 16), torch.randn(16, 8)
    assert_close_to_reference(compiled(x, w), x.double() @ w.double(), dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# Four ranks, each a process: a row-parallel linear (each rank holds a slice of K)
# ---------------------------------------------------------------------------------------------


def _rank_main(rank: int, world: int, store_path: str, results) -> None:
    from torch._inductor.utils import run_and_get_code

    dist.init_process_group("gloo", store=dist.FileStore(store_path, world), rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # every rank draws the same full x and w, and keeps its K slice
        x, w = torch.randn(7, 4 * world), torch.randn(4 * world, 8)
        xs, ws = x[:, rank * 4 : (rank + 1) * 4], w[rank * 4 : (rank + 1) * 4]
        compiled = torch.compile(_row_parallel_linear("sum"), backend="batch_invariant", dynamic=True)
        batched, codes = run_and_get_code(compiled, xs, ws)
        alone = compiled(xs[3:4], ws)
        # the reference: every rank's partial (the invariant matmul's), added in ascending rank order
        partial = torch.compile(lambda a, b: a @ b, backend="batch_invariant", dynamic=True)(xs, ws)
        partials = [torch.empty_like(partial) for _ in range(world)]
        dist.all_gather(partials, partial)
        in_rank_order = partials[0]
        for p in partials[1:]:
            in_rank_order = in_rank_order + p
        code = "\n".join(codes)
        # a reduce-scatter of the first `world` rows: this rank's row of the same rank-order sum
        scattered = torch.compile(_reduce_scatter, backend="batch_invariant", dynamic=True)(xs[:world], ws)
        results.put(dict(
            rank=rank, gathered="fixed_order_all_reduce" in code, all_reduce="_c10d_functional.all_reduce" in code,
            alone=torch.equal(batched[3:4], alone), in_rank_order=torch.equal(batched, in_rank_order),
            scattered=torch.equal(scattered, in_rank_order[rank : rank + 1]),
            error=(batched.double() - x.double() @ w.double()).abs().max().item(),
        ))  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_four_ranks_sum_in_rank_order_and_a_row_alone_equals_the_row_in_a_batch():
    got = run_ranks(_rank_main, 4)
    for r in got:
        assert r["gathered"] and not r["all_reduce"], f"rank {r['rank']}: the all-reduce was not rewritten"
        assert r["alone"], f"rank {r['rank']}: row 3 alone != row 3 in a batch of 7"
        assert r["in_rank_order"], f"rank {r['rank']}: not the partials added in ascending rank order"
        assert r["scattered"], f"rank {r['rank']}: the reduce-scatter's shard is not the rank-order sum's row"
        assert r["error"] < 1e-4, r
