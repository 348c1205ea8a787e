"""The scans launched by Inductor (inductor_bi/lowerings/scan.py): graph in -> graph out on fake
CUDA tensors (no GPU needed to trace). A scan over a static length becomes the kernel launch the
custom op makes, with the rows symbolic and no guard on them; a symbolic length keeps the custom
op, as does a CPU graph. Same bits as the custom op: tests/gpu/test_lowering_scan_moe_gpu.py."""

from __future__ import annotations

import re

import pytest
import torch
from torch._dynamo.source import ConstantSource
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import inductor_bi  # noqa: F401
from inductor_bi.kernels import scan as scan_kernel
from inductor_bi.lowerings import LOWERINGS, launch_from_inductor

bi = torch.ops.inductor_bi
LAUNCH = torch.ops.higher_order.triton_kernel_wrapper_mutation
SCANS = {
    "cumsum": lambda x, dim: bi.invariant_cumsum(x, dim, None),
    "cumprod": lambda x, dim: bi.invariant_cumprod(x, dim, None),
    "logcumsumexp": lambda x, dim: bi.invariant_logcumsumexp(x, dim),
}
SCAN_OPS = (bi.invariant_cumsum.default, bi.invariant_cumprod.default, bi.invariant_logcumsumexp.default)


def _symbol(env: ShapeEnv, name: str, hint: int):
    return env.create_symintnode(env.create_symbol(hint, ConstantSource(name)), hint=hint)


def _graph(fn, device: str, shape, dtype=torch.float16, rows_hint: int = 40):
    """The aten graph of ``fn`` over one tensor of ``shape``, where "m" (the rows) and "L" (a
    length) are symbolic (hint ``rows_hint`` / 64)."""
    env = ShapeEnv()
    sizes = {"m": _symbol(env, "m", rows_hint), "L": _symbol(env, "L", 64)}
    with FakeTensorMode(shape_env=env):
        x = torch.empty([sizes.get(s, s) for s in shape], device=device, dtype=dtype)
    return make_fx(fn)(x), env


def _calls(gm, *targets):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in targets]


def _launch_constants(node) -> dict:
    """The arguments a traced launch passes that are no graph values (in the node, or in the kernel
    side table), with its launch options."""
    constants = {k: v for k, v in node.kwargs["kwargs"].items() if not isinstance(v, torch.fx.Node)}
    constants.update(kernel_side_table.get_constant_args(node.kwargs["constant_args_idx"]))
    kernel = kernel_side_table.get_kernel(node.kwargs["kernel_idx"])
    for config in getattr(kernel, "configs", [])[:1]:  # launch options wrap the kernel in one config
        constants.update(num_warps=config.num_warps, num_stages=config.num_stages)
    return constants


def test_the_scans_have_lowerings():
    assert set(SCAN_OPS) <= set(LOWERINGS)


