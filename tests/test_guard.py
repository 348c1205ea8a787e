"""The strict guard: graphs in, verdicts out; batch statistics refused at the Dynamo graph; where
a refusal says the op came from."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.experimental.proxy_tensor import make_fx

import inductor_bi
from inductor_bi.passes import guard
from inductor_bi.passes._rewrite import user_source_line
from inductor_bi.passes.matmul import rewrite_matmuls
from inductor_bi.passes.reductions import rewrite_reductions
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal
from tests._support import error_chain_text

aten = torch.ops.aten


def _aten_graph(fn, *args) -> torch.fx.GraphModule:
    return make_fx(fn, tracing_mode="fake")(*args)


def _verdicts(gm) -> dict:
    """{aten op name: (verdict, why)} of every node the guard classifies."""
    return {str(n.target): guard.classify(n) for n in gm.graph.nodes if guard.classify(n)}


# ---------------------------------------------------------------------------------------------
# Graph in, verdict out
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduce", [lambda x: x.var(-1), lambda x: x.prod(-1)])
def test_complex_reduction_other_than_sum_is_refused_saying_what_to_do(reduce):
    gm = _aten_graph(reduce, torch.randn(3, 8, dtype=torch.complex64))
    rewrite_reductions(gm)
    (violation,) = guard.find_violations(gm)
    assert "complex" in violation.why and "view_as_real" in violation.why, violation.why
    assert violation.dtype == "torch.complex64"


def test_complex_variance_as_the_refusal_writes_it_is_the_complex_variance():
    z = torch.randn(3, 8, dtype=torch.complex128)
    assert torch.allclose(torch.view_as_real(z).var(1).sum(-1), z.var(1))
    assert torch.allclose(torch.view_as_real(z).var(-2).sum(-1), z.var(-1))


COMPLEX_SUMS = {
    "sum_last": lambda z: z.sum(-1),
    "sum_middle": lambda z: z.sum(1),
    "mean_last": lambda z: z.mean(-1),
    "mean_middle_keepdim": lambda z: z.mean(1, keepdim=True),
    "sum_all_but_rows": lambda z: z.sum((1, 2)),
}


@pytest.mark.parametrize("name", sorted(COMPLEX_SUMS))
def test_complex_sum_and_mean_compile_strict_row_invariant_and_close(name):
    reduce = COMPLEX_SUMS[name]
    torch._dynamo.reset()
    compiled = torch.compile(reduce, backend="batch_invariant", dynamic=True)
    z = torch.randn(5, 6, 7, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    batched, alone, in_three = compiled(z), compiled(z[:1]), compiled(z[:3])
    assert batched.dtype == torch.complex64
    assert torch.equal(batched[:1], alone) and torch.equal(batched[:3], in_three)
    assert_close_to_reference(batched, reduce(z.to(torch.complex128)), dtype=torch.float32)


def test_explain_reports_complex_sum_and_mean_as_rewritten():
    report = inductor_bi.explain(lambda z: (z.sum(-1), z.mean(1)), torch.randn(4, 6, 5, dtype=torch.complex64), device=None)
    rewritten = [r for _, r in report.rewrites if r.dtype == "torch.complex64"]
    assert {r.original for r in rewritten} == {"aten.sum.dim_IntList", "aten.mean.dim"}, report.rewrites
    assert all("view_as_real" in r.replacement for r in rewritten) and not report.violations


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_a_matmul_no_pass_rewrote_is_refused(dtype):
    """A floating or complex mm left on aten runs a library GEMM whose split-K follows the shape."""
    gm = _aten_graph(lambda a, b: a @ b, torch.randn(4, 5, dtype=dtype), torch.randn(5, 3, dtype=dtype))
    (violation,) = guard.find_violations(gm)
    assert violation.op == "aten.mm.default" and "matmul" in violation.why


def test_integer_matmul_is_kept_as_exact():
    gm = _aten_graph(lambda a, b: a @ b, torch.randint(-9, 9, (4, 5)), torch.randint(-9, 9, (5, 3)))
    assert not guard.find_violations(gm)
    assert _verdicts(gm)["aten.mm.default"][0] == "exact"


def test_complex_matmul_is_rewritten_and_passes_the_guard():
    a, b = torch.randn(4, 5, dtype=torch.complex64), torch.randn(5, 3, dtype=torch.complex64)
    gm = _aten_graph(lambda a, b: a @ b, a, b)
    (rewrite,) = rewrite_matmuls(gm)
    assert rewrite.dtype == "torch.complex64" and not guard.find_violations(gm)


def test_complex_alpha_addmm_is_left_to_the_guard():
    """The kernel scales by a real alpha / beta; a complex one is not rewritten, so it is refused."""
    c = [torch.randn(*s, dtype=torch.complex64) for s in ((4, 3), (4, 5), (5, 3))]
    gm = _aten_graph(lambda bias, a, b: torch.addmm(bias, a, b, alpha=1j), *c)
    assert rewrite_matmuls(gm) == []
    (violation,) = guard.find_violations(gm)
    assert violation.op == "aten.addmm.default"


def test_integer_and_bool_reductions_stay_exact():
    gm = _aten_graph(lambda x, m: (x.sum(-1), m.any(-1), m.sum(-1)), torch.randint(0, 9, (3, 8)), torch.rand(3, 8) > 0.5)
    assert not guard.find_violations(gm)
    assert {verdict for verdict, _ in _verdicts(gm).values()} == {"exact"}


# ---------------------------------------------------------------------------------------------
# Where an op came from
# ---------------------------------------------------------------------------------------------


def _node_with(meta: dict, graph: torch.fx.Graph | None = None) -> torch.fx.Node:
    graph = graph if graph is not None else torch.fx.Graph()
    node = graph.placeholder(f"x{len(graph.nodes)}")
    node.meta.update(meta)
    return node


def test_source_of_a_node_without_user_frame_names_its_module():
    conv = ("L['self'].layers[0]._modules['conv']", nn.Conv2d)
    assert user_source_line(_node_with({"nn_module_stack": {"a": ("L['self']", nn.Sequential), "b": conv}})) == (
        "module `layers[0].conv` (Conv2d): no line of your code in its stack trace"
    )
    backward = _node_with({"fwd_nn_module_stack": {"b": ("L['fn'].0", "torch.nn.modules.batchnorm.BatchNorm1d")}})
    assert "module `0` (BatchNorm1d)" in user_source_line(backward)


def test_source_of_a_node_without_stack_trace_is_its_forward_ops():
    graph = torch.fx.Graph()
    traced = _node_with({"seq_nr": 7, "stack_trace": '  File "model.py", line 3, in forward\n    return x.cumsum(-1)\n'}, graph)
    bare = _node_with({"seq_nr": 7}, graph)
    assert user_source_line(bare) == user_source_line(traced) == 'File "model.py", line 3, in forward return x.cumsum(-1)'


# ---------------------------------------------------------------------------------------------
# Batch statistics: refused at the Dynamo graph (precise: instance norm is not batch norm)
# ---------------------------------------------------------------------------------------------


class ConvBN(nn.Module):
    def __init__(self, bn=None):
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.bn = bn if bn is not None else nn.BatchNorm1d(6)

    def forward(self, x):
        return self.bn(self.proj(x))  # the refusal must name this line


def test_training_batch_norm_is_refused_naming_module_and_line():
    torch._dynamo.reset()
    with pytest.raises(Exception) as info:
        torch.compile(ConvBN(), backend="batch_invariant", dynamic=True)(torch.randn(5, 6))
    text = error_chain_text(info.value)
    assert "BatchInvarianceError" in text and "batch_norm" in text
    assert "`bn` (BatchNorm1d)" in text and "return self.bn(self.proj(x))" in text and "test_guard.py" in text
    assert "model.eval()" in text  # what to do


def test_batch_norm_in_sequential_names_its_module_not_an_unknown_line():
    torch._dynamo.reset()
    with pytest.raises(Exception) as info:
        torch.compile(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), backend="batch_invariant")(torch.randn(3, 4))
    text = error_chain_text(info.value)
    assert "`1` (BatchNorm1d)" in text and "<unknown source line>" not in text


def test_functional_batch_norm_without_running_stats_is_refused():
    torch._dynamo.reset()
    with pytest.raises(Exception) as info:
        torch.compile(lambda x: F.batch_norm(x, None, None, training=True), backend="batch_invariant")(torch.randn(3, 4, 5))
    assert "F.batch_norm" in error_chain_text(info.value)


def test_eval_batch_norm_without_running_stats_is_still_batch_statistics():
    """track_running_stats=False normalizes with the batch's statistics in eval mode too."""
    torch._dynamo.reset()
    model = ConvBN(nn.BatchNorm1d(6, track_running_stats=False)).eval()
    with pytest.raises(Exception) as info:
        torch.compile(model, backend="batch_invariant")(torch.randn(5, 6))
    assert "track_running_stats" in error_chain_text(info.value)


