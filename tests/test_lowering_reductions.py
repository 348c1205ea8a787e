"""The row reductions launched by Inductor (inductor_bi/lowerings/reductions.py): traced on fake
CUDA tensors (no GPU needed), each rewritten reduction becomes its row kernel's launch, one
program per row with a symbolic batch and no guard on it; a symbolic reduced extent, a CPU graph
or an R of 1 keeps the custom op. RMSNorm's eps as Dynamo passes it (a 0-dim CPU float64 tensor)
is computed on the GPU in the graph, so no CPU tensor reaches a launch; its value and the
kernel's pointer read are checked on the CPU against the custom op's."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch._dynamo.source import ConstantSource
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import inductor_bi  # noqa: F401
from inductor_bi.kernels import reduction
from inductor_bi.lowerings import launch_from_inductor

bi = torch.ops.inductor_bi
LAUNCH = torch.ops.higher_order.triton_kernel_wrapper_mutation
HIDDEN = 64

# op -> a call of it on x [B, 7, HIDDEN] (and w [HIDDEN], r like x), as the passes write it
CALLS = {
    bi.invariant_rms_norm_rows.default: lambda x, w, r, eps: bi.invariant_rms_norm_rows(x, 1e-6, w, torch.float16, torch.float16, r, None),
    bi.invariant_layer_norm.default: lambda x, w, r, eps: bi.invariant_layer_norm(x, [HIDDEN], w, w, 1e-5),
    bi.invariant_softmax.default: lambda x, w, r, eps: bi.invariant_softmax(x, -1, False),
    bi.invariant_log_softmax.default: lambda x, w, r, eps: bi.invariant_log_softmax(x, 1, True),
    bi.invariant_sum.default: lambda x, w, r, eps: bi.invariant_sum(x, [-1], False, torch.float32),
    bi.invariant_mean.default: lambda x, w, r, eps: bi.invariant_mean(x, [-1], True, torch.float32, True, r),
    bi.invariant_var_mean.default: lambda x, w, r, eps: bi.invariant_var_mean(x, [1, 2], 1.0, True),
    bi.invariant_std_mean.default: lambda x, w, r, eps: bi.invariant_std_mean(x, [-1], 0.0, False),
}


def _graph(fn, device: str = "cuda", batch_hint: int = 5, hidden=HIDDEN, dtype=torch.float16):
    """The aten graph of ``fn(x, w, r, eps)`` over x [B, 7, hidden] with B symbolic (and hidden
    symbolic when given as a name); eps is a 0-dim float64 CPU tensor, as Dynamo passes a float."""
    env = ShapeEnv()
    mode = FakeTensorMode(shape_env=env)

    def symbol(name, hint):
        return env.create_symintnode(env.create_symbol(hint, ConstantSource(name)), hint=hint)

    b = symbol("b", batch_hint)
    h = symbol(hidden, 64) if isinstance(hidden, str) else hidden
    with mode:
        x = torch.empty(b, 7, h, device=device, dtype=dtype)
        r = torch.empty(b, 7, h, device=device, dtype=dtype)
        w = torch.empty(h, device=device, dtype=dtype)
        eps = torch.empty((), dtype=torch.float64)
    return make_fx(fn)(x, w, r, eps), env


def _calls(gm, target):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is target]


def _launch_tensors(node) -> dict:
    return {k: v.meta["val"] for k, v in node.kwargs["kwargs"].items() if isinstance(v, torch.fx.Node)}


@pytest.mark.parametrize("op", list(CALLS), ids=lambda op: op._opname)
def test_each_row_reduction_becomes_one_launch_per_row_with_no_guard_on_the_batch(op):
    gm, env = _graph(CALLS[op])
    assert launch_from_inductor(gm) == 1
    assert not _calls(gm, op)
    (launch,) = _calls(gm, LAUNCH)
    assert not env.guards, f"a guard on the batch would recompile per batch size: {env.guards}"
    rows, *rest = launch.kwargs["grid"][0]
    assert isinstance(rows, torch.fx.Node) and rest == [1, 1], f"one program per row, as many as the symbolic rows: {launch.kwargs['grid']}"
    for name, value in _launch_tensors(launch).items():
        assert value.device.type == "cuda", f"{name} reaches the launch on {value.device}"


def test_a_launch_keeps_the_exact_strides_of_its_rows():
    """Inductor passes a launch its tensors with the strides recorded on it (eager_input_vals), not
    only their order: a padded buffer would put the kernel's rows in the wrong place."""
    gm, _ = _graph(CALLS[bi.invariant_layer_norm.default])
    launch_from_inductor(gm)
    (launch,) = _calls(gm, LAUNCH)
    _, recorded = launch.meta["eager_input_vals"]
    for name, value in _launch_tensors(launch).items():
        assert recorded["kwargs"][name].stride() == value.stride(), name


