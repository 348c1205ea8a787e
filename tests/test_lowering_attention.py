"""fixed_split_attention launched by Inductor (inductor_bi/lowerings/attention.py): graph in ->
graph out on fake CUDA tensors (no GPU needed to trace). A decode step against a growing cache
(symbolic batch and KV length) and a prefill (symbolic batch and length) become the kernel
launches the custom op makes, with no guard on any size; what cannot be launched keeps the op."""

from __future__ import annotations

import collections
import os
import re
import subprocess
import tempfile

import pytest
import sympy
import torch
from torch._dynamo.source import ConstantSource
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv

import inductor_bi  # noqa: F401
from inductor_bi.kernels import attention, attention_table, _device
from inductor_bi.kernels._launch import size_hint
from inductor_bi.lowerings import launch_from_inductor

from tests._support import load_file

OP = torch.ops.inductor_bi.fixed_split_attention.default
LAUNCH = torch.ops.higher_order.triton_kernel_wrapper_mutation
MODE = {"sequential": 0, "split": 1, "merge": 2}


@pytest.fixture
def an_h100(monkeypatch):
    monkeypatch.setattr(_device, "gpu", lambda device: _device.GpuProperties(132, 9, 232448))


def _calls(gm, target):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is target]


class _Sizes:
    """Symbolic sizes of one trace (a ShapeEnv like Dynamo's under dynamic=True)."""

    def __init__(self):
        self.env = ShapeEnv()
        self.mode = FakeTensorMode(shape_env=self.env)

    def sym(self, name: str, hint: int, duck: bool = True):
        """A symbolic size; ``duck=False``: its own symbol even where another size has its value
        (Dynamo gives a DynamicCache's key and value tensors one each)."""
        dim = DimDynamic.DUCK if duck else DimDynamic.DYNAMIC
        return self.env.create_symintnode(self.env.create_symbol(hint, ConstantSource(name), dynamic_dim=dim), hint=hint)

    def empty(self, *shape, dtype=torch.float16, device="cuda"):
        with self.mode:
            return torch.empty(*shape, dtype=dtype, device=device)


def _attention_graph(q, k, v, mask=None, is_causal=False, scale=None, enable_gqa=False, kv_rows=None):
    def f(q, k, v, mask, kv_rows):
        return torch.ops.inductor_bi.fixed_split_attention(q, k, v, mask, is_causal, scale, enable_gqa, kv_rows).relu()

    return make_fx(f)(q, k, v, mask, kv_rows)


def _launches(gm):
    """(MODE, grid, kwargs) of each kernel launch in ``gm``, in order; kwargs with the launch
    options (num_warps, num_stages), which the trace keeps in the kernel's one config."""
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table

    found = []
    for n in _calls(gm, LAUNCH):
        kernel = kernel_side_table.get_kernel(n.kwargs["kernel_idx"])
        (config,) = kernel.configs
        assert kernel.fn is attention._fixed_split_attention_kernel
        options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
        found.append((n.kwargs["kwargs"]["MODE"], n.kwargs["grid"][0], {**n.kwargs["kwargs"], **options}))
    return found


def _follows(size, dims) -> bool:
    """``size`` is computed in the graph from an input's symbolic size at one of ``dims`` (never
    a constant of the traced example)."""
    if not isinstance(size, torch.fx.Node):
        return False
    seen, todo = set(), [size]
    while todo:
        n = todo.pop()
        if n.target is torch.ops.aten.sym_size.int and n.args[1] in dims:
            return True
        todo += [a for a in n.all_input_nodes if a not in seen]
        seen.update(n.all_input_nodes)
    return False


def _decode(sizes: _Sizes, batch_hint=3, cached_hint=40, dtype=torch.float16, d=64):
    """One query per row against a cache of ``cached + 1`` keys, a bool padding mask, GQA 8 / 2."""
    b, s = sizes.sym("b", batch_hint), sizes.sym("s", cached_hint)
    q = sizes.empty(b, 8, 1, d, dtype=dtype)
    k, v = sizes.empty(b, 2, s + 1, d, dtype=dtype), sizes.empty(b, 2, s + 1, d, dtype=dtype)
    mask = sizes.empty(b, 1, 1, s + 1, dtype=torch.bool)
    return q, k, v, mask