def test_training_batch_norm_non_strict_warns_and_compiles():
    torch._dynamo.reset()
    model, x = ConvBN(), torch.randn(5, 6)
    reference = copy.deepcopy(model).double()
    with pytest.warns(UserWarning, match="(?s)strict=False.*`bn` \\(BatchNorm1d\\)"):
        out = torch.compile(model, backend="batch_invariant", options={"strict": False})(x)
    assert_close_to_reference(out, reference(x.double()), dtype=torch.float32, tol_scale=10)


@pytest.fixture(scope="module")
def compiled_eval_norms():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU())
    model(torch.randn(8, 3, 5, 5) * 3 + 1)  # running statistics that are not the initial ones
    model.eval()
    return model, torch.compile(model, backend="batch_invariant", dynamic=True)


@given(batch=st.integers(2, 6), data=st.data())
@settings(max_examples=4)
def test_eval_batch_norm_compiles_and_rows_equal_alone(compiled_eval_norms, batch, data):
    model, compiled = compiled_eval_norms
    row = data.draw(st.integers(0, batch - 1), label="row position")
    x = torch.randn(batch, 3, 5, 5)
    with torch.no_grad():
        batched, alone = compiled(x), compiled(x[row : row + 1])
        expected = model.double()(x.double())
        model.float()
    assert_rows_equal(batched[row : row + 1], alone)
    assert_close_to_reference(batched, expected, dtype=torch.float32, tol_scale=10)


