"""Convolutions lowered to the invariant matmul (passes/convolution.py): conv1d / 2d / 3d and
transposed, forward and backward, strict mode.

The Hypothesis tests run the backend's decompositions and passes through aot_autograd and then
run the rewritten aten graphs as they are (no Inductor codegen, which would cost seconds per
drawn shape in the interpreter): the lowering's own arithmetic, every matmul on
invariant_matmul. The torch.compile tests run the whole backend on a few models.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from functorch.compile import make_boxed_func
from hypothesis import given
from hypothesis import strategies as st
from torch._functorch.aot_autograd import aot_function

import inductor_bi
import inductor_bi.backend as backend
from inductor_bi.passes import check_graph, rewrite_graph
from inductor_bi.passes import convolution as conv_pass
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal

aten = torch.ops.aten
INVARIANT_MATMUL = torch.ops.inductor_bi.invariant_matmul.default
CONVOLUTIONS = {aten.convolution.default, aten.convolution_backward.default, aten._convolution.default}
MATMULS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
# Gathers and accumulating writes: their order (or their backward's) is not fixed.
INDEXING = {"index", "_unsafe_index", "gather", "index_put", "_unsafe_index_put", "scatter", "scatter_add", "index_add"}


def _check_lowered(gm: torch.fx.GraphModule) -> None:
    targets = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert not targets & CONVOLUTIONS, "a convolution reached the graph"
    assert not targets & MATMULS, "a matmul was left on aten"
    names = {getattr(t, "__name__", "").split(".")[0] for t in targets}
    assert not names & INDEXING, f"im2col / col2im must be slices, not {names & INDEXING}"


def lowered(fn, graphs: list | None = None, check=_check_lowered):
    """``fn`` through the backend's decompositions, passes and strict guard (aot_autograd), the
    rewritten graphs run as they are."""

    def compiler(gm, _example_inputs):
        rewrite_graph(gm)
        check_graph(gm, strict=True)
        check(gm)
        if graphs is not None:
            graphs.append(gm)
        return make_boxed_func(gm.forward)

    def call(*args):  # aot_function traces once, for the shapes of its first call
        return aot_function(fn, fw_compiler=compiler, bw_compiler=compiler, decompositions=backend.decompositions())(*args)

    return call


@st.composite
def conv_cases(draw):
    """A convolution's arguments: 1-3 spatial dims, kernel / stride / padding / dilation per dim,
    groups, bias, transposed (with output padding)."""
    d = draw(st.sampled_from([1, 2, 3]), label="spatial dims")
    transposed = draw(st.booleans(), label="transposed")
    groups = draw(st.sampled_from([1, 2]), label="groups")
    kernel = [draw(st.integers(1, 3)) for _ in range(d)]
    stride = [draw(st.integers(1, 3)) for _ in range(d)]
    dilation = [draw(st.integers(1, 2)) for _ in range(d)]
    if transposed:  # padding may not exceed what the kernel adds; output padding < max(stride, dilation)
        padding = [draw(st.integers(0, dl * (k - 1))) for k, dl in zip(kernel, dilation)]
        output_padding = [draw(st.integers(0, max(s, dl) - 1)) for s, dl in zip(stride, dilation)]
    else:
        padding = [draw(st.integers(0, 2)) for _ in range(d)]
        output_padding = [0] * d
    # big enough for one output position, small enough for the interpreter
    if transposed:  # (S - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1 >= 1
        least = [max(1, -(-(2 * p - dl * (k - 1) - op) // s) + 1) for k, s, p, dl, op in zip(kernel, stride, padding, dilation, output_padding)]
    else:  # S + 2 * padding >= dilation * (kernel - 1) + 1
        least = [max(1, dl * (k - 1) + 1 - 2 * p) for k, p, dl in zip(kernel, padding, dilation)]
    spatial = [n + draw(st.integers(0, 5 - d)) for n in least]
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    weight = (c_in, c_out // groups, *kernel) if transposed else (c_out, c_in // groups, *kernel)
    bias = draw(st.booleans(), label="bias")
    return dict(spatial=spatial, c_in=c_in, c_out=c_out, weight=weight, bias=bias, stride=stride, padding=padding,
                dilation=dilation, transposed=transposed, output_padding=output_padding, groups=groups)


def _conv(case):
    def conv(x, w, b):
        return aten.convolution(x, w, b, case["stride"], case["padding"], case["dilation"], case["transposed"], case["output_padding"], case["groups"])

    return conv


@given(case=conv_cases(), dtype=st.sampled_from([torch.float32, torch.float16]), batch=st.integers(2, 5), data=st.data())
def test_conv_row_alone_equals_row_in_batch_forward_and_input_gradient(case, dtype, batch, data):
    row = data.draw(st.integers(0, batch - 1), label="row position")
    w = torch.randn(case["weight"], dtype=dtype, requires_grad=True)
    b = torch.randn(case["c_out"], dtype=dtype, requires_grad=True) if case["bias"] else None
    x = torch.randn(batch, case["c_in"], *case["spatial"], dtype=dtype, requires_grad=True)
    conv = lowered(_conv(case))

    y = conv(x, w, b)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, w] + ([b] if b is not None else []), gy)
    x_row = x.detach()[row : row + 1].requires_grad_()
    y_row = conv(x_row, w, b)
    (gx_row,) = torch.autograd.grad(y_row, [x_row], gy[row : row + 1])
    assert_rows_equal(y[row : row + 1], y_row, "output row")
    assert_rows_equal(grads[0][row : row + 1], gx_row, "input gradient row")

    # accuracy: output and every gradient (the weight's and bias's sum over the batch) vs float64
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_() if b is not None else None
    y64 = _conv(case)(x64, w64, b64)
    grads64 = torch.autograd.grad(y64, [x64, w64] + ([b64] if b is not None else []), gy.double())
    assert_close_to_reference(y, y64, dtype=dtype, tol_scale=4)
    for name, got, want in zip(("input", "weight", "bias"), grads, grads64):
        assert got.shape == want.shape, name
        assert_close_to_reference(got, want, dtype=dtype, tol_scale=4)


def _no_accumulating_put(gm: torch.fx.GraphModule) -> None:
    names = {getattr(n.target, "__name__", "").split(".")[0] for n in gm.graph.nodes if n.op == "call_function"}
    assert not names & {"index_put", "_unsafe_index_put", "replication_pad2d_backward"}, names


@given(pads=st.lists(st.integers(0, 3), min_size=4, max_size=4), size=st.integers(1, 4), batch=st.integers(2, 4), dtype=st.sampled_from([torch.float32, torch.float16]))
def test_replicate_padding_gradient_is_row_invariant_and_exact(pads, size, batch, dtype):
    """Each edge's gradient is its own plus its copies', added in a fixed order."""
    pad = lowered(lambda x: F.pad(x, pads, mode="replicate") * 1.5, check=_no_accumulating_put)
    x = torch.randn(batch, 2, size, size + 1, dtype=dtype, requires_grad=True)
    gy = torch.randn(batch, 2, size + pads[2] + pads[3], size + 1 + pads[0] + pads[1], dtype=dtype)
    (gx,) = torch.autograd.grad(pad(x), [x], gy)
    x_row = x.detach()[1:2].requires_grad_()
    (gx_row,) = torch.autograd.grad(pad(x_row), [x_row], gy[1:2])
    assert_rows_equal(gx[1:2], gx_row, "input gradient row 1")
    x64 = x.detach().double().requires_grad_()
    (gx64,) = torch.autograd.grad(F.pad(x64, pads, mode="replicate") * 1.5, [x64], gy.double())
    assert_close_to_reference(gx, gx64, dtype=dtype)


def test_lowered_output_has_eager_layout():
    """Code after a conv was traced by Dynamo on eager's strides (a .view() included)."""
    x = torch.randn(2, 3, 6, 6)
    w = torch.randn(4, 3, 3, 3)
    for t in (x, x.to(memory_format=torch.channels_last)):
        y = lowered(lambda a, b: F.conv2d(a, b, padding=1))(t, w)
        assert y.stride() == F.conv2d(t, w, padding=1).stride()


