"""MoE routing launched by Inductor (inductor_bi/lowerings/moe.py, kernels/moe.py).

On fake CUDA tensors (no GPU needed to trace): invariant_grouped_mm becomes one grouped launch
whose grid covers the worst case of the group sizes, with the tokens symbolic, no guard and no
host read of the offsets; exact_histc becomes its counting launch. Qwen3-MoE's experts block
("grouped_mm", as transformers 5.x runs it compiled) traced on those shapes loses both custom
ops. On the CPU (Triton's interpreter): the grouped kernel's rows are invariant_matmul's, bit for
bit, and every row of a worst-case routing is computed. Same bits as the custom op on a GPU:
tests/gpu/test_lowering_scan_moe_gpu.py."""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._dynamo.source import ConstantSource
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import inductor_bi  # noqa: F401
from inductor_bi.kernels import _device, _launch, matmul_table
from inductor_bi.kernels import moe as moe_kernel
from inductor_bi.kernels.matmul import invariant_matmul
from inductor_bi.lowerings import LOWERINGS, launch_from_inductor
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal

bi = torch.ops.inductor_bi
aten = torch.ops.aten
LAUNCH = torch.ops.higher_order.triton_kernel_wrapper_mutation
GROUPED_MM, HISTC = bi.invariant_grouped_mm.default, bi.exact_histc.default
HOST_READS = (aten._local_scalar_dense.default, aten.item.default)


@pytest.fixture
def an_h100(monkeypatch):
    monkeypatch.setattr(_device, "gpu", lambda device: _device.GpuProperties(132, 9, 232448))


def _symbol(env: ShapeEnv, name: str, hint: int):
    return env.create_symintnode(env.create_symbol(hint, ConstantSource(name)), hint=hint)


def _calls(gm, *targets):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in targets]


def _moe(x, w, expert_ids):
    """Tokens per expert by histc (float ids), offsets by an integer cumsum, the grouped matmul."""
    counts = bi.exact_histc(expert_ids, w.shape[0], 0.0, float(w.shape[0] - 1))
    offs = torch.cumsum(counts, 0, dtype=torch.int32)
    return bi.invariant_grouped_mm(x, w, offs)


def _moe_graph(device: str, dtype=torch.bfloat16, k=256, groups=8, rows_hint=40, symbolic_k=False):
    """The aten graph of ``_moe`` over ``[S, k]`` tokens, S symbolic; the weights as HF holds
    them ([G, N, K], used transposed)."""
    env = ShapeEnv()
    s = _symbol(env, "s", rows_hint)
    k = _symbol(env, "k", k) if symbolic_k else k
    with FakeTensorMode(shape_env=env):
        x = torch.empty(s, k, device=device, dtype=dtype)
        w = torch.empty(groups, 512, k, device=device, dtype=dtype).transpose(1, 2)
        ids = torch.empty(s, device=device, dtype=torch.float32)
    return make_fx(_moe)(x, w, ids), env