@given(batch=st.integers(2, 5), data=st.data())
@settings(max_examples=3)
def test_instance_norm_in_training_is_not_batch_statistics(batch, data):
    """InstanceNorm runs aten's batch_norm on a [1, N * C, ...] view: per-sample statistics. It
    compiles in strict mode, and a sample's output is its own."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 5), nn.InstanceNorm1d(3, affine=True))
    compiled = torch.compile(model, backend="batch_invariant")
    row = data.draw(st.integers(0, batch - 1), label="row position")
    x = torch.randn(batch, 3, 5)
    batched, alone = compiled(x), compiled(x[row : row + 1])
    assert_rows_equal(batched[row : row + 1].detach(), alone.detach())
    assert_close_to_reference(batched.detach(), model.double()(x.double()), dtype=torch.float32, tol_scale=10)


def test_explain_reports_training_batch_norm():
    report = inductor_bi.explain(ConvBN(), torch.randn(5, 6), device=None)
    ops = [v.op for _, v in report.violations]
    assert any("batch_norm" in op for op in ops), ops
    assert report.guard_error and "`bn` (BatchNorm1d)" in report.guard_error


def test_a_convolution_backward_left_is_refused():
    """Its input gradient runs cuDNN / oneDNN like the forward (and its weight gradient too)."""
    x, w, g = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3), torch.randn(2, 4, 4, 4)
    gm = _aten_graph(
        lambda x, w, g: aten.convolution_backward(g, x, w, [4], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, True]),
        x, w, g,
    )
    (violation,) = guard.find_violations(gm)
    assert violation.op == "aten.convolution_backward.default"


# ---------------------------------------------------------------------------------------------
# Library kernels with their own accumulation order: each reaches the final graph whole (none
# is in the decomposition table), so strict mode refuses it, naming it and the user's line.
# ---------------------------------------------------------------------------------------------


def _r(*shape, **kw):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape)), **kw)


REFUSED_FORWARD = {
    # op family: (model, inputs, op the refusal names, a word of what to do)
    "cdist": (lambda x, y: torch.cdist(x, y), (_r(4, 3), _r(5, 3)), "_cdist_forward", "compute_mode"),
    "pdist": (lambda x: F.pdist(x), (_r(4, 3),), "_pdist_forward", "vector_norm"),
    "bilinear": (lambda a, b, w: F.bilinear(a, b, w), (_r(4, 3), _r(4, 5), _r(2, 3, 5)), "_trilinear", "matmul"),
    "addmm_activation": (lambda c, a, b: torch._addmm_activation(c, a, b, use_gelu=True), (_r(3), _r(4, 5), _r(5, 3)), "_addmm_activation", "F.gelu"),
    "segment_reduce": (lambda d, n: torch.segment_reduce(d, "sum", lengths=n), (_r(6, 3), torch.tensor([2, 4])), "segment_reduce", "pad"),
    "int8pack_mm": (
        lambda x, w, s: torch._weight_int8pack_mm(x, w, s),
        (_r(4, 32), torch.randint(-9, 9, (8, 32), dtype=torch.int8), _r(8)),
        "_weight_int8pack_mm",
        "dequantize",
    ),
    "fft_r2c": (lambda x: torch.fft.rfft(x), (_r(3, 8),), "_fft_r2c", "DFT matrix"),
    "fft_c2c": (lambda x: torch.fft.fft(x), (_r(3, 8, dtype=torch.complex64),), "_fft_c2c", "DFT matrix"),
    "fft_c2r": (lambda x: torch.fft.irfft(x), (_r(3, 5, dtype=torch.complex64),), "_fft_c2r", "DFT matrix"),
}


@pytest.mark.parametrize("family", sorted(REFUSED_FORWARD))
def test_library_accumulation_is_refused_naming_op_line_and_fix(family):
    fn, inputs, op, fix = REFUSED_FORWARD[family]
    torch._dynamo.reset()
    with pytest.raises(Exception) as info:
        torch.compile(fn, backend="batch_invariant")(*inputs)
    text = error_chain_text(info.value)
    assert "BatchInvarianceError" in text and f"aten.{op}." in text, text
    assert fix in text and "test_guard.py" in text and "in <lambda>" in text  # what to do; the model's line


REFUSED_BACKWARD = {
    # the forward compiles (decomposed, or pointwise per output); its gradient accumulates with atomics
    "upsample_bilinear": (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), (2, 3, 4, 4), "index_put"),
    "upsample_nearest": (lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), (2, 3, 4), "index_put"),
    "upsample_antialias": (lambda x: F.interpolate(x, size=(2, 2), mode="bilinear", antialias=True), (2, 3, 4, 4), "_upsample_bilinear2d_aa_backward"),
    "grid_sampler_2d": (lambda x, g: F.grid_sample(x, g, align_corners=False), (2, 3, 4, 4), "grid_sampler_2d_backward"),
    "grid_sampler_3d": (lambda x, g: F.grid_sample(x, g, align_corners=False), (2, 3, 3, 3, 3), "grid_sampler_3d_backward"),
}


@pytest.mark.parametrize("family", sorted(REFUSED_BACKWARD))
def test_gradient_with_atomics_is_refused_at_backward_naming_the_forward_line(family):
    fn, shape, op = REFUSED_BACKWARD[family]
    torch._dynamo.reset()
    x = _r(*shape, requires_grad=True)
    grid = (_r(shape[0], *shape[2:-1], 3, len(shape) - 2),) if "grid" in family else ()
    out = torch.compile(fn, backend="batch_invariant")(x, *grid)  # the forward graph compiles
    with pytest.raises(Exception) as info:
        out.sum().backward()
    text = error_chain_text(info.value)
    assert "BatchInvarianceError" in text and f"aten.{op}" in text, text
    assert "test_guard.py" in text and "in <lambda>" in text  # the forward line the gradient comes from


def test_a_refused_library_op_compiles_with_a_warning_when_not_strict():
    torch._dynamo.reset()
    x = _r(3, 8)
    with pytest.warns(UserWarning, match="(?s)strict=False.*_fft_r2c"):
        out = torch.compile(lambda x: torch.fft.rfft(x), backend="batch_invariant", options={"strict": False})(x)
    assert_close_to_reference(out, torch.fft.rfft(x.double()), dtype=torch.float32)


@pytest.mark.parametrize("reduce", ["max", "min"])
def test_segment_max_and_min_are_kept_as_exact(reduce):
    gm = _aten_graph(lambda d, n: torch.segment_reduce(d, reduce, lengths=n), _r(6, 3), torch.tensor([2, 4]))
    assert not guard.find_violations(gm)
    assert _verdicts(gm)["aten.segment_reduce.default"][0] == "exact"


def test_integer_int_mm_is_kept_as_exact():
    a, b = (torch.randint(-9, 9, (32, 32), dtype=torch.int8) for _ in range(2))
    gm = _aten_graph(torch._int_mm, a, b)
    assert not guard.find_violations(gm)


_W, _Y = _r(2, 3, 5), _r(6, 3)
N_DFT = 8
_DFT = torch.exp(-2j * torch.pi * (torch.outer(torch.arange(N_DFT), torch.arange(N_DFT)) % N_DFT) / N_DFT)
RECIPES = {
    # what the refusals say to write instead, for a row x (and its partner row, for bilinear): (recipe, original op)
    "cdist_mm": (lambda x: torch.cdist(x, _Y, compute_mode="use_mm_for_euclid_dist"), lambda x: torch.cdist(x, _Y.double())),
    "cdist_vector_norm": (
        lambda x: torch.linalg.vector_norm(x.unsqueeze(-2) - _Y.unsqueeze(-3), ord=3, dim=-1),
        lambda x: torch.cdist(x, _Y.double(), p=3),
    ),
    "bilinear_matmul": (  # a row is [x1 | x2]
        lambda x: ((x[:, :3] @ _W.permute(1, 0, 2).flatten(1)).unflatten(-1, (2, 5)) * x[:, 3:].unsqueeze(-2)).sum(-1),
        lambda x: F.bilinear(x[:, :3], x[:, 3:], _W.double()),
    ),
    "dft_matmul": (lambda x: x.to(torch.complex64) @ _DFT, lambda x: torch.fft.fft(x)),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_what_a_refusal_says_to_write_compiles_strict_and_is_row_invariant(recipe):
    fn, original = RECIPES[recipe]
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="batch_invariant", dynamic=True)
    x = _r(5, {"dft_matmul": N_DFT, "bilinear_matmul": 8}.get(recipe, 3))
    with torch.no_grad():
        batched, alone = compiled(x), compiled(x[:1])
    assert_rows_equal(batched[:1], alone)
    assert_close_to_reference(batched, original(x.double()), dtype=torch.float32, tol_scale=10)