def test_decode_against_a_growing_cache_becomes_split_and_merge_launches_with_no_guard(an_h100):
    """Under dynamic=True a decode step sees a symbolic KV length: it reaches the kernel as an
    argument and through the number of splits (a grid size), never a constexpr, so it launches."""
    sizes = _Sizes()
    q, k, v, mask = _decode(sizes)
    gm = _attention_graph(q, k, v, mask, enable_gqa=True)
    assert launch_from_inductor(gm) == 1
    assert not _calls(gm, OP)
    (split_mode, split_grid, split), (merge_mode, merge_grid, merge) = _launches(gm)
    assert (split_mode, merge_mode) == (MODE["split"], MODE["merge"])
    assert not sizes.env.guards, f"a guard on the batch or the KV length would recompile per size: {sizes.env.guards}"
    assert _follows(split_grid[0], {0}) and _follows(merge_grid[0], {0}), "programs follow the batch"
    assert _follows(split_grid[1], {2}) and merge_grid[1] == 1, "one split program per KV split, counted from Lk"
    assert _follows(split["N_SPLITS"], {2}) and _follows(split["Lk"], {2})
    # no arrival counters (the MERGE launch instead), no TMA descriptors, nothing else persistent
    for launch in (split, merge):
        assert launch["MERGE_IN_LAST"] is False and launch["USE_TMA"] is False and launch["Q_BY_TMA"] is False
        assert launch["HEADS_PER_PROG"] == 4 and launch["MASK_KIND"] == 1
        assert "enable_fp_fusion" not in launch  # Inductor would drop it: see contraction_changes_nothing


def test_a_bool_mask_reaches_the_launch_converted_not_viewed(an_h100):
    """Inductor lowers no bool -> uint8 view (torch.iinfo(bool) raises in its bitcast lowering,
    a compile error on the GPU): the traced mask is converted, the same 0 / 1 bytes."""
    q, k, v, mask = _decode(_Sizes())
    gm = _attention_graph(q, k, v, mask, enable_gqa=True)
    assert launch_from_inductor(gm) == 1
    views = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.view.dtype]
    assert not views, [str(n) for n in views]
    (_, _, split), _ = _launches(gm)
    assert split["MASK"].meta["val"].dtype == torch.uint8


def test_key_and_value_lengths_of_their_own_get_one_guard_that_they_are_equal(an_h100):
    """A DynamicCache's keys and values reach the graph with a length symbol each; the kernel takes
    one Lk, so tracing checks they are equal: one guard, always true for a cache (no recompile),
    and none on the batch or on any length's value."""
    sizes = _Sizes()
    b, s, t = sizes.sym("b", 3), sizes.sym("s", 40, duck=False), sizes.sym("t", 40, duck=False)
    lengths = {s.node.expr, t.node.expr}
    q, k, v = sizes.empty(b, 8, 1, 64), sizes.empty(b, 2, s + 1, 64), sizes.empty(b, 2, t + 1, 64)
    gm = _attention_graph(q, k, v, enable_gqa=True)
    assert launch_from_inductor(gm) == 1
    (guard,) = sizes.env.guards
    assert isinstance(guard.expr, sympy.Eq) and guard.expr.free_symbols == lengths, guard


def test_prefill_becomes_one_launch_whose_grid_follows_batch_and_length(an_h100):
    sizes = _Sizes()
    b, s = sizes.sym("b", 4), sizes.sym("s", 600)  # 320 query tiles: more than the split threshold
    q, k, v = sizes.empty(b, 8, s, 64), sizes.empty(b, 8, s, 64), sizes.empty(b, 8, s, 64)
    gm = _attention_graph(q, k, v, is_causal=True)
    assert launch_from_inductor(gm) == 1
    ((mode, grid, launch),) = _launches(gm)
    assert mode == MODE["sequential"] and launch["IS_CAUSAL"] is True and launch["MASK_KIND"] == 0
    assert not sizes.env.guards, sizes.env.guards
    assert _follows(grid[0], {0}) and _follows(grid[0], {2}), "programs: query blocks x batch x heads"


def _custom_op_launches(monkeypatch, q, k, v, **kwargs):
    """The launches the custom op makes for these (fake, static) tensors on an H100, recorded."""
    recorded = []
    monkeypatch.setattr(attention, "launch", lambda kernel, grid, device, *args, **kw: recorded.append((grid, args, kw)))
    monkeypatch.setattr(attention_table, "ATTENTION_MERGE_IN_LAST_PROGRAM", False)  # a real counter buffer; the same bits
    attention.fixed_split_attention(q, k, v, tma=False, **kwargs)
    return recorded


