"""The matmul as Inductor's template (lowerings/matmul_template.py): the pointwise ops after it are
fused into its kernel, and a row keeps the bits of the custom op's launches, at every batch size
and whether its matmul ran in the template (many rows) or split-K (few rows)."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch._inductor.utils import run_and_get_code

from inductor_bi.testing import assert_rows_equal

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


class _GatedMlp(torch.nn.Module):
    def __init__(self, hidden: int, inner: int, bias: bool):
        super().__init__()
        self.gate = torch.nn.Linear(hidden, inner, bias=bias)
        self.up = torch.nn.Linear(hidden, inner, bias=bias)
        self.down = torch.nn.Linear(inner, hidden, bias=bias)

    def forward(self, x):
        return x + self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_template_fuses_the_epilogue_and_keeps_the_custom_op_bits(dtype, bias):
    torch.manual_seed(0)
    model = _GatedMlp(512, 1536, bias).to("cuda", dtype)
    x = torch.randn(4096, 512, device="cuda", dtype=dtype)
    torch._dynamo.reset()
    templated = torch.compile(model, backend="batch_invariant", dynamic=True)
    dispatched = torch.compile(model, backend="batch_invariant", dynamic=True, options={"inductor_launches": False})
    with torch.no_grad():
        full, codes = run_and_get_code(templated, x)
        code = "\n".join(codes)
        # a template kernel (Inductor names them triton_tem_*) running our K loop
        assert "triton_tem_" in code and "_pointer_k_steps" in code, "the matmul did not take the template"
        assert "silu" in code.lower() or "sigmoid" in code.lower()
        assert_rows_equal(full, dispatched(x), "template vs custom op launches")
        for rows in (1, 3, 77, 1000):
            assert_rows_equal(templated(x[:rows]), full[:rows], f"{rows} rows vs 4096")


@functools.cache
def _compiled_mlp(dtype: torch.dtype, bias: bool):
    """A gated MLP compiled once (dynamic batch) with its 4096-row output, shared by the examples."""
    torch.manual_seed(0)
    model = _GatedMlp(512, 1536, bias).to("cuda", dtype)
    x = torch.randn(4096, 512, device="cuda", dtype=dtype)
    compiled = torch.compile(model, backend="batch_invariant", dynamic=True)
    with torch.no_grad():
        return compiled, x, compiled(x)


@given(
    dtype=st.sampled_from([torch.bfloat16, torch.float16, torch.float32]), bias=st.booleans(),
    rows=st.integers(2, 4096), data=st.data(),
)  # fmt: skip
def test_row_of_any_batch_equals_the_row_of_the_full_batch(dtype, bias, rows, data):
    """Any row count (template at many rows, split-K launches at few, one compiled graph) and any
    position in the batch: the row has the bits it has in the 4096-row call."""
    compiled, x, full = _compiled_mlp(dtype, bias)
    start = data.draw(st.integers(0, 4096 - rows), label="first row")
    row = data.draw(st.integers(0, rows - 1), label="row position")
    with torch.no_grad():
        got = compiled(x[start : start + rows])
    assert_rows_equal(got[row : row + 1], full[start + row : start + row + 1], f"row {row} of {rows}")


def test_template_kernel_holds_the_fused_ops():
    """The generated template kernel computes the SiLU-times-up product itself (one kernel fewer
    per matmul than the custom-op launches)."""
    torch.manual_seed(0)
    model = _GatedMlp(512, 1536, False).to("cuda", torch.bfloat16)
    x = torch.randn(4096, 512, device="cuda", dtype=torch.bfloat16)
    torch._dynamo.reset()
    with torch.no_grad():
        _, codes = run_and_get_code(torch.compile(model, backend="batch_invariant", dynamic=True), x)
    kernels = [block for block in "\n".join(codes).split("async_compile.triton(") if "triton_tem_" in block and "_pointer_k_steps" in block]
    assert any("sigmoid" in k or "silu" in k for k in kernels), "no template kernel computes the fused SiLU"


class _Conv1DGelu(torch.nn.Module):
    """GPT-2's MLP input: addmm with a row-major weight, then the tanh GELU, which Inductor fuses
    into the template's epilogue when the matmul takes the template."""

    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(hidden, inner) * hidden**-0.5)
        self.bias = torch.nn.Parameter(torch.randn(inner) * 0.1)

    def forward(self, x):
        y = torch.addmm(self.bias, x.view(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)
        return 0.5 * y * (1.0 + torch.tanh(0.7978845608 * (y + 0.044715 * torch.pow(y, 3.0))))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_fused_activation_reads_the_stored_bits_at_every_batch_size(dtype):
    """The fused GELU reads the matmul's value rounded to the output dtype, as the unfused GELU
    reads it from memory: a batch of 1 (its own graph) and 3 give row 0 the bits of a batch of 8,
    and the template's graph gives the custom ops' bits. Inductor computes bf16 / fp16 in fp32, so
    only a store-type cast in the epilogue rounds (GPT-2's MLP has this shape)."""
    torch.manual_seed(0)
    model = _Conv1DGelu(1024, 4096).to("cuda", dtype)
    x = torch.randn(8, 40, 1024, device="cuda", dtype=dtype)
    torch._dynamo.reset()
    templated = torch.compile(model, backend="batch_invariant", dynamic=True)
    dispatched = torch.compile(model, backend="batch_invariant", dynamic=True, options={"inductor_launches": False})
    with torch.no_grad():
        full, codes = run_and_get_code(templated, x)
        assert "triton_tem_" in "\n".join(codes), "the matmul did not take the template"
        assert_rows_equal(full, dispatched(x), "template vs custom op launches")
        for batch in (1, 3):
            assert_rows_equal(templated(x[:batch])[:1], full[:1], f"row 0 alone in a batch of {batch} vs of 8")
