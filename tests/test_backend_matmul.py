"""The matmul pass by dtype: complex matmuls through the invariant kernel, integer / bool ones as eager."""

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import inductor_bi  # noqa: F401  (registers the backend)
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal

aten = torch.ops.aten
MATMUL_TARGETS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
INVARIANT_MATMUL = torch.ops.inductor_bi.invariant_matmul.default


def _complex(*shape, dtype=torch.complex64):
    return torch.randn(*shape, dtype=dtype)


def _assert_close_complex(out, ref, dtype, tol_scale=10):
    """Real and imaginary parts against the complex128 reference (each at the real dtype's tolerance)."""
    assert out.is_complex(), out.dtype
    assert_close_to_reference(torch.view_as_real(out), torch.view_as_real(ref.to(torch.complex128)), dtype=dtype, tol_scale=tol_scale)


class ComplexLinear(nn.Module):
    """A complex linear layer (addmm) and a complex batched matmul (bmm)."""

    def __init__(self, d=24, h=20, dtype=torch.complex64, bias=True):
        super().__init__()
        self.lin = nn.Linear(d, h, bias=bias, dtype=dtype)
        self.mix = nn.Parameter(_complex(2, h // 2, h // 2, dtype=dtype) / 4)

    def forward(self, x):
        y = self.lin(x)
        b = x.shape[0]
        z = torch.matmul(y.view(b, 2, -1).transpose(0, 1), self.mix)  # bmm
        return z.transpose(0, 1).reshape(b, -1) + y


@pytest.fixture(scope="module")
def compiled_complex():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = ComplexLinear()
    reference = ComplexLinear(dtype=torch.complex128)
    reference.load_state_dict({k: v.to(torch.complex128) for k, v in model.state_dict().items()})
    return reference, torch.compile(model, backend="batch_invariant", dynamic=True)


@given(batch=st.integers(2, 9), data=st.data())
@settings(max_examples=6)
def test_complex_matmul_rows_equal_alone_for_any_batch(compiled_complex, batch, data):
    reference, compiled = compiled_complex
    row = data.draw(st.integers(0, batch - 1), label="row position")
    x = _complex(batch, 24)
    with torch.no_grad():
        batched = compiled(x)
        alone = compiled(x[row : row + 1])
        again = compiled(torch.cat([x[row : row + 1], _complex(4, 24)]))
        expected = reference(x.to(torch.complex128))
    assert_rows_equal(torch.view_as_real(batched[row : row + 1]), torch.view_as_real(alone))
    assert_rows_equal(torch.view_as_real(again[:1]), torch.view_as_real(alone), "row 0 of a batch of 5")
    _assert_close_complex(batched, expected, torch.float32)


def test_every_complex_matmul_becomes_invariant_matmul(graphs):
    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(ComplexLinear(), backend="batch_invariant")(_complex(5, 24))
    (gm, rewrites), = graphs
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert not MATMUL_TARGETS & set(targets)
    assert targets.count(INVARIANT_MATMUL) == 2  # lin (addmm), mix (bmm)
    assert {r.dtype for r in rewrites if r.replacement == str(INVARIANT_MATMUL)} == {"torch.complex64"}
    assert all("K'" in r.details["K"] and r.details["complex"] for r in rewrites), [r.details for r in rewrites]


def test_complex_training_gradients_match_complex128():
    """Without a bias: a complex bias's gradient is a complex sum, refused by the guard (test_guard.py)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = ComplexLinear(bias=False)
    reference = ComplexLinear(dtype=torch.complex128, bias=False)
    reference.load_state_dict({k: v.to(torch.complex128) for k, v in model.state_dict().items()})
    x = _complex(6, 24)
    torch.compile(model, backend="batch_invariant")(x).abs().square().sum().backward()
    reference(x.to(torch.complex128)).abs().square().sum().backward()
    for (name, got), want in zip(model.named_parameters(), reference.parameters()):
        _assert_close_complex(got.grad, want.grad, torch.float32, tol_scale=20)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_invariant_matmul_op_on_complex_matches_reference_and_its_rows(dtype):
    real = dtype.to_real()
    a, b, bias = _complex(7, 40, dtype=dtype), _complex(40, 9, dtype=dtype), _complex(9, dtype=dtype)
    out = torch.ops.inductor_bi.invariant_matmul(a, b, bias, 0.5, 2.0)
    ref = 2.0 * (a.to(torch.complex128) @ b.to(torch.complex128)) + 0.5 * bias.to(torch.complex128)
    _assert_close_complex(out, ref, real)
    alone = torch.ops.inductor_bi.invariant_matmul(a[3:4], b, bias, 0.5, 2.0)
    assert_rows_equal(torch.view_as_real(out[3:4]), torch.view_as_real(alone))


def test_invariant_matmul_op_complex_gradients_are_conjugated():
    """Eager autograd through the custom op: dL/da = grad @ b^H (as aten.mm's formula)."""
    a = _complex(3, 5, dtype=torch.complex128).requires_grad_()
    b = _complex(5, 4, dtype=torch.complex128).requires_grad_()
    grad = _complex(3, 4, dtype=torch.complex128)
    ga, gb = torch.autograd.grad(torch.ops.inductor_bi.invariant_matmul(a, b, None, 1.0, 1.0), (a, b), grad)
    want_a, want_b = torch.autograd.grad(a @ b, (a, b), grad)
    _assert_close_complex(ga, want_a, torch.float64)
    _assert_close_complex(gb, want_b, torch.float64)


def test_integer_matmul_stays_exact_on_aten(graphs):
    torch._dynamo.reset()
    a, b = torch.randint(-50, 50, (2, 5, 7)), torch.randint(-50, 50, (2, 7, 3))
    out = torch.compile(torch.bmm, backend="batch_invariant")(a, b)
    assert torch.equal(out, torch.bmm(a, b))
    assert graphs[0][1] == []


@pytest.mark.parametrize("op", ["mm", "matmul", "linear"])
def test_bool_matmul_fails_as_eager_does_with_a_hint(op):
    """Eager PyTorch has no bool matmul; the compiled call fails with eager's reason and what to do
    (not with Inductor's "Only Tensors of floating point and complex dtype can require gradients")."""
    fn = {
        "mm": lambda a, b: torch.mm(a, b),
        "matmul": lambda a, b: a @ b,
        "linear": lambda a, b: torch.nn.functional.linear(a, b.T),
    }[op]
    a, b = torch.rand(4, 5) > 0.5, torch.rand(5, 3) > 0.5
    with pytest.raises(RuntimeError) as eager:
        fn(a, b)
    torch._dynamo.reset()
    with pytest.raises(Exception) as compiled:
        torch.compile(fn, backend="batch_invariant")(a, b)
    text = str(compiled.value)
    assert str(eager.value) in text, text
    assert "integer dtype" in text and "require gradients" not in text
    assert "test_backend_matmul.py" in text  # the user's line