@pytest.mark.parametrize("case", ["decode", "prefill", "kv_rows"])
def test_launched_kernels_are_the_custom_ops_with_the_same_arguments(an_h100, monkeypatch, case):
    """Traced with hints equal to a call's sizes, the launches are the ones the custom op makes for
    that call: the same modes and grids, every constexpr and scalar argument equal (a symbolic one
    by its hint). Only the compile option enable_fp_fusion is not passed (Inductor takes none);
    TMA and the merge in the last program, bit-neutral by the kernel's contract, are off in both."""
    sizes = _Sizes()
    b = sizes.sym("b", 3)
    cache = slots = mask = None
    if case == "prefill":
        s = sizes.sym("s", 300)
        q, k, v = (sizes.empty(b, 8, s, 128, dtype=torch.bfloat16) for _ in range(3))
        concrete = [sizes.empty(3, 8, 300, 128, dtype=torch.bfloat16) for _ in range(3)]
        options = dict(is_causal=True)
    elif case == "decode":
        q, k, v, mask = _decode(sizes, batch_hint=3, cached_hint=599)
        concrete = [sizes.empty(3, 8, 1, 64), sizes.empty(3, 2, 600, 64), sizes.empty(3, 2, 600, 64), sizes.empty(3, 1, 1, 600, dtype=torch.bool)]
        options = dict(enable_gqa=True)
    else:
        s = sizes.sym("s", 600)
        q, k, slots = sizes.empty(b, 8, 1, 64), sizes.empty(7, 2, s, 64), sizes.empty(b, dtype=torch.int64)
        v = k
        cache = sizes.empty(7, 2, 600, 64)
        concrete = [sizes.empty(3, 8, 1, 64), cache, cache, None, sizes.empty(3, dtype=torch.int64)]
        options = dict(enable_gqa=True)
    gm = _attention_graph(q, k, v, mask, kv_rows=slots, **options)
    assert launch_from_inductor(gm) == 1
    with sizes.mode:
        want = _custom_op_launches(monkeypatch, *concrete[:3], attn_mask=concrete[3] if len(concrete) > 3 else None,
                                   kv_rows=concrete[4] if len(concrete) > 4 else None, **options)  # fmt: skip
    got = _launches(gm)
    assert [mode for mode, _, _ in got] == [kw["MODE"] for _, _, kw in want]
    names = attention._fixed_split_attention_kernel.arg_names
    for (_, traced_grid, traced), (grid, args, kw) in zip(got, want):
        assert kw.pop("enable_fp_fusion") is False
        assert [_hinted(g) for g in traced_grid] == [*grid, 1][:len(traced_grid)]
        scalars = {name: value for name, value in zip(names, args) if isinstance(value, (int, float))}
        for name, value in {**scalars, **kw}.items():
            assert _hinted(traced[name]) == value, (name, traced[name], value)


def _hinted(value):
    """A traced launch argument as the traced example had it (a symbolic size: its hint)."""
    return size_hint(value.meta["val"]) if isinstance(value, torch.fx.Node) else value


def test_kv_cache_read_in_place_is_launched(an_h100):
    """kv_rows (passes/kv_gather.py): each row reads its cache slot; the slot count is static."""
    sizes = _Sizes()
    b, s = sizes.sym("b", 5), sizes.sym("s", 70)
    q, cache = sizes.empty(b, 8, 1, 64), sizes.empty(16, 2, s, 64)
    gm = _attention_graph(q, cache, cache, enable_gqa=True, kv_rows=sizes.empty(b, dtype=torch.int64))
    assert launch_from_inductor(gm) == 1
    launches = _launches(gm)
    assert launches and all(kw["HAS_KV_ROWS"] is True and kw["KV_SLOTS"] == 16 for _, _, kw in launches)
    assert not sizes.env.guards, sizes.env.guards


@pytest.mark.parametrize("scale", [0.0, -0.3, 0.125])
def test_zero_and_negative_scales_are_launched_as_the_custom_op_runs_them(an_h100, scale):
    """scale <= 0 runs the scale > 0 kernel on q * 0 or on -q with |scale| (host-side): traced, the
    query the kernel reads is that product, and its scale argument is positive."""
    sizes = _Sizes()
    q, k, v, mask = _decode(sizes)
    gm = _attention_graph(q, k, v, mask, scale=scale, enable_gqa=True)
    assert launch_from_inductor(gm) == 1
    (_, _, launch), *_ = _launches(gm)
    assert launch["qk_scale_log2"] > 0
    q_producer = launch["Q"]
    while q_producer.target in (torch.ops.aten.expand.default, torch.ops.aten.alias.default):
        q_producer = q_producer.args[0]
    if scale == 0.0:
        assert q_producer.target is torch.ops.aten.mul.Tensor and q_producer.args[1] == 0.0
    elif scale < 0:
        assert q_producer.target is torch.ops.aten.neg.default
    else:
        assert q_producer.op == "placeholder"