def test_patch_embedding_and_1x1_are_one_matmul_over_a_reshape():
    """Kernel == stride (ViT patch embedding, 1x1 conv): no im2col slices, one matmul."""
    graphs = []
    w = torch.randn(8, 3, 4, 4)
    conv = lowered(lambda x, w: F.conv2d(x, w, stride=4), graphs)
    y = conv(torch.randn(2, 3, 10, 9), w)  # rows / columns past the last whole patch are not read
    assert y.shape == (2, 8, 2, 2)
    ((gm,),) = [graphs]
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(INVARIANT_MATMUL) == 1
    assert aten.cat.default not in targets and aten.stack.default not in targets


# ---------------------------------------------------------------------------------------------
# The backend end to end (torch.compile, strict, dynamic batch)
# ---------------------------------------------------------------------------------------------


class ConvNet(nn.Module):
    """conv2d 3x3 'same', then strided grouped dilated, then a linear head."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding="same")
        self.c2 = nn.Conv2d(8, 4, 3, stride=2, padding=2, dilation=2, groups=2)
        self.head = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        x = F.gelu(self.c1(x))
        return self.head(F.gelu(self.c2(x)).flatten(1))


class PatchEmbedding(nn.Module):
    """ViT's: a conv with kernel == stride, flattened to tokens, plus position embeddings."""

    def __init__(self, patch=4, dim=16):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(4, dim))

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos


