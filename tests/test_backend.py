"""The backend end to end on CPU: entry point, pinned Inductor config, graph rewrite, invariance."""

import copy

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import inductor_bi
import inductor_bi.backend as backend
import inductor_bi.hooks as hooks
from inductor_bi.inductor_config import pinned_config
from inductor_bi.testing import assert_close_to_reference
from tests._support import check_row_alone_and_accuracy

aten = torch.ops.aten
MATMUL_TARGETS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
INVARIANT_MATMUL = torch.ops.inductor_bi.invariant_matmul.default


class MLP(nn.Module):
    """Linear layers plus a batched matmul (torch.matmul on 3-D tensors lowers to bmm)."""

    def __init__(self, d=48, h=96):
        super().__init__()
        self.up = nn.Linear(d, h)
        self.down = nn.Linear(h, d, bias=False)
        self.mix = nn.Parameter(torch.randn(4, d // 4, d // 4) / 4)

    def forward(self, x):
        y = self.down(torch.nn.functional.gelu(self.up(x)))
        b = x.shape[0]
        z = torch.matmul(y.view(b, 4, 1, -1).transpose(0, 1), self.mix.unsqueeze(1))  # bmm
        return z.transpose(0, 1).reshape(b, -1) + y


def test_backend_resolves_by_name_after_install():
    assert torch._dynamo.lookup_backend("batch_invariant") is inductor_bi.batch_invariant


def test_inductor_knobs_are_pinned_during_compilation(monkeypatch):
    seen = {}

    rewrite_graph = hooks.rewrite_graph

    def snapshot(gm):
        cfg = torch._inductor.config
        for name in pinned_config():
            obj = cfg
            for part in name.split("."):
                obj = getattr(obj, part)
            seen[name] = obj
        return rewrite_graph(gm)

    monkeypatch.setattr(hooks, "rewrite_graph", snapshot)
    torch._dynamo.reset()
    torch.compile(nn.Linear(4, 4), backend="batch_invariant")(torch.randn(2, 4))
    assert seen == pinned_config()
    assert seen["split_reductions"] is False and seen["max_autotune"] is False


def test_mode_cannot_switch_autotuning_back_on():
    with pytest.warns(UserWarning, match="stay off"):
        patches = backend.config_patches("max-autotune")
    assert patches["max_autotune"] is False and patches["coordinate_descent_tuning"] is False
    assert backend.config_patches("reduce-overhead")["triton.cudagraphs"] is True


def test_unknown_option_is_an_error():
    with pytest.raises(ValueError, match="unknown option"):
        inductor_bi.Options.parse({"stirct": False})


@pytest.mark.parametrize("value", [0, 1, "no", None])
def test_strict_must_be_a_bool_not_a_truthy_value(value):
    """strict=0 would otherwise be silently non-strict (and "no" silently strict)."""
    with pytest.raises(TypeError, match=f"'strict' must be True or False, got {value!r}"):
        inductor_bi.Options.parse({"strict": value})
    torch._dynamo.reset()
    with pytest.raises(Exception, match="must be True or False"):
        torch.compile(lambda x: x.cumsum(-1), backend="batch_invariant", options={"strict": value})(torch.randn(2, 3))
    assert inductor_bi.Options.parse({"strict": False}).strict is False


def test_every_matmul_becomes_invariant_matmul(graphs):
    torch._dynamo.reset()
    model = MLP()
    with torch.no_grad():
        torch.compile(model, backend="batch_invariant")(torch.randn(6, 48))
    (gm, rewrites), = graphs
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert not MATMUL_TARGETS & set(targets)
    assert targets.count(INVARIANT_MATMUL) == 3  # up (addmm), down (mm), mix (bmm)
    assert {r.original for r in rewrites} == {"aten.addmm.default", "aten.mm.default", "aten.bmm.default"}
    assert all("test_backend.py" in r.source for r in rewrites), [r.source for r in rewrites]


@pytest.fixture(scope="module")
def compiled_mlp():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = MLP()
    return copy.deepcopy(model).double(), torch.compile(model, backend="batch_invariant", dynamic=True)


@given(batch=st.integers(1, 40), data=st.data())
@settings(max_examples=8)
def test_row_equals_alone_for_any_batch(compiled_mlp, batch, data):
    reference, compiled = compiled_mlp
    row = data.draw(st.integers(0, batch - 1), label="row position")
    x = torch.randn(batch, 48)
    check_row_alone_and_accuracy(compiled, reference, x, row)


def test_one_compilation_serves_all_batch_sizes(graphs):
    torch._dynamo.reset()
    compiled = torch.compile(MLP(), backend="batch_invariant", dynamic=True)
    with torch.no_grad():
        for batch in (2, 3, 7, 16, 33, 64):
            compiled(torch.randn(batch, 48))
    assert len(graphs) == 1


def test_training_graph_compiles_with_invariant_backward(graphs):
    torch._dynamo.reset()
    model = MLP()
    x = torch.randn(8, 48)
    compiled = torch.compile(model, backend="batch_invariant")
    compiled(x).square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).square().sum().backward()
    for got, want in zip(grads, [p.grad for p in model.parameters()]):
        assert_close_to_reference(got, want, dtype=torch.float32, tol_scale=10)
    assert len(graphs) == 2  # forward and backward
    backward_gm, backward_rewrites = graphs[1]
    assert backward_rewrites and not MATMUL_TARGETS & {n.target for n in backward_gm.graph.nodes}


def test_integer_matmul_stays_exact_on_aten(graphs):
    torch._dynamo.reset()
    a = torch.randint(-50, 50, (5, 7))
    b = torch.randint(-50, 50, (7, 3))
    out = torch.compile(torch.mm, backend="batch_invariant")(a, b)
    assert torch.equal(out, a @ b)
    assert graphs[0][1] == []


class ResidualNorm(nn.Module):
    """x + r, then the hand-written RMSNorm the graph knobs rewrite, then a linear layer."""

    def __init__(self, d=32):
        super().__init__()
        self.w = nn.Parameter(torch.rand(d) + 0.5)
        self.out = nn.Linear(d, d)

    def forward(self, x, r):
        h = x + r
        return self.out(h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * self.w)


def test_compile_cache_never_serves_a_graph_rewritten_under_other_configs(graphs):
    """A graph knob read by a pass (REDUCTION_FUSE_RMS_NORM) takes part in the cache key:
    the same model compiled again with the knob flipped is rewritten again, not served from
    AOTAutograd's / Inductor's cache filled by the first compilation (which Inductor keys on the
    unrewritten graph). The third compilation, knob on again, is the first one's: served from the
    cache (not rewritten again), so the cache stays useful."""
    from torch._inductor.utils import fresh_cache

    from inductor_bi.kernels import knobs

    model, x, r = ResidualNorm(), torch.randn(3, 32), torch.randn(3, 32)
    outs = []
    with torch.compiler.config.patch(force_disable_caches=False), fresh_cache(), torch.no_grad():
        for fused in (True, False, True):
            torch._dynamo.reset()
            with knobs.overridden(REDUCTION_FUSE_RMS_NORM=fused, REDUCTION_FOLD_RESIDUAL_ADD=fused):
                outs.append(torch.compile(model, backend="batch_invariant")(x, r))
    rewritten = [sorted({rw.original.split(":")[0] for rw in rewrites}) for _gm, rewrites in graphs]
    # 1: the knob-off compilation was served the knob-on graph; 3: the caches never hit
    assert len(rewritten) == 2, rewritten
    assert "RMSNorm" in rewritten[0] and "RMSNorm" not in rewritten[1]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_rewrite_identity_follows_configs_and_keeps_a_users_pass():
    from torch._inductor.custom_graph_pass import CustomGraphPass

    from inductor_bi.cache_identity import RewriteIdentity
    from inductor_bi.kernels import knobs, reduction_table

    base = RewriteIdentity(None, inductor_bi.Options()).uuid()
    assert RewriteIdentity(None, inductor_bi.Options()).uuid() == base
    with knobs.overridden(REDUCTION_FUSE_RMS_NORM=not reduction_table.REDUCTION_FUSE_RMS_NORM):
        assert RewriteIdentity(None, inductor_bi.Options()).uuid() != base
    assert RewriteIdentity(None, inductor_bi.Options(strict=False)).uuid() != base

    seen = []

    class UserPass(CustomGraphPass):
        def __call__(self, graph):
            seen.append(graph)

        def uuid(self):
            return "user-pass-v1"

    identity = RewriteIdentity(UserPass(), inductor_bi.Options())
    assert identity.uuid() not in ("", base)
    identity("graph")
    assert seen == ["graph"]
    # a plain callable cannot be hashed: Inductor must keep bypassing its caches for it
    assert RewriteIdentity(lambda graph: None, inductor_bi.Options()).uuid() == ""


def test_graph_partition_is_off_where_it_would_promote_cpu_scalar_inputs():
    """Under CUDA graphs Inductor moves a graph's CPU scalar inputs to the GPU as one concatenated
    tensor: an int64 and a float64 scalar come back float64 (an index that fails to lower). Such a
    graph keeps its dtypes without the partition; graphs with one scalar dtype keep the partition."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    graphed = backend.config_patches("reduce-overhead")
    with FakeTensorMode():  # a CUDA input without a GPU
        on_gpu = torch.empty(2, 3, device="cuda")
    scale, position = torch.tensor(1.5, dtype=torch.float64), torch.tensor(7)
    assert backend.partition_safe(graphed, [scale, position, on_gpu])["graph_partition"] is False
    assert "graph_partition" not in backend.partition_safe(graphed, [scale, on_gpu])  # one scalar dtype
    assert "graph_partition" not in backend.partition_safe(graphed, [scale, position, torch.ones(2)])  # no GPU input
    assert "graph_partition" not in backend.partition_safe(backend.config_patches(None), [scale, position, on_gpu])


def test_without_the_partition_cpu_scalars_keep_their_dtypes_under_cuda_graphs():
    """The mechanism, on fake CUDA tensors: Inductor's constructor mover concatenates an int64
    position and a float64 scale into one tensor (promoted to float64) under reduce-overhead's
    config; under ``partition_safe``'s it leaves them as they are."""
    from torch._inductor.fx_passes.post_grad import move_constructors_to_gpu
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    aten = torch.ops.aten

    def f(x, scale, position):
        index = aten.add.Tensor(aten.arange.start_step(0, 2, device=x.device), position)
        return aten.mul.Tensor(aten.index.Tensor(x, [index]), scale)

    def cats_after_the_mover(patches):
        with FakeTensorMode(allow_non_fake_inputs=True):
            inputs = (torch.empty(8, device="cuda"), torch.empty((), dtype=torch.float64), torch.empty((), dtype=torch.int64))
            gm = make_fx(f, tracing_mode="fake")(*inputs)
            with torch._inductor.config.patch(patches):
                move_constructors_to_gpu(gm.graph)
        return [n for n in gm.graph.nodes if n.target is aten.cat.default], inputs

    graphed = {k: v for k, v in backend.config_patches("reduce-overhead").items() if k in ("triton.cudagraphs", "graph_partition")}
    graphed.setdefault("graph_partition", True)  # the default of the torch versions that have it
    cats, inputs = cats_after_the_mover(graphed)
    assert cats, "Inductor's mover no longer concatenates CPU scalars: partition_safe may be obsolete"
    cats, _ = cats_after_the_mover({**graphed, **{k: v for k, v in backend.partition_safe(graphed, inputs).items() if k == "graph_partition"}})
    assert not cats
