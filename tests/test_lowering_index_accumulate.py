"""The embedding gradient launched by Inductor (inductor_bi/lowerings/index_accumulate.py): on
fake CUDA tensors (no GPU needed to trace), fixed_order_embedding_dense_backward and
fixed_order_index_put_accumulate become the stable sort and the segment-sum launch, with the
tokens symbolic, no guard on them and no host read; CPU graphs keep the custom ops."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.source import ConstantSource
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import inductor_bi  # noqa: F401
from inductor_bi.lowerings import launch_from_inductor

bi = torch.ops.inductor_bi
aten = torch.ops.aten
LAUNCH = torch.ops.higher_order.triton_kernel_wrapper_mutation
OPS = (bi.fixed_order_embedding_dense_backward.default, bi.fixed_order_index_put_accumulate.default, bi.fixed_order_scatter_add.default)
HOST_READS = (aten._local_scalar_dense.default, aten.item.default)
VOCAB, HIDDEN = 1000, 64


def _embedding_backward(grad, ids):
    return bi.fixed_order_embedding_dense_backward(grad, ids, VOCAB, -1, False)


def _put(grad, ids):
    dest = grad.new_zeros(VOCAB, HIDDEN)
    return bi.fixed_order_index_put_accumulate(dest, [ids], grad, None)


def _scatter_add(grad, ids):
    """A gather's gradient into a static [VOCAB, HIDDEN]: each token's row adds into row ids[b, s]."""
    index = ids.reshape(-1, 1).expand(-1, HIDDEN)
    return bi.fixed_order_scatter_add(grad.new_zeros(VOCAB, HIDDEN), 0, index, grad.reshape(-1, HIDDEN))


def _graph(fn, device: str, dtype=torch.bfloat16, batch_hint=3, seq_hint=40):
    """The aten graph of ``fn`` over token gradients [B, S, HIDDEN] and ids [B, S], B and S symbolic."""
    env = ShapeEnv()
    b, s = (env.create_symintnode(env.create_symbol(h, ConstantSource(n)), hint=h) for n, h in (("b", batch_hint), ("s", seq_hint)))
    with FakeTensorMode(shape_env=env):
        grad = torch.empty(b, s, HIDDEN, device=device, dtype=dtype)
        ids = torch.empty(b, s, device=device, dtype=torch.int64)
    return make_fx(fn)(grad, ids), env


def _calls(gm, *targets):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in targets]


@pytest.mark.parametrize("fn", [_embedding_backward, _put, _scatter_add], ids=["embedding-backward", "index-put", "scatter-add"])
def test_gradient_sums_become_sort_and_launch_with_no_guard_on_the_tokens(fn):
    gm, env = _graph(fn, "cuda")
    assert launch_from_inductor(gm) == 1
    assert not _calls(gm, *OPS) and len(_calls(gm, LAUNCH)) == 1
    assert _calls(gm, aten.sort.stable), "contributions ordered by a stable sort of their keys"
    assert not _calls(gm, *HOST_READS), "nothing read on the host: CUDA graphs allowed"
    assert not env.guards, f"a guard on the tokens would recompile per batch: {env.guards}"
    (launch,) = _calls(gm, LAUNCH)
    assert any(isinstance(g, torch.fx.Node) for g in launch.kwargs["grid"][0]), "programs follow the tokens"


def test_scale_grad_by_freq_keeps_the_custom_op():
    gm, _ = _graph(lambda g, i: bi.fixed_order_embedding_dense_backward(g, i, VOCAB, -1, True), "cuda")
    assert launch_from_inductor(gm) == 0 and len(_calls(gm, *OPS)) == 1


def test_cpu_graphs_keep_the_custom_ops():
    gm, _ = _graph(_embedding_backward, "cpu", dtype=torch.float32)
    assert launch_from_inductor(gm) == 0 and len(_calls(gm, *OPS)) == 1