class SpeechFrontEnd(nn.Module):
    """Whisper-style conv1d front end with its GELUs (on the CPU their erf must not run vectorized
    for some rows and scalar for others), and a transposed conv back up (an upsampler)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 6, 3, padding="same")
        self.c2 = nn.Conv1d(6, 6, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose1d(6, 4, 4, stride=2, padding=1, groups=2)

    def forward(self, x):
        return self.up(F.gelu(self.c2(F.gelu(self.c1(x)))))


@pytest.mark.parametrize(
    "make, shape, dynamic",
    # dynamic=True: image sizes symbolic too (Inductor's CPU codegen of the 3x3 net then takes a minute)
    [(ConvNet, (3, 8, 8), None), (PatchEmbedding, (3, 8, 8), True)],
    ids=["convnet", "vit_patch_embedding"],
)
def test_vision_model_compiles_strict_and_rows_are_invariant(graphs, make, shape, dynamic):
    torch._dynamo.reset()
    model = make()
    compiled = torch.compile(model, backend="batch_invariant", dynamic=dynamic)
    x = torch.randn(5, *shape)
    torch._dynamo.mark_dynamic(x, 0)  # a dynamic batch
    with torch.no_grad():
        full = compiled(x)
        for row in (0, 3):
            assert_rows_equal(full[row : row + 1], compiled(x[row : row + 1]), f"row {row}")
        assert_rows_equal(full[1:3], compiled(x[1:3]), "rows 1..2")
        assert_close_to_reference(full, model.double()(x.double()), dtype=torch.float32, tol_scale=10)
    for gm, _ in graphs:
        _check_lowered(gm)


def test_training_through_convs_gives_invariant_input_gradients_close_to_float64(graphs):
    torch._dynamo.reset()
    model = SpeechFrontEnd()
    reference = SpeechFrontEnd().double()
    reference.load_state_dict(model.state_dict())
    compiled = torch.compile(model, backend="batch_invariant")

    def run(m, x, gy):
        x = x.detach().requires_grad_()
        torch._dynamo.mark_dynamic(x, 0)  # a dynamic batch of fixed-length (padded) features, as Whisper's
        y = m(x)
        y.backward(gy)
        return y.detach(), x.grad

    x = torch.randn(4, 4, 10)
    gy = torch.randn(4, 4, 10)
    y, gx = run(compiled, x, gy)
    param_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    y64, gx64 = run(reference, x.double(), gy.double())
    assert_close_to_reference(y, y64, dtype=torch.float32, tol_scale=10)
    assert_close_to_reference(gx, gx64, dtype=torch.float32, tol_scale=10)
    for n, p in reference.named_parameters():
        assert_close_to_reference(param_grads[n], p.grad, dtype=torch.float32, tol_scale=10)
    _, gx_row = run(compiled, x[2:3], gy[2:3])
    assert_rows_equal(gx[2:3], gx_row, "input gradient row 2")
    kinds = {n.meta.get("partitioner_tag") for gm, _ in graphs for n in gm.graph.nodes if n.target is INVARIANT_MATMUL}
    assert kinds >= {"is_forward", "is_backward"}
    for gm, _ in graphs:
        _check_lowered(gm)


class PaddingModes(nn.Module):
    """nn.Conv's padding modes: F.pad before a convolution with no padding of its own."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(2, 2, 3, padding=2, padding_mode=m) for m in ("reflect", "circular", "replicate"))

    def forward(self, x):
        return sum(conv(x) for conv in self.convs)