def test_a_softmax_over_a_strided_view_reads_a_dense_copy():
    """Rows that do not lie densely in memory (a slice of the last dim) are copied before the
    launch, as the custom op copies them."""
    gm, _ = _graph(lambda x, w, r, eps: bi.invariant_softmax(x.narrow(2, 1, HIDDEN - 1), -1, False))
    assert launch_from_inductor(gm) == 1
    (launch,) = _calls(gm, LAUNCH)
    assert launch.kwargs["kwargs"]["x_ptr"].target is torch.ops.aten.clone.default
    assert launch.kwargs["kwargs"]["x_ptr"].meta["val"].is_contiguous()


@pytest.mark.parametrize("offset, copied", [(1, True), (HIDDEN, False)], ids=["2-byte-offset", "128-byte-offset"])
def test_rows_at_an_unaligned_offset_are_copied_to_an_aligned_buffer(offset, copied):
    """Triton compiles another variant (another tl.sum tree) for an unaligned pointer: contiguous
    rows at an offset not known to be a multiple of 16 bytes are copied, as the custom op copies an
    unaligned pointer; rows at an aligned offset are read in place."""

    def shifted_rows(x, w, r, eps):
        return bi.invariant_sum(x.view(-1).narrow(0, offset, 7 * HIDDEN).view(7, HIDDEN), [-1], False, None)

    gm, _ = _graph(shifted_rows)
    assert launch_from_inductor(gm) == 1
    (launch,) = _calls(gm, LAUNCH)
    x_arg = launch.kwargs["kwargs"]["x_ptr"]
    assert (x_arg.target is torch.ops.aten.clone.default) == copied
    assert x_arg.meta["val"].storage_offset() * 2 % 16 == 0


@pytest.mark.parametrize(
    "fn, hidden",
    [
        (lambda x, w, r, eps: bi.invariant_softmax(x, -1, False), "h"),
        (lambda x, w, r, eps: bi.invariant_rms_norm_rows(x, 1e-6, w, None, torch.float16, None, None), "h"),
        (lambda x, w, r, eps: bi.invariant_sum(x, [0], False, None), HIDDEN),
        (lambda x, w, r, eps: bi.invariant_var_mean(x, None, 1.0, False), HIDDEN),
        (lambda x, w, r, eps: bi.invariant_layer_norm(x, [1], None, None, 1e-5), 1),
    ],
    ids=["symbolic-hidden", "symbolic-rms-hidden", "sum-over-the-batch", "var-of-everything", "extent-of-one"],
)
def test_a_reduced_extent_not_known_to_be_two_or_more_keeps_the_custom_op(fn, hidden):
    """The reduced extent sets BLOCK_R and num_warps: unknown at compile time (the hidden size, or
    a reduction over the batch), the node stays the custom op, slow and invariant."""
    gm, env = _graph(fn, hidden=hidden)
    (node,) = [n for n in gm.graph.nodes if n.op == "call_function" and getattr(n.target, "namespace", None) == "inductor_bi"]
    assert launch_from_inductor(gm) == 0
    assert _calls(gm, node.target) and not _calls(gm, LAUNCH)


def test_cpu_graphs_keep_the_custom_ops():
    for op, fn in CALLS.items():
        gm, _ = _graph(fn, device="cpu")
        assert launch_from_inductor(gm) == 0, op
        assert len(_calls(gm, op)) == 1 and not _calls(gm, LAUNCH)


