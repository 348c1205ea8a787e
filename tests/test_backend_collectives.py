"""Collectives in a compiled graph (torch.distributed, here a one-rank gloo group on the CPU): a
sum across ranks is refused under strict mode, since its order follows the message size on NCCL;
non-strict mode warns and runs it; a max across ranks is exact and compiles."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import inductor_bi  # noqa: F401
from inductor_bi.errors import BatchInvarianceError
from inductor_bi.testing import assert_close_to_reference

funcol = pytest.importorskip("torch.distributed._functional_collectives")
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")


@pytest.fixture(scope="module")
def one_rank_group(tmp_path_factory):
    store = dist.FileStore(str(tmp_path_factory.mktemp("gloo") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield dist.group.WORLD
    dist.destroy_process_group()


def _row_parallel_linear(op: str):
    def f(x, w):
        return funcol.all_reduce(x @ w, op, dist.group.WORLD)

    return f


def test_a_sum_across_ranks_is_refused_under_strict_mode(one_rank_group):
    torch._dynamo.reset()
    compiled = torch.compile(_row_parallel_linear("sum"), backend="batch_invariant", dynamic=True)
    with pytest.raises(Exception) as caught:
        compiled(torch.randn(4, 16), torch.randn(16, 8))
    chain, err = [], caught.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    refusal = next((e for e in chain if isinstance(e, BatchInvarianceError)), None)
    assert refusal is not None, f"not refused: {caught.value!r}"
    assert "all_reduce" in str(refusal) and "message size" in str(refusal)


def test_non_strict_mode_warns_and_runs_the_sum(one_rank_group):
    torch._dynamo.reset()
    compiled = torch.compile(_row_parallel_linear("sum"), backend="batch_invariant", dynamic=True, options={"strict": False})
    x, w = torch.randn(4, 16), torch.randn(16, 8)
    with pytest.warns(UserWarning, match="all_reduce"):
        out = compiled(x, w)
    assert_close_to_reference(out, x.double() @ w.double(), dtype=torch.float32)  # one rank: the local product


def test_a_max_across_ranks_compiles_under_strict_mode(one_rank_group):
    torch._dynamo.reset()
    compiled = torch.compile(_row_parallel_linear("max"), backend="batch_invariant", dynamic=True)
    x, w = torch.randn(4, 16), torch.randn(16, 8)
    assert_close_to_reference(compiled(x, w), x.double() @ w.double(), dtype=torch.float32)