def test_padding_modes_compile_strict_forward_and_backward(graphs):
    torch._dynamo.reset()
    model = PaddingModes()
    compiled = torch.compile(model, backend="batch_invariant")
    x = torch.randn(3, 2, 5)
    gy = torch.randn(3, 2, 7)
    x_grad = x.clone().requires_grad_()
    y = compiled(x_grad)
    y.backward(gy)
    x64 = x.double().requires_grad_()
    y64 = model.double()(x64)
    y64.backward(gy.double())
    assert_close_to_reference(y, y64, dtype=torch.float32, tol_scale=10)
    assert_close_to_reference(x_grad.grad, x64.grad, dtype=torch.float32, tol_scale=10)
    # the replicate pad's gradient is order-fixed pointwise adds (aten's CUDA kernel uses atomics)
    targets = {n.target for gm, _ in graphs for n in gm.graph.nodes}
    assert aten.replication_pad1d_backward.default not in targets and len(graphs) == 2


def test_complex_conv_runs_as_real_convolutions_row_invariant():
    """F.conv1d of complex tensors: aten splits it into real convolutions, each lowered."""
    x = torch.randn(3, 2, 6, dtype=torch.complex64)
    w = torch.randn(3, 2, 3, dtype=torch.complex64)
    conv = lowered(F.conv1d)
    y = conv(x, w)
    assert_rows_equal(y[1:2], conv(x[1:2], w), "row 1")
    assert_close_to_reference(torch.view_as_real(y), torch.view_as_real(F.conv1d(x.to(torch.complex128), w.to(torch.complex128))), dtype=torch.float32)


def test_complex_aten_convolution_is_refused_saying_what_to_do():
    torch._dynamo.reset()
    x = torch.randn(2, 2, 6, dtype=torch.complex64)
    w = torch.randn(3, 2, 3, dtype=torch.complex64)
    with pytest.raises(Exception, match="(?s)BatchInvarianceError.*aten.convolution.*real and imaginary parts"):
        torch.compile(lambda x, w: torch.convolution(x, w, None, [1], [0], [1], False, [0], 1), backend="batch_invariant")(x, w)


def test_decomposition_table_has_the_convolutions_and_pickles_by_reference():
    table = backend.decompositions()
    assert table[aten.convolution.default] is conv_pass.convolution
    assert table[aten.convolution_backward.default] is conv_pass.convolution_backward
    assert pickle.loads(pickle.dumps(table)) == table


def test_explain_reports_convolutions_as_lowered():
    model = SpeechFrontEnd()
    rep = inductor_bi.explain(model, torch.randn(2, 4, 10))
    originals = [r.original for _, r in rep.rewrites]
    assert originals.count("aten.convolution.default") == 3
    assert originals.count("aten.convolution_backward.default") == 3
    assert not rep.violations
    text = rep.to_text()
    assert "im2col" in text and "col2im" in text