@pytest.mark.parametrize("op", SCANS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_a_scan_becomes_one_launch_with_no_guard_on_the_rows(op, dtype):
    gm, env = _graph(lambda x: SCANS[op](x, 1) * 2, "cuda", ("m", 1000), dtype)
    assert launch_from_inductor(gm) == 1
    assert not _calls(gm, *SCAN_OPS)
    (launch,) = _calls(gm, LAUNCH)
    assert not env.guards, f"a guard on the rows would recompile per batch size: {env.guards}"
    grid = launch.kwargs["grid"][0]
    assert isinstance(grid[0], torch.fx.Node), f"one program per row, the rows symbolic: {grid}"
    # the custom op's launch: its pinned block and warps, the length unchanged, the op's code
    constants = _launch_constants(launch)
    assert constants["BLOCK"] == scan_kernel.SCAN_BLOCK_CUDA and constants["L"] == 1000
    assert constants["OP"] == scan_kernel.OPS.index(op)
    assert constants["num_warps"] == scan_kernel.SCAN_WARPS and constants["num_stages"] == scan_kernel.SCAN_STAGES


def test_a_scan_along_a_leading_dim_keeps_no_guard_and_a_contiguous_output():
    """The scanned dim first, the rows in the middle: moved last for the kernel, and back."""
    gm, env = _graph(lambda x: SCANS["logcumsumexp"](x, 0), "cuda", (77, "m", 3), torch.float32)
    assert launch_from_inductor(gm) == 1 and not env.guards, env.guards
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    assert out.meta["val"].is_contiguous(), "the custom op's output is contiguous"


def test_the_dtype_argument_converts_before_the_scan():
    """cumsum(x, dtype=float64): x converted first, the kernel scans in float64."""
    gm, env = _graph(lambda x: bi.invariant_cumsum(x, 1, torch.float64), "cuda", ("m", 300), torch.float16)
    assert launch_from_inductor(gm) == 1 and not env.guards
    (launch,) = _calls(gm, LAUNCH)
    assert launch.kwargs["kwargs"]["x_ptr"].meta["val"].dtype == torch.float64
    assert _launch_constants(launch)["ACC"] == scan_kernel._acc_dtype(torch.float64)


def test_a_symbolic_length_is_launched_with_no_guard_on_it():
    """L is a loop bound, never a constexpr: one launch serves every length (a decode cache or a
    prompt growing under dynamic=True)."""
    gm, env = _graph(lambda x: SCANS["cumsum"](x, 1), "cuda", ("m", "L"))
    assert launch_from_inductor(gm) == 1 and not env.guards, env.guards
    (launch,) = _calls(gm, LAUNCH)
    assert isinstance(launch.kwargs["kwargs"]["L"], torch.fx.Node), "the length reaches the kernel as an argument"


def test_a_length_of_one_keeps_the_custom_op():
    """L == 1 would be a constexpr in Inductor's launch, another binary than the custom op's."""
    gm, _ = _graph(lambda x: SCANS["cumsum"](x, 1), "cuda", ("m", 1))
    assert launch_from_inductor(gm) == 0
    assert len(_calls(gm, *SCAN_OPS)) == 1 and not _calls(gm, LAUNCH)


def test_cpu_graphs_keep_the_custom_ops():
    gm, _ = _graph(lambda x: SCANS["cumprod"](x, 1), "cpu", ("m", 100), torch.float32)
    assert launch_from_inductor(gm) == 0
    assert len(_calls(gm, *SCAN_OPS)) == 1 and not _calls(gm, LAUNCH)


def test_a_non_contiguous_input_is_copied_for_the_kernel():
    """The kernel reads contiguous rows: a strided view is copied first, as the custom op does."""
    gm, env = _graph(lambda x: SCANS["cumsum"](x.narrow(1, 1, 76), 1), "cuda", ("m", 77), torch.float32)
    assert launch_from_inductor(gm) == 1 and not env.guards
    (launch,) = _calls(gm, LAUNCH)
    operand = launch.kwargs["kwargs"]["x_ptr"].meta["val"]
    assert operand.is_contiguous() and operand.storage_offset() == 0


# ---------------------------------------------------------------------------------------------
# What the H100 compiles, checked without a GPU (tools/diagnose/inspect_kernels.py): Inductor's
# launch of the scan kernel and the custom op's must be one arithmetic.
# ---------------------------------------------------------------------------------------------


def _compiled_for_h100(op: str, dtype: torch.dtype, length_divisible_by_16: bool):
    """The scan kernel for sm_90 with the custom op's specialization (L never specialized), or
    with Inductor's, which marks a static L that is a multiple of 16 as such whatever the
    kernel's do_not_specialize says (its config_of)."""
    import triton
    from triton.compiler import ASTSource

    from tests._support import load_file

    inspect_kernels = load_file("tools/diagnose/inspect_kernels.py", "inspect_kernels")
    x = torch.empty(4, 1024, device="meta", dtype=dtype)
    launch = dict(OP=scan_kernel.OPS.index(op), BLOCK=scan_kernel.SCAN_BLOCK_CUDA, ACC=scan_kernel._acc_dtype(dtype),
                  num_warps=scan_kernel.SCAN_WARPS, num_stages=scan_kernel.SCAN_STAGES)  # fmt: skip
    kernel = scan_kernel._row_scan_kernel
    signature, constexprs, attrs, options = inspect_kernels.specialization(kernel, (x, x, 1024), launch)
    if length_divisible_by_16:
        attrs[(kernel.arg_names.index("L"),)] = [["tt.divisibility", 16]]
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=inspect_kernels.H100, options=options)
    layouts = sorted(set(re.findall(r"#ttg\.blocked<[^>]*>", compiled.asm["ttgir"])))
    return inspect_kernels.float_ops(compiled), layouts


@pytest.mark.parametrize("op, dtype", [("cumsum", torch.float32), ("logcumsumexp", torch.bfloat16)])
def test_inductors_specialized_length_compiles_the_custom_ops_arithmetic(op, dtype):
    """A static L divisible by 16 would let the loads widen (4 / 8 elements per thread), which
    changes the register layout and so the scan's combine tree: the kernel's hint on the row
    offset keeps Inductor's launch on the custom op's layout and float ops."""
    custom_ops_ops, custom_ops_layouts = _compiled_for_h100(op, dtype, length_divisible_by_16=False)
    inductors_ops, inductors_layouts = _compiled_for_h100(op, dtype, length_divisible_by_16=True)
    assert inductors_layouts == custom_ops_layouts, (inductors_layouts, custom_ops_layouts)
    assert inductors_ops == custom_ops_ops
