"""The matmul as Inductor's template (lowerings/matmul_template.py): the pointwise ops after it are
fused into its kernel, and a row keeps the bits of the custom op's launches, at every batch size
and whether its matmul ran in the template (many rows) or split-K (few rows)."""

from __future__ import annotations

import pytest
import torch
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