def test_the_moe_routing_ops_have_lowerings():
    assert {GROUPED_MM, HISTC} <= set(LOWERINGS)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_grouped_mm_becomes_one_launch_with_no_host_read_and_no_guard(an_h100, dtype):
    gm, env = _moe_graph("cuda", dtype)
    assert launch_from_inductor(gm) == 2
    assert not _calls(gm, GROUPED_MM, HISTC)
    assert not _calls(gm, *HOST_READS), "a host read of the offsets would sync and specialize"
    assert not env.guards, f"a guard on the tokens would recompile per batch size: {env.guards}"
    launches = _calls(gm, LAUNCH)
    (grouped,) = [n for n in launches if "OFFS" in n.kwargs["kwargs"]]
    offs = grouped.kwargs["kwargs"]["OFFS"]
    assert isinstance(offs, torch.fx.Node) and offs.target is aten.cumsum.default, "the offsets: data on the device"
    # the grid: the worst case over group sizes, cdiv(S, BLOCK_M) + G row tiles, S symbolic
    rows = grouped.kwargs["grid"][0][0]
    block_m = grouped.kwargs["kwargs"]["BLOCK_M"]
    s = next(n for n in gm.graph.nodes if n.op == "placeholder").meta["val"].shape[0]
    assert isinstance(rows, torch.fx.Node)
    for tokens in (1, 63, 64, 65, 4096):
        want = -(-tokens // block_m) + 8
        assert rows.meta["val"].node.expr.subs(s.node.expr, tokens) == want
    # bad offsets stop on the device instead of computing rows with another group's weights
    assert _calls(gm, aten._assert_async.msg)


def test_a_symbolic_k_keeps_the_grouped_custom_op(an_h100):
    """K sets the chunking constexprs: unknown at compile time, the op stays."""
    gm, _ = _moe_graph("cuda", symbolic_k=True)
    launch_from_inductor(gm)
    assert len(_calls(gm, GROUPED_MM)) == 1


def test_cpu_graphs_keep_the_custom_ops():
    gm, _ = _moe_graph("cpu")
    assert launch_from_inductor(gm) == 0
    assert len(_calls(gm, GROUPED_MM, HISTC)) == 2 and not _calls(gm, LAUNCH)


def test_histc_edges_reach_the_launch_as_aten_rounds_them():
    """The edges are constexprs: bit patterns of min and max rounded to x's dtype, as torch
    rounds a Python float (a float constexpr would be rounded to fp32 first)."""
    env = ShapeEnv()
    with FakeTensorMode(shape_env=env):
        x = torch.empty(_symbol(env, "n", 100), device="cuda", dtype=torch.float64)
    gm = make_fx(lambda x: bi.exact_histc(x, 10, 0.1, 0.7))(x)
    assert launch_from_inductor(gm) == 1 and not env.guards
    (launch,) = _calls(gm, LAUNCH)
    args = launch.kwargs["kwargs"]
    for bits, edge in ((args["LO_BITS"], 0.1), (args["HI_BITS"], 0.7)):
        assert bits == torch.tensor(edge, dtype=torch.float64).view(torch.int64).item()


@pytest.mark.parametrize("lo, hi", [(0.0, 0.0), (2.0, 2.0)], ids=["data-range", "equal-edges"])
def test_histc_over_the_data_range_keeps_the_custom_op(lo, hi):
    """min == max: the edges are the data's extrema, read on the host: the custom op stays."""
    env = ShapeEnv()
    with FakeTensorMode(shape_env=env):
        x = torch.empty(_symbol(env, "n", 100), device="cuda", dtype=torch.float32)
    gm = make_fx(lambda x: bi.exact_histc(x, 4, lo, hi))(x)
    assert launch_from_inductor(gm) == 0 and len(_calls(gm, HISTC)) == 1


# ---------------------------------------------------------------------------------------------
# Qwen3-MoE's experts block as transformers 5.x runs it under torch.compile ("grouped_mm"
# experts): router, top-k, sort by expert, histc, cumsum(int32), two grouped matmuls. Traced on
# the CPU with a symbolic batch (its Python indexing cannot run on fake CUDA tensors in a
# CPU-only torch), rewritten by the backend's passes, then its tensors relabelled CUDA: the
# graph Inductor would get on a GPU, minus the device.
# ---------------------------------------------------------------------------------------------


def _qwen3_moe_block_graph(monkeypatch, dtype):
    transformers = pytest.importorskip("transformers")
    from transformers.integrations import moe

    from inductor_bi.backend import decompositions
    from inductor_bi.passes import rewrite_graph

    # what Dynamo-compiled code takes: aten._grouped_mm for bf16, the fallback op otherwise
    monkeypatch.setattr(moe, "is_torchdynamo_compiling", lambda: True)
    config = transformers.Qwen3MoeConfig(hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_experts=4,
                                         num_experts_per_tok=2, num_hidden_layers=1, num_attention_heads=4,
                                         num_key_value_heads=2, vocab_size=128, experts_implementation="grouped_mm")  # fmt: skip
    block = transformers.models.qwen3_moe.modeling_qwen3_moe.Qwen3MoeSparseMoeBlock(config).to(dtype)
    names = [name for name, _ in block.named_parameters()]

    def forward(hidden, *params):
        return torch.func.functional_call(block, dict(zip(names, params)), (hidden,))

    env = ShapeEnv()
    mode = FakeTensorMode(shape_env=env)
    with mode:
        hidden = torch.empty(_symbol(env, "batch", 3), 5, 64, dtype=dtype)
        params = [torch.empty(p.shape, dtype=dtype) for p in block.parameters()]
        gm = make_fx(forward, decomposition_table=decompositions())(hidden, *params)
    rewrite_graph(gm)
    cuda = torch.device("cuda", 0)
    for node in gm.graph.nodes:
        for value in pytree.tree_leaves(node.meta.get("val")):
            if isinstance(value, FakeTensor):
                value.fake_device = cuda
        if node.kwargs.get("device") is not None:
            node.kwargs = {**node.kwargs, "device": cuda}
    gm.recompile()
    return gm, env


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_qwen3_moe_experts_routing_is_launched_with_no_host_read(an_h100, monkeypatch, dtype):
    gm, env = _qwen3_moe_block_graph(monkeypatch, dtype)
    assert len(_calls(gm, GROUPED_MM)) == 2 and len(_calls(gm, HISTC)) == 1  # the backend's rewrite
    launch_from_inductor(gm)
    assert not _calls(gm, GROUPED_MM, HISTC), "every routing op launched by Inductor"
    grouped = [n for n in _calls(gm, LAUNCH) if "OFFS" in n.kwargs["kwargs"]]
    assert len(grouped) == 2 and grouped[0].kwargs["kwargs"]["OFFS"] is grouped[1].kwargs["kwargs"]["OFFS"]
    assert not _calls(gm, *HOST_READS)
    assert not env.guards, f"a guard on the batch would recompile per batch size: {env.guards}"


# ---------------------------------------------------------------------------------------------
# The grouped kernel on the CPU (Triton's interpreter): what makes the launched path's bits the
# custom op's and a token's bits its own.
# ---------------------------------------------------------------------------------------------

K, N, G = 80, 72, 4


def _offsets(counts):
    return torch.tensor(counts).cumsum(0).to(torch.int32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_grouped_rows_are_invariant_matmul_rows(dtype):
    """Each group's rows: invariant_matmul(a[s:e], b[g])'s bits (its arithmetic, its contract)."""
    torch.manual_seed(0)
    counts = [3, 0, 40, 9]
    a = torch.randn(sum(counts) + 2, K).to(dtype)
    b = torch.randn(G, N, K).to(dtype).transpose(1, 2)  # HF's layout: [G, N, K] used transposed
    out = moe_kernel.invariant_grouped_mm(a, b, _offsets(counts))
    start = 0
    for g, end in enumerate(_offsets(counts).tolist()):
        if end > start:
            assert_rows_equal(out[start:end], invariant_matmul(a[start:end], b[g]), f"group {g}")
        start = end
    assert torch.equal(out[start:], torch.zeros(2, N, dtype=dtype)), "rows past the last offset are zero"


@given(partial=st.lists(st.integers(1, 6), min_size=G + 1, max_size=G + 1), full=st.integers(0, 2))
@settings(max_examples=4, deadline=None)
def test_every_row_of_a_worst_case_routing_is_computed(partial, full):
    """Every group and the rows past the last offset end in a partial tile, the partial rows
    filling less than one tile: the grid's cdiv(S, BLOCK_M) + G row tiles are all needed."""
    block_m = matmul_table.MATMUL_INTERPRETER.block_m
    counts = [full * block_m + p for p in partial]
    assert sum(-(-c // block_m) for c in counts) == -(-sum(counts) // block_m) + G
    a, b = torch.randn(sum(counts), K), torch.randn(G, K, N)
    offs = _offsets(counts[:G])
    out = moe_kernel.invariant_grouped_mm(a, b, offs)
    start = 0
    for g, end in enumerate(offs.tolist()):
        assert_close_to_reference(out[start:end], a[start:end].double() @ b[g].double(), dtype=torch.float32)
        start = end
    assert torch.equal(out[start:], torch.zeros(counts[G], N))


def test_the_device_check_of_the_offsets_refuses_what_the_host_check_refuses():
    """A launch Inductor makes asserts the offsets on the device (here, eagerly on the CPU)."""
    check = moe_kernel._offsets_checked_on_device
    check(_offsets([2, 0, 3]), 5)
    check(_offsets([2, 0, 3]), 9)
    decreasing, past_the_rows, negative = ([2, 1, 3], 6), ([2, 5, 9], 8), ([-1, 0, 1], 5)
    for ends, rows in (decreasing, past_the_rows, negative):
        with pytest.raises(RuntimeError, match="non-decreasing"):
            check(torch.tensor(ends, dtype=torch.int32), rows)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_histc_with_edges_no_float_of_the_dtype_holds_equals_aten(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2000, generator=g, dtype=dtype)
    x[:7] = torch.tensor([0.1, 0.7, 0.3, 0.5, 0.2, 0.6, 0.4], dtype=dtype)  # on (rounded) edges
    for bins, lo, hi in ((6, 0.1, 0.7), (3, 0.3, 0.9), (7, 0.0, 0.7)):
        assert torch.equal(moe_kernel.exact_histc(x, bins, lo, hi), torch.histc(x, bins=bins, min=lo, max=hi))
    assert torch.equal(moe_kernel.exact_histc(x[:0], 4, 0.0, 1.0), torch.histc(x[:0], bins=4, min=0.0, max=1.0))


# ---------------------------------------------------------------------------------------------
# What the H100 compiles, checked without a GPU (tools/diagnose/inspect_kernels.py).
# ---------------------------------------------------------------------------------------------


def _arithmetic(compiled, inspect_kernels):
    """The float ops per K step, without shuffles (the group search's integer scans) or wgmma
    waits / commits (how far the pipeline runs ahead, not what it computes)."""
    ops = [op for op in inspect_kernels.float_ops(compiled) if not op.startswith(("shfl", "wgmma.wait_group", "wgmma.commit_group"))]
    return inspect_kernels.per_k_step(ops)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_grouped_kernel_runs_invariant_matmuls_float_ops_on_sm90(monkeypatch, dtype):
    """Compiled for sm_90 as a Qwen3-MoE-sized call specializes it, the grouped kernel issues
    invariant_matmul's MMA sequence and epilogue per K step (its short tile; tall tiles and TMA
    share it: tests/test_kernels_sm90_codegen.py)."""
    from tests._support import load_file

    inspect_kernels = load_file("tools/diagnose/inspect_kernels.py", "inspect_kernels")
    launches = []
    monkeypatch.setattr(moe_kernel, "launch", lambda kernel, grid, device, *args, **kwargs: launches.append((kernel, args, kwargs)))
    monkeypatch.setattr(_launch, "uses_interpreter", lambda device: False)
    monkeypatch.setattr(moe_kernel, "_group_bounds", lambda *args: None)  # meta offsets: no values
    monkeypatch.setattr(_device, "gpu", lambda device: inspect_kernels.H100_PROPERTIES)
    a = torch.empty(300, 4096, device="meta", dtype=dtype)
    b = torch.empty(8, 1024, 4096, device="meta", dtype=dtype).transpose(1, 2)
    moe_kernel.invariant_grouped_mm(a, b, torch.empty(8, device="meta", dtype=torch.int32))
    (grouped,) = launches
    with inspect_kernels.recorded_launches() as calls:
        invariant_matmul(torch.empty(64, 4096, device="meta", dtype=dtype), b[0], split_k=False, tma=False)
    (matmul,) = calls
    grouped_ops = _arithmetic(inspect_kernels.compile_for_h100(*grouped), inspect_kernels)
    assert grouped_ops == _arithmetic(inspect_kernels.compile_for_h100(*matmul), inspect_kernels)
    assert dtype != torch.bfloat16 or grouped_ops[1] == [matmul_table.MATMUL_CUDA[dtype].block_k // matmul_table.MATMUL_MMA_K]
