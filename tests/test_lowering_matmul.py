"""The launches pass (inductor_bi/lowerings): graph in -> graph out on fake CUDA tensors (no GPU
needed to trace): each traceable rewritten op becomes the kernel launches its implementation
makes, with a symbolic batch and no guard on it; CPU graphs keep the custom ops."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.source import ConstantSource
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import inductor_bi  # noqa: F401
from inductor_bi.kernels import _device
from inductor_bi.kernels import matmul as matmul_kernel
from inductor_bi.lowerings import launch_from_inductor
from inductor_bi.lowerings.matmul_template import TEMPLATE

MATMUL = torch.ops.inductor_bi.invariant_matmul.default
LAUNCH = torch.ops.higher_order.triton_kernel_wrapper_mutation


def _linear(a, w, bias):
    return torch.ops.inductor_bi.invariant_matmul(a, w, bias, 1.0, 1.0).relu()


def _graph(device: str, rows_hint: int, k: int = 4096):
    """The aten graph of a linear layer over ``[M, k]`` rows, M symbolic (hint ``rows_hint``)."""
    env = ShapeEnv()
    mode = FakeTensorMode(shape_env=env)
    m = env.create_symintnode(env.create_symbol(rows_hint, ConstantSource("m")), hint=rows_hint)
    with mode:
        a = torch.empty(m, k, device=device, dtype=torch.float16)
        w = torch.empty(k, 512, device=device, dtype=torch.float16)
        bias = torch.empty(512, device=device, dtype=torch.float16)
    return make_fx(_linear)(a, w, bias), env


def _calls(gm, target):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is target]


@pytest.fixture
def an_h100(monkeypatch):
    monkeypatch.setattr(_device, "gpu", lambda device: _device.GpuProperties(132, 9, 232448))


def test_few_rows_matmul_becomes_split_k_launches_with_no_guard_on_the_batch(an_h100):
    gm, env = _graph("cuda", 40)
    assert launch_from_inductor(gm) == 1
    assert not _calls(gm, MATMUL)
    kernels = _calls(gm, LAUNCH)
    assert len(kernels) == 2  # split + merge: few rows leave the GPU idle without split-K
    assert not env.guards, f"a guard on the batch would recompile per batch size: {env.guards}"
    grid = kernels[0].kwargs["grid"][0]
    assert any(isinstance(g, torch.fx.Node) for g in grid), f"the grid follows the symbolic rows: {grid}"


def test_many_rows_matmul_is_left_to_the_template_with_the_full_launch_plan(an_h100):
    gm, env = _graph("cuda", 4096)
    assert launch_from_inductor(gm) == 1
    (node,) = _calls(gm, MATMUL)  # Inductor lowers it to the template (epilogue fused)
    assert not _calls(gm, LAUNCH)
    plan = node.meta[TEMPLATE]
    assert not plan.split_k
    assert plan == matmul_kernel.matmul_plan(torch.float16, torch.device("cuda"), 1, 4096, 512, 4096)
    assert not env.guards, f"a guard on the batch would recompile per batch size: {env.guards}"


def test_cpu_graphs_keep_the_custom_ops():
    gm, _ = _graph("cpu", 40)
    assert launch_from_inductor(gm) == 0
    assert len(_calls(gm, MATMUL)) == 1 and not _calls(gm, LAUNCH)


def test_a_symbolic_k_keeps_the_custom_op(an_h100):
    """K sets the kernel's constexprs (its chunks): with K unknown at compile time the op stays."""
    env = ShapeEnv()
    mode = FakeTensorMode(shape_env=env)
    k = env.create_symintnode(env.create_symbol(64, ConstantSource("k")), hint=64)
    with mode:
        a = torch.empty(8, k, device="cuda", dtype=torch.float16)
        w = torch.empty(k, 16, device="cuda", dtype=torch.float16)
    gm = make_fx(_linear)(a, w, None)
    assert launch_from_inductor(gm) == 0 and len(_calls(gm, MATMUL)) == 1


def _matmul_graph(a_shape, b_shape, dtype=torch.float16, bias_shape=(512,), beta=1.0, alpha=1.0):
    """The aten graph of one invariant_matmul over fake CUDA operands of these static shapes."""
    with FakeTensorMode():
        a = torch.empty(*a_shape, device="cuda", dtype=dtype)
        b = torch.empty(*b_shape, device="cuda", dtype=dtype)
        bias = torch.empty(*bias_shape, device="cuda", dtype=dtype) if bias_shape else None
    return make_fx(lambda a, b, bias: torch.ops.inductor_bi.invariant_matmul(a, b, bias, beta, alpha))(a, b, bias)


@pytest.mark.parametrize(
    "case, takes_template",
    [
        (dict(a_shape=(4096, 1024), b_shape=(1024, 512)), True),
        (dict(a_shape=(4096, 1024), b_shape=(1024, 512), bias_shape=None), True),
        (dict(a_shape=(4096, 1024), b_shape=(1024, 512), dtype=torch.float32), True),
        (dict(a_shape=(4096, 1024), b_shape=(1024, 512), beta=0.0), True),  # the bias is not read
        (dict(a_shape=(4096, 1024), b_shape=(1024, 512), alpha=2.0), False),
        (dict(a_shape=(4096, 1024), b_shape=(1024, 512), beta=0.5), False),
        (dict(a_shape=(4096, 1024), b_shape=(1024, 512), dtype=torch.float64), False),
        (dict(a_shape=(4, 1024, 1024), b_shape=(4, 1024, 512), bias_shape=None), False),  # batched: bmm
        (dict(a_shape=(8, 4096), b_shape=(4096, 512)), False),  # few rows: split-K
    ],
    ids=["bias", "no-bias", "fp32", "beta-0", "alpha-2", "beta-half", "fp64", "bmm", "few-rows"],
)
def test_only_unscaled_2d_matmuls_that_launch_full_take_the_template(an_h100, case, takes_template):
    """The template computes ``a @ b + bias`` in the FULL launch's order and nothing else: scaled
    or batched matmuls, fp64, and matmuls that run split-K keep the traced launches."""
    gm = _matmul_graph(**case)
    assert launch_from_inductor(gm) == 1  # launched or marked for the template
    marked = [n for n in _calls(gm, MATMUL) if TEMPLATE in n.meta]
    assert len(marked) == (1 if takes_template else 0)
    assert bool(_calls(gm, LAUNCH)) != takes_template


class _RecordingOps:
    """An Inductor ops handler that records the casts an epilogue asks for."""

    def __init__(self):
        self.casts = []

    def add(self, a, b):
        return f"({a} + {b})"

    def to_dtype(self, x, dtype, src_dtype=None, use_compute_types=True):
        self.casts.append((dtype, use_compute_types))
        return f"{x}.to({dtype})"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_template_epilogue_rounds_to_the_stored_dtype_before_fused_ops_read_it(dtype, bias):
    """Ops fused after the template must read the value its output buffer stores (the rounded
    one), as they would from memory; Inductor computes fp16 / bf16 in fp32, so only a cast with
    the store type (use_compute_types=False) rounds."""
    from torch._inductor.virtualized import V

    from inductor_bi.lowerings.matmul_template import _rounded_to

    handler = _RecordingOps()
    with V.set_ops_handler(handler):
        out = _rounded_to(dtype, bias)("acc", *(["b"] if bias else []))
    assert handler.casts == [(dtype, False), (torch.float32, True)]
    assert out.startswith(("(acc + b)" if bias else "acc") + f".to({dtype})")