def test_a_float64_rms_norm_keeps_the_custom_op():
    """The RMSNorm row kernel computes fp16 / bf16 / fp32 rows (the pass fuses only those)."""
    gm, _ = _graph(lambda x, w, r, eps: bi.invariant_rms_norm_rows(x, 1e-6, w, None, torch.float64, None, None), dtype=torch.float64)
    assert launch_from_inductor(gm) == 0


# ----------------------------------------------------------------------------------------------
# RMSNorm's eps as Dynamo passes an unspecialized float (HF Llama / Qwen3 under dynamic=True):
# invariant_rms_norm_rows(x, 0.0, weight, ..., eps_tensor=<0-dim float64 CPU placeholder>).
# ----------------------------------------------------------------------------------------------


def _llama_norm(x, w, r, eps):
    out, h = bi.invariant_rms_norm_rows(x, 0.0, w, torch.float16, torch.float16, r, eps)
    return out, h


def test_an_eps_tensor_from_dynamo_reaches_the_launch_as_a_gpu_value():
    """A CPU tensor given to a launch splits Inductor's CUDA graph around it (reduce-overhead
    failed on HF Llama, one partition per RMSNorm): eps is computed on the GPU from the CPU scalar,
    as Inductor reads Dynamo's floats for its own kernels, and the kernel loads it."""
    gm, env = _graph(_llama_norm)
    eps_input = [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
    assert launch_from_inductor(gm) == 1 and not env.guards
    (launch,) = _calls(gm, LAUNCH)
    eps_arg = launch.kwargs["kwargs"]["eps"]
    value = eps_arg.meta["val"]
    assert value.device.type == "cuda" and value.dtype == torch.float32 and value.dim() == 0
    (use,) = eps_input.users  # the CPU scalar is read by one GPU add, nothing else
    assert use.target is torch.ops.aten.add.Tensor and use.meta["val"].device.type == "cuda"
    for name, tensor in _launch_tensors(launch).items():
        assert tensor.device.type == "cuda", f"{name} reaches the launch on {tensor.device}"


_fp32_midpoints = st.integers(1, 2**23 - 2).map(lambda m: math.ldexp(1 + (2 * m + 1) / 2**24, -17))


@given(st.one_of(st.floats(0.0, 1.0, exclude_min=True), _fp32_midpoints))
def test_the_eps_computed_in_the_graph_is_the_fp32_value_the_custom_op_passes(eps):
    """One rounding of the float64 eps to fp32 (ties to even included: the midpoints between two
    fp32 values), as ``float(eps_tensor.float())`` on the host, not fp64 arithmetic."""
    eps_tensor = torch.tensor(eps, dtype=torch.float64)
    on_device = reduction._eps_on_device(eps_tensor, torch.device("cpu"))
    assert on_device.dtype == torch.float32 and on_device.dim() == 0
    assert on_device.item() == float(eps_tensor.float())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_eps_read_from_a_pointer_gives_the_bits_of_eps_passed_as_a_number(dtype):
    """The kernel's EPS_FROM_POINTER switch (the launch Inductor makes) and the float argument (the
    custom op's) add the same fp32 eps: the same bits, here on Triton's interpreter. Rows small
    enough for eps to matter."""
    x = torch.randn(3, 40, dtype=dtype) * 1e-3
    r = torch.randn(3, 40, dtype=dtype) * 1e-3
    w = torch.randn(40, dtype=dtype)
    eps = 1.1e-6  # not an fp32 value: rounded once, to the same fp32 on both paths
    want, want_h = reduction.invariant_rms_norm_rows(x, eps, w, dtype, dtype, r)
    got, got_h = torch.empty_like(x), torch.empty_like(x)
    reduction._launch_rows(
        reduction._row_rms_normalize_kernel, 3, 40, dtype, x.device,
        x, r, torch.tensor(eps, dtype=torch.float32), w, got, got_h, 40,
        ADD=True, HAS_WEIGHT=True, NORMALIZED_DTYPE=reduction._TL_DTYPES[dtype], EPS_FROM_POINTER=True, ACC=reduction.tl.float32,
    )  # fmt: skip
    assert torch.equal(got, want) and torch.equal(got_h, want_h)
    nudged, _ = reduction.invariant_rms_norm_rows(x, eps * 1.5, w, dtype, dtype, r)
    assert not torch.equal(nudged, want), "rows where eps changes the result"