@pytest.mark.parametrize("shapes", ["mqa", "one_query_head", "kv_heads_differ"])
def test_broadcast_heads_are_launched(an_h100, shapes):
    """MQA by broadcast (one K/V head without enable_gqa), one query head meeting every K/V head,
    and GQA whose K and V head counts differ (V repeated per group): as the custom op. ([L, D]
    inputs: tests/gpu, the op's fake implementation indexes a fake CUDA tensor, which a CPU-only
    torch refuses.)"""
    sizes = _Sizes()
    b, s = sizes.sym("b", 3), sizes.sym("s", 50)
    gqa = False
    if shapes == "mqa":
        q, k, v = sizes.empty(b, 8, 1, 64), sizes.empty(b, 1, s, 64), sizes.empty(b, 1, s, 64)
    elif shapes == "one_query_head":
        q, k, v = sizes.empty(b, 1, 1, 64), sizes.empty(b, 4, s, 64), sizes.empty(b, 4, s, 64)
    else:
        q, k, v, gqa = sizes.empty(b, 8, 1, 64), sizes.empty(b, 2, s, 64), sizes.empty(b, 4, s, 64), True
    gm = _attention_graph(q, k, v, enable_gqa=gqa)
    assert launch_from_inductor(gm) == 1 and not _calls(gm, OP)
    assert not sizes.env.guards, sizes.env.guards
    (relu,) = _calls(gm, torch.ops.aten.relu.default)
    out = relu.args[0]  # what the launches wrote: the op's output, laid out as the op's
    with sizes.mode:
        want = torch.ops.inductor_bi.fixed_split_attention(q, k, v, None, False, None, gqa)
    assert tuple(out.meta["val"].shape) == tuple(want.shape) and out.meta["val"].stride() == want.stride()


def test_cpu_graphs_keep_the_custom_op():
    sizes = _Sizes()
    q, k, v = (sizes.empty(3, 8, 5, 64, device="cpu") for _ in range(3))
    gm = _attention_graph(q, k, v)
    assert launch_from_inductor(gm) == 0 and len(_calls(gm, OP)) == 1 and not _calls(gm, LAUNCH)


def test_a_symbolic_head_dim_keeps_the_custom_op(an_h100):
    """The head dim picks the tile and the split length (constexprs): unknown, the op stays."""
    sizes = _Sizes()
    d = sizes.sym("d", 64)
    q, k, v = (sizes.empty(2, 8, 5, d) for _ in range(3))
    gm = _attention_graph(q, k, v)
    assert launch_from_inductor(gm) == 0 and len(_calls(gm, OP)) == 1


def test_a_float_mask_keeps_the_custom_op(an_h100):
    """A float mask's term (mask * log2 e) feeds adds that a contracting compile (Inductor's)
    would fuse into fmas: other bits than the custom op's, so the op stays."""
    sizes = _Sizes()
    q, k, v, _ = _decode(sizes)
    mask = sizes.empty(q.shape[0], 1, 1, k.shape[2], dtype=torch.float16)
    gm = _attention_graph(q, k, v, mask, enable_gqa=True)
    assert launch_from_inductor(gm) == 0 and len(_calls(gm, OP)) == 1


def test_a_possibly_empty_kv_cache_keeps_the_custom_op(an_h100):
    """Whether there is any key to see is decided when tracing; a KV length that may be 0 (an
    unbacked size) cannot be, so the op stays (it decides per call)."""
    sizes = _Sizes()
    n = sizes.env.create_unbacked_symint()
    torch._check(n >= 0)
    q = sizes.empty(2, 8, 1, 64)
    k = v = sizes.empty(2, 8, n, 64)
    gm = _attention_graph(q, k, v)
    assert launch_from_inductor(gm) == 0 and len(_calls(gm, OP)) == 1


def test_the_forward_saves_only_its_inputs_so_training_graphs_launch_it_too():
    """AOT's forward graph of a training step holds the op as an inference graph does; the
    backward reads what the op's autograd saved: q, k, v and the mask, never its output, so
    replacing the forward node by its launches leaves the backward graph's inputs as they were."""
    q, k, v = (torch.randn(1, 2, 3, 16, requires_grad=True) for _ in range(3))
    mask = torch.randn(1, 1, 3, 3, requires_grad=True)
    out = torch.ops.inductor_bi.fixed_split_attention(q, k, v, mask, False, None, False)
    saved = out.grad_fn.saved_tensors
    assert len(saved) == 4 and all(s is x for s, x in zip(saved, (q, k, v, mask)))


