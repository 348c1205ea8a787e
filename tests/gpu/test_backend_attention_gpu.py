"""The attention pass's answers to the new user's probe (tests/test_backend_attention.py) on CUDA, in
half precision: zero / negative scales with a causal mask, multi-query attention by broadcast K/V
heads, and a learned float mask's gradient. Invariance is ``torch.equal``; accuracy is against the
float64 reference computed on the CPU."""

from __future__ import annotations

import pytest
import torch

from inductor_bi.testing import assert_close_to_reference, assert_rows_equal
from tests._support import float64_attention
from tests.test_backend_attention import MultiQueryAttention, ScaledAttention, _attend_with_bias, compile_bi, leaves

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

HALF = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("scale", [0.0, -0.5])
def test_zero_and_negative_scales_are_finite_and_invariant_gpu(scale, dtype):
    f = compile_bi(ScaledAttention(scale), dynamic=True)
    q, k, v = (torch.randn(5, 4, 300, 64, device="cuda", dtype=dtype) for _ in range(3))
    out = f(q, k, v)
    want = float64_attention(q.cpu(), k.cpu(), v.cpu(), is_causal=True, scale=scale)
    assert_close_to_reference(out.cpu(), want, dtype=dtype)
    for rows in (slice(3, 4), slice(1, 3)):
        assert_rows_equal(out[rows], f(q[rows], k[rows], v[rows]))


@pytest.mark.parametrize("dtype", HALF)
def test_multi_query_attention_by_broadcast_is_invariant_gpu(dtype):
    module = MultiQueryAttention(d=256, heads=8).to("cuda", dtype)
    f = compile_bi(module, dynamic=True)
    x = torch.randn(6, 200, 256, device="cuda", dtype=dtype)
    with torch.no_grad():
        out = f(x)
        for rows in (slice(0, 1), slice(2, 5)):
            assert_rows_equal(out[rows], f(x[rows]))
        want = module.cpu().double()(x.cpu().double())
    assert_close_to_reference(out.cpu(), want, dtype=dtype, tol_scale=4)


def test_learned_mask_gets_its_gradient_gpu():
    f = compile_bi(_attend_with_bias, dynamic=True)
    gen = torch.Generator().manual_seed(0)
    b, h, lq, lk, d = 4, 4, 70, 333, 64
    q, k, v = (torch.randn(b, h, n, d, generator=gen) for n in (lq, lk, lk))
    bias = torch.randn(b, 1, lq, lk, generator=gen)
    weight = torch.randn(b, h, lq, d, generator=gen)

    def grads(rows, device, dtype, fn=f):
        ins = leaves(*(t[rows].to(device) for t in (q, k, v, bias)), dtype=dtype)
        (fn(*ins) * weight[rows].to(device, dtype)).sum().backward()
        return [t.grad for t in ins]

    batched = grads(slice(0, b), "cuda", torch.float32)
    want = grads(slice(0, b), "cpu", torch.float64, fn=lambda q, k, v, m: float64_attention(q, k, v, attn_mask=m))
    for got, ref in zip(batched, want):
        assert_close_to_reference(got.cpu(), ref, dtype=torch.float32, tol_scale=10)
    alone = grads(slice(2, 3), "cuda", torch.float32)
    for got, one in zip(batched, alone):
        assert_rows_equal(got[2:3], one, "gradient of row 2")