inspect_kernels = load_file("tools/diagnose/inspect_kernels.py", "inspect_kernels")

# What Inductor's launcher compiles a kernel it launches with (torch 2.13,
# triton_heuristics.CachingAutotuner._create_compile_options): the config's warps and stages,
# debug as assert_indirect_indexing (on by default), no overflow sanitizer, and no
# enable_fp_fusion, so Triton's default: contraction allowed.
INDUCTOR_COMPILE_OPTIONS = {"debug": True, "sanitize_overflow": False}


def _traced_launches_for_h100(q, k, v, **kwargs):
    """The launches the traced path makes for these meta tensors, recorded for an sm_90 compile."""
    with inspect_kernels.recorded_launches() as calls, inspect_kernels._patched(attention, "tracing_for_inductor", lambda: True):
        attention.fixed_split_attention(q, k, v, **kwargs)
    return calls


def _float_instructions(kernel, args, kwargs, inductor: bool):
    """(PTX float ops with mul / add / sub's .rn dropped, SASS float instruction counts)."""
    from triton.compiler import ASTSource

    signature, constexprs, attrs, options = inspect_kernels.specialization(kernel, args, kwargs)
    if inductor:
        options = {**{k: options[k] for k in ("num_warps", "num_stages")}, **INDUCTOR_COMPILE_OPTIONS}
    else:
        options = {**options, "enable_fp_fusion": False}  # as the custom op launches it
    compiled = inspect_kernels.triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=inspect_kernels.H100, options=options)
    # Contraction off, LLVM writes mul.rn / add.rn (ptxas may not fuse those); on, mul / add.
    ptx = [re.sub(r"^(mul|add|sub)\.rn\.", r"\1.", op) for op in inspect_kernels.float_ops(compiled)]
    cuobjdump = os.path.join(os.path.dirname(inspect_kernels.triton.backends.nvidia.__file__), "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    opcodes = re.findall(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", sass)
    return ptx, collections.Counter(op for op in opcodes if op.split(".")[0] in ("FFMA", "FMUL", "FADD", "HFMA2", "HMUL2", "HADD2"))


def test_inductors_contracting_compile_gives_the_custom_ops_float_instructions():
    """Inductor compiles the kernels it launches with FMA contraction allowed; the custom op with it
    off. For the calls that are launched (contraction_changes_nothing) both compiles run the same
    float instructions for sm_90: LLVM's PTX and ptxas's SASS fuse nothing. A float mask's term
    would be fused (more FFMAs, fewer FMUL + FADD): those calls keep the custom op."""
    q = torch.empty(3, 32, 1, 128, dtype=torch.bfloat16, device="meta")
    kv = torch.empty(3, 8, 2000, 128, dtype=torch.bfloat16, device="meta")
    bool_mask = torch.empty(3, 1, 1, 2000, dtype=torch.bool, device="meta")
    prefill = torch.empty(1, 8, 300, 128, dtype=torch.bfloat16, device="meta")
    launched = [
        *_traced_launches_for_h100(q, kv, kv, attn_mask=bool_mask, enable_gqa=True, path="split"),  # decode: split + merge
        *_traced_launches_for_h100(prefill, prefill, prefill, is_causal=True),  # prefill: sequential
    ]
    assert [kwargs["MODE"] for _, _, kwargs in launched] == [MODE["split"], MODE["merge"], MODE["sequential"]]
    assert attention.contraction_changes_nothing(bool_mask) and attention.contraction_changes_nothing(None)
    for call in launched:
        assert _float_instructions(*call, inductor=True) == _float_instructions(*call, inductor=False), call[2]["MODE"]

    float_mask = torch.empty(3, 1, 1, 2000, dtype=torch.bfloat16, device="meta")
    assert not attention.contraction_changes_nothing(float_mask)
    (call,) = _traced_launches_for_h100(q, kv, kv, attn_mask=float_mask, enable_gqa=True)
    (_, contracted), (_, written) = _float_instructions(*call, inductor=True), _float_instructions(*call, inductor=False)
    assert contracted["FFMA"] > written["FFMA"] and contracted["FADD"] < written["FADD"], (contracted, written)
