"""Row reductions (sum, mean, var_mean, softmax, log_softmax, rms_norm, layer_norm) on CPU through
Triton's interpreter: bitwise row invariance, accuracy against float64, and bad inputs.

The interpreter's BLOCK_R cap is small (reduction_table.REDUCTION_BLOCK_CAP_INTERPRETER), so extents of a
few hundred already run the multi-step accumulation loop.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from inductor_bi.kernels.reduction_table import reduction_config
from inductor_bi.kernels.reduction import (
    invariant_layer_norm,
    invariant_log_softmax,
    invariant_mean,
    invariant_rms_norm_rows,
    invariant_softmax,
    invariant_std_mean,
    invariant_sum,
    invariant_var_mean,
    layer_norm_stats_dtype,
)
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal

aten = torch.ops.aten
DTYPES = [torch.float32, torch.float16]
CPU = torch.device("cpu")
MAX_R = 200  # > 3 x the interpreter cap: several loop steps plus a masked tail


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


def _randn(shape, dtype, seed, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype)


_SAME_WIDTH_INT = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}


def _bits(t):
    """The raw bits, so that NaN == NaN and -0.0 != 0.0: invariance is about bits, not values."""
    return t.view(_SAME_WIDTH_INT[t.dtype])


def assert_row_equals_alone(fn, row, before, after, other):
    """fn(row alone) == fn's output for that row inside two batches of other sizes, bitwise.

    ``row`` is a batch of one along dim 0; the batches put it after ``before`` / ``other`` rows.
    """
    alone = _outputs(fn(row.clone()))
    in_batch = _outputs(fn(torch.cat([before, row, after])))
    in_other = _outputs(fn(torch.cat([other, row])))
    p, q = before.shape[0], other.shape[0]
    for i, (a, b, c) in enumerate(zip(alone, in_batch, in_other)):
        assert_rows_equal(_bits(b[p : p + 1]), _bits(a), f"output {i}, row at {p} of {b.shape[0]}")
        assert_rows_equal(_bits(c[q : q + 1]), _bits(a), f"output {i}, row at {q} of {c.shape[0]}")


@st.composite
def batches(draw, inner_ndim=1, max_r=MAX_R):
    """(dtype, inner shape, row, before, after, other): random companions of random counts."""
    dtype = draw(st.sampled_from(DTYPES))
    if inner_ndim == 1:
        inner = (draw(st.integers(1, max_r)),)
    else:
        a = draw(st.integers(1, 12))
        inner = (a, draw(st.integers(1, max(1, max_r // a))))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1.0, 8.0]))
    shift = draw(st.sampled_from([0.0, 3.0]))  # a shifted row stresses var / layer_norm cancellation
    counts = [draw(st.integers(0, 5)), draw(st.integers(0, 5)), draw(st.integers(1, 6))]
    before, row, after, other = (
        _randn((n, *inner), dtype, seed + i, scale, shift) for i, n in enumerate([counts[0], 1, counts[1], counts[2]])
    )
    return dtype, inner, row, before, after, other


# ---------------------------------------------------------------------------------------------
# Invariance: a row's bits do not depend on its batch
# ---------------------------------------------------------------------------------------------


def test_interpreter_block_cap_makes_test_rows_loop():
    # The invariance tests below only exercise the multi-step loop if MAX_R exceeds BLOCK_R.
    assert reduction_config(MAX_R, torch.float32, CPU).block_r * 3 < MAX_R


@given(batches(inner_ndim=2), st.sampled_from([[1], [2], [-1], [1, 2], [-2, -1]]), st.booleans(), st.booleans())
def test_sum_and_mean_row_equals_alone_for_any_batch(case, dims, keepdim, mean):
    _, _, row, before, after, other = case
    fn = invariant_mean if mean else invariant_sum
    assert_row_equals_alone(lambda x: fn(x, dims, keepdim), row, before, after, other)


@given(batches(inner_ndim=2), st.sampled_from([[-1], [1, 2]]), st.booleans())
def test_sum_of_squares_row_equals_alone_and_equals_the_written_squares(case, dims, mean):
    """``square=True`` (the backend's fold of RMSNorm's x.float().pow(2).mean()) gives a row the
    same bits alone as in any batch, and in the interpreter (no FMA) exactly what summing the
    squares written to memory gives."""
    _, _, row, before, after, other = case
    fn = invariant_mean if mean else invariant_sum
    assert_row_equals_alone(lambda x: fn(x, dims, True, torch.float32, square=True), row, before, after, other)
    x = torch.cat([before, row, after])
    assert torch.equal(fn(x, dims, True, torch.float32, square=True), fn(x.float().pow(2), dims, True))


@given(batches(inner_ndim=2), st.sampled_from([[-1], [1, 2]]), st.booleans())
def test_sum_of_squares_of_a_residual_add_equals_the_stored_add(case, dims, mean):
    """``addend`` (the backend's fold of a residual add into RMSNorm's mean of squares) reduces
    x + addend as the add stores it: bitwise what reducing the stored sum gives, row alone ==
    row in any batch."""
    _, _, row, before, after, other = case
    x = torch.cat([before, row, after])
    addend = torch.randn_like(x)
    fn = invariant_mean if mean else invariant_sum
    folded = fn(x, dims, True, torch.float32, square=True, addend=addend)
    assert torch.equal(folded, fn(x + addend, dims, True, torch.float32, square=True))
    i = before.shape[0]
    assert_rows_equal(folded[i : i + 1], fn(row, dims, True, torch.float32, square=True, addend=addend[i : i + 1]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_residual_add_is_rounded_to_its_dtype_before_squaring(dtype):
    """The add rounds to the 16-bit dtype first (as the graph stores h), then widens: summing the
    unrounded fp32 sum would differ in the last bits. bf16 runs as fp32 in the interpreter, so its
    add is rounded on the host: the same bits."""
    gen = torch.Generator().manual_seed(5)
    x, r = (torch.randn(4, 96, generator=gen).to(dtype) for _ in range(2))
    folded = invariant_mean(x, [-1], False, torch.float32, square=True, addend=r)
    assert torch.equal(folded, invariant_mean(x + r, [-1], False, torch.float32, square=True))
    assert not torch.equal(folded, (x.float() + r.float()).pow(2).mean(-1))


@given(batches(), st.sampled_from([torch.float32, torch.float16]), st.booleans(), st.booleans())
def test_rms_norm_rows_row_equals_alone_and_matches_float64(case, dtype, residual, cast):
    """The fused hand-written RMSNorm (reduction_table.REDUCTION_FUSE_RMS_NORM): a row's output and its
    stored residual sum are the same bits alone as in any batch, h is exactly x + r as the add
    rounds it, and the output is within the dtype's tolerance of float64."""
    _, _, row, before, after, other = case
    r = row.shape[-1]
    weight, eps = 1 + 0.1 * torch.randn(r).to(dtype), 1e-5

    def norm(x):
        x = x.to(dtype)
        addend = x.flip(-1) if residual else None
        return invariant_rms_norm_rows(x, eps, weight, dtype if cast else None, dtype, addend)

    assert_row_equals_alone(norm, row, before, after, other)
    x = torch.cat([before, row, after]).to(dtype)
    out, h = norm(torch.cat([before, row, after]))
    h_ref = x + x.flip(-1) if residual else x
    if residual:
        assert torch.equal(h, h_ref)
    hd = h_ref.double()
    ref = weight.double() * hd * torch.rsqrt(hd.pow(2).mean(-1, keepdim=True) + 1e-5)
    assert out.dtype == dtype
    assert_close_to_reference(out, ref, dtype=dtype)


def test_rms_norm_rows_bf16_rounds_where_the_graph_does():
    """bf16 (the host path in the interpreter): the normalized value is rounded to bf16 before the
    weight multiply, as HF's ``weight * h.to(bf16)`` does; without the cast it is not."""
    gen = torch.Generator().manual_seed(7)
    x, w = torch.randn(4, 80, generator=gen).bfloat16(), (1 + 0.1 * torch.randn(80, generator=gen)).bfloat16()
    eps = 1e-6
    hf = x.float()
    n = hf * torch.rsqrt(invariant_mean(x, [-1], True, torch.float32, square=True) + eps)
    out, _ = invariant_rms_norm_rows(x, eps, w, torch.bfloat16, torch.bfloat16)
    assert torch.equal(out, w * n.to(torch.bfloat16))
    out_f32, _ = invariant_rms_norm_rows(x, eps, w, None, torch.float32)
    assert torch.equal(out_f32, w.float() * n)


def test_rms_norm_rows_rejects_mismatched_operands():
    x, eps = torch.randn(3, 8), 1e-6
    with pytest.raises(RuntimeError, match="weight of shape"):
        invariant_rms_norm_rows(x, eps, torch.ones(4), None, torch.float32)
    with pytest.raises(RuntimeError, match="addend must match"):
        invariant_rms_norm_rows(x, eps, None, None, torch.float32, torch.ones(3, 1))
    with pytest.raises(TypeError, match="fp16 / bf16 / fp32"):
        invariant_rms_norm_rows(x.double(), eps, None, None, torch.float64)
    out, h = invariant_rms_norm_rows(torch.empty(0, 8), eps, None, None, torch.float32)
    assert out.shape == (0, 8) and h.numel() == 0
    with pytest.raises(RuntimeError, match="eps_tensor must be one value on the CPU"):
        invariant_rms_norm_rows(x, 0.0, None, None, torch.float32, None, torch.tensor(1e-6, device="meta"))


def test_rms_norm_rows_eps_tensor_is_the_same_eps():
    """Dynamo passes a float it does not specialize as a 0-dim CPU tensor: read on the host, it
    gives the bits of the same fp32 value passed as a number."""
    x, w = torch.randn(6, 40), 1 + 0.1 * torch.randn(40)
    eps_tensor = torch.tensor(1e-6, dtype=torch.float32)
    by_number, _ = invariant_rms_norm_rows(x, float(eps_tensor), w, None, torch.float32)
    by_tensor, _ = invariant_rms_norm_rows(x, 0.5, w, None, torch.float32, None, eps_tensor)
    assert torch.equal(by_tensor, by_number)
    assert not torch.equal(by_tensor, invariant_rms_norm_rows(x, 0.5, w, None, torch.float32)[0])


def test_residual_addend_must_match_x():
    x = torch.randn(3, 8)
    for bad in (torch.randn(3, 1), torch.randn(3, 8, dtype=torch.float16)):
        with pytest.raises(RuntimeError, match="addend must match x"):
            invariant_sum(x, [-1], False, None, square=True, addend=bad)


@given(batches(inner_ndim=2), st.sampled_from([[1], [-1], [1, 2]]), st.sampled_from([0, 1]), st.booleans())
def test_var_mean_row_equals_alone_for_any_batch(case, dims, correction, keepdim):
    _, _, row, before, after, other = case
    assert_row_equals_alone(lambda x: invariant_var_mean(x, dims, correction, keepdim), row, before, after, other)


@given(batches(), st.booleans())
def test_softmax_row_equals_alone_for_any_batch(case, log):
    _, _, row, before, after, other = case
    fn = invariant_log_softmax if log else invariant_softmax
    assert_row_equals_alone(lambda x: fn(x, -1), row, before, after, other)


@given(batches(inner_ndim=2), st.booleans())
def test_layer_norm_row_equals_alone_for_any_batch(case, affine):
    dtype, inner, row, before, after, other = case
    w, b = (_randn(inner, dtype, 7), _randn(inner, dtype, 8)) if affine else (None, None)
    assert_row_equals_alone(lambda x: invariant_layer_norm(x, 2, w, b), row, before, after, other)


def test_row_bits_do_not_depend_on_input_layout():
    # Transposed, strided, offset (unaligned) views of the same values give the same bits.
    x = _randn((6, 150), torch.float32, 1)
    buf = torch.empty(6 * 150 + 1)
    offset_view = buf[1:].view(6, 150)  # 4 bytes past an aligned pointer
    offset_view.copy_(x)
    transposed = x.t().contiguous().t()
    strided = torch.stack([x, x], dim=-1)[..., 0]
    for fn in (
        lambda t: invariant_sum(t, [-1]),
        lambda t: invariant_var_mean(t, [1]),
        lambda t: invariant_softmax(t, 1),
        lambda t: invariant_layer_norm(t, 1),
    ):
        ref = _outputs(fn(x))
        for view in (offset_view, transposed, strided):
            for a, b in zip(ref, _outputs(fn(view))):
                assert_rows_equal(b, a, "layout")


# ---------------------------------------------------------------------------------------------
# Accuracy against float64
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES + [torch.bfloat16, torch.float64])
def test_sum_mean_var_mean_close_to_float64(dtype):
    x = _randn((3, 5, 70), dtype, 2, shift=2.0)
    x64 = x.double()
    for dims, keepdim in (([-1], False), ([0, 2], True), (None, False), ([], True)):
        assert_close_to_reference(invariant_sum(x, dims, keepdim), x64.sum(dims or None, keepdim), dtype)
        assert_close_to_reference(invariant_mean(x, dims, keepdim), x64.mean(dims or None, keepdim), dtype)
        for correction in (0, 1, 2.5):
            var, mean = invariant_var_mean(x, dims, correction, keepdim)
            ref_var, ref_mean = torch.var_mean(x64, dims or None, correction=correction, keepdim=keepdim)
            assert var.dtype == mean.dtype == dtype
            assert var.shape == ref_var.shape and mean.shape == ref_mean.shape
            assert_close_to_reference(var, ref_var, dtype)
            assert_close_to_reference(mean, ref_mean, dtype)


@pytest.mark.parametrize("dtype", DTYPES + [torch.bfloat16, torch.float64])
def test_sum_of_squares_close_to_float64(dtype):
    x = _randn((5, 300), dtype, 7, scale=4.0)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    ref = x.double().pow(2)
    assert invariant_mean(x, [-1], False, acc, square=True).dtype == acc
    assert_close_to_reference(invariant_mean(x, [-1], False, acc, square=True), ref.mean(-1), dtype=acc)
    assert_close_to_reference(invariant_sum(x, [-1], False, acc, square=True), ref.sum(-1), dtype=acc)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_dtype_argument_sets_output_dtype(dtype):
    x = _randn((4, 90), dtype, 3)
    out = invariant_sum(x, [1], dtype=torch.float64)
    assert out.dtype == torch.float64
    assert torch.allclose(out, x.double().sum(1), rtol=1e-12, atol=1e-12)  # fp64 accumulation: exact-ish
    assert invariant_mean(x, [1], dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("dtype", DTYPES + [torch.bfloat16])
@pytest.mark.parametrize("dim", [-1, 0])
def test_softmax_and_log_softmax_close_to_float64(dtype, dim):
    x = _randn((7, 90), dtype, 4, scale=4.0)  # dim=0: 90 rows of 7
    for fn, ref in ((invariant_softmax, torch.softmax), (invariant_log_softmax, torch.log_softmax)):
        out = fn(x, dim)
        assert out.dtype == dtype and out.shape == x.shape and out.is_contiguous()
        assert_close_to_reference(out, ref(x.double(), dim), dtype)


def test_softmax_half_to_float_returns_fp32():
    x = _randn((3, 40), torch.float16, 5)
    out = invariant_softmax(x, -1, half_to_float=True)
    assert out.dtype == torch.float32
    assert_close_to_reference(out, torch.softmax(x.double(), -1), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES + [torch.bfloat16])
def test_layer_norm_close_to_float64_with_aten_stats_dtypes(dtype):
    x = _randn((4, 2, 90), dtype, 8, scale=3.0, shift=5.0)
    w, b = _randn((2, 90), dtype, 9), _randn((2, 90), dtype, 10)
    for weight, bias in ((None, None), (w, None), (w, b)):
        out, mean, rstd = invariant_layer_norm(x, [2, 90], weight, bias, 1e-5)
        ref = aten.native_layer_norm(
            x.double(), [2, 90], None if weight is None else weight.double(), None if bias is None else bias.double(), 1e-5
        )
        aten_cpu = aten.native_layer_norm(x, [2, 90], weight, bias, 1e-5)
        for got, want, dt in zip((out, mean, rstd), ref, (t.dtype for t in aten_cpu)):
            assert got.dtype == dt and got.shape == want.shape
            assert_close_to_reference(got, want, dtype)
    assert layer_norm_stats_dtype(torch.bfloat16, torch.device("cuda")) == torch.float32


# ---------------------------------------------------------------------------------------------
# Large and tiny magnitudes: nothing overflows or underflows where the dtype holds the result
# ---------------------------------------------------------------------------------------------
# 600 values: past 3 interpreter blocks, and 600 squares of 1e18 sum past fp32's 3.4e38.


@pytest.mark.parametrize("scale", [1e18, 1e19])
def test_var_of_large_values_is_finite_where_float32_holds_it(scale):
    """The squared deviations of values ~1e18 sum past fp32's range, the variance (~1e36) does
    not: eager gives it, and so must the kernel (it gave inf)."""
    x = _randn((3, 600), torch.float32, 1, scale=scale)
    var, mean = invariant_var_mean(x, [-1])
    ref_var, ref_mean = torch.var_mean(x.double(), -1)
    assert torch.isfinite(torch.var(x, -1)).all()  # eager's
    assert_close_to_reference(var, ref_var)
    assert_close_to_reference(mean, ref_mean)


@pytest.mark.parametrize("scale", [1e18, 1e25, 1e36, 1e-25, 1e-32])
@pytest.mark.parametrize("correction", [0, 1])
def test_std_is_finite_and_nonzero_wherever_float32_holds_it(scale, correction):
    """std of values ~1e25 is finite though their variance is not (eager gives it), and std of
    values ~1e-25 is not 0 though their variance underflows: the square root is taken before the
    row's scale is put back. Means of values ~1e36, whose plain sum overflows, stay finite."""
    x = _randn((3, 600), torch.float32, 2, scale=scale)
    std, mean = invariant_std_mean(x, [-1], correction)
    ref_std, ref_mean = torch.std_mean(x.double(), -1, correction=correction)
    assert_close_to_reference(std, ref_std)
    assert_close_to_reference(mean, ref_mean)
    assert (torch.std(x, -1, correction=correction) > 0).all() and torch.isfinite(torch.std(x, -1)).all()  # eager's


@pytest.mark.parametrize("scale", [1e153, 1e200, 1e-200])
def test_float64_rows_are_rescaled_at_float64_magnitudes(scale):
    """The same in float64 (rescaled past 2**256 / below 2**-256): the squares of 600 values ~1e153
    sum past fp64's 1.8e308 while their variance does not; std of values ~1e200 / 1e-200 is
    finite / nonzero while their variance overflows / underflows."""
    x = _randn((3, 600), torch.float64, 6, scale=scale)
    var, mean = invariant_var_mean(x, [-1])
    std, _ = invariant_std_mean(x, [-1])
    # The reference on x * 2**-k (exact), its results scaled back: fp64's own var overflows here.
    k = round(math.log2(scale))
    xs = x * 2.0**-k
    ref_var, ref_mean = torch.var_mean(xs, -1)
    assert_close_to_reference(mean, ref_mean * 2.0**k)
    assert_close_to_reference(std, ref_var.sqrt() * 2.0**k)
    if scale == 1e153:
        assert torch.isfinite(ref_var * 2.0 ** (2 * k)).all() and not torch.isfinite(x.pow(2).sum(-1)).all()
        assert_close_to_reference(var, ref_var * 2.0 ** (2 * k))
    # LayerNorm(x) is LayerNorm(xs) with eps * 2**-2k, which is 0 here beside var ~1e306; the
    # kernels read eps as fp32 (kernels/_launch.float_arg), so the reference takes that value
    eps32 = float(torch.tensor(1e-5, dtype=torch.float32))
    ln_ref = aten.native_layer_norm(xs, [600], None, None, 0.0)[0] if k > 0 else aten.native_layer_norm(x, [600], None, None, eps32)[0]
    assert_close_to_reference(invariant_layer_norm(x, 1)[0], ln_ref)


@pytest.mark.parametrize("scale", [1e18, 1e30])
def test_layer_norm_of_large_values_is_accurate(scale):
    """Rows of values ~1e18 normalize to O(1) outputs; their variance overflowed to inf in the
    kernel, so rstd was 0 and every output the bias (eager fp32 gives the same wrong zeros)."""
    x = _randn((3, 600), torch.float32, 3, scale=scale)
    w, b = _randn((600,), torch.float32, 4), _randn((600,), torch.float32, 5)
    got = invariant_layer_norm(x, 1, w, b, 1e-5)
    want = aten.native_layer_norm(x.double(), [600], w.double(), b.double(), 1e-5)
    for g, r in zip(got, want):
        assert_close_to_reference(g, r)


@given(batches(inner_ndim=2), st.sampled_from([2.0**40, 2.0**-40, 1e18, 1e-25, 1e30]), st.sampled_from([0, 1]))
def test_rows_of_any_magnitude_equal_alone_among_any_companions(case, row_scale, correction):
    """A rescaled row (its max |x| past 2**32 or below 2**-32) and a plain one give their bits
    whatever rows they share a launch with, rescaled or not."""
    _, _, row, before, after, other = case
    row, other = row.float() * row_scale, other.float() * row_scale
    before, after = before.float(), after.float()
    for fn in (
        lambda x: invariant_var_mean(x, [1, 2], correction),
        lambda x: invariant_std_mean(x, [-1], correction, True),
        lambda x: invariant_layer_norm(x, 2),
    ):
        assert_row_equals_alone(fn, row, before, after, other)


@given(batches(inner_ndim=2), st.sampled_from([40, 60, -40, -60]), st.sampled_from([0, 1]))
def test_rescaled_rows_give_the_bits_of_the_plain_ones(case, k, correction):
    """x * 2**k with |k| >= 40 is reduced rescaled, x itself is not. Scaling by a power of two is
    exact, so var, std and mean of x * 2**k are those of x times 2**2k, 2**k, 2**k, bit for bit:
    the rescaling changes no bits where the plain computation neither overflows nor underflows."""
    _, _, row, before, after, _ = case
    x = torch.cat([before, row, after]).float()
    var, mean = invariant_var_mean(x, [-1], correction)
    std, _ = invariant_std_mean(x, [-1], correction)
    var_k, mean_k = invariant_var_mean(x * 2.0**k, [-1], correction)
    std_k, _ = invariant_std_mean(x * 2.0**k, [-1], correction)
    assert_rows_equal(_bits(var_k), _bits(var * 2.0 ** (2 * k)), "var")
    assert_rows_equal(_bits(mean_k), _bits(mean * 2.0**k), "mean")
    assert_rows_equal(_bits(std_k), _bits(std * 2.0**k), "std")
    assert_rows_equal(_bits(std), _bits(var.double().sqrt().float()), "std is the correctly rounded sqrt(var)")


def test_rows_holding_inf_or_nan_give_what_torch_gives():
    x = torch.tensor([[1.0, math.inf, 2.0], [1.0, math.nan, 2.0], [2e38, 2e38, -2e38]])
    var, mean = invariant_var_mean(x, [-1])
    ref_var, ref_mean = torch.var_mean(x.double(), -1)
    assert var[:2].isnan().all() and ref_var[:2].isnan().all()
    assert mean[0] == math.inf and mean[1].isnan()
    assert var[2] == math.inf and ref_var[2] > torch.finfo(torch.float32).max  # past fp32: inf, correctly
    assert_close_to_reference(mean[2:], ref_mean[2:])  # 2e38 + 2e38 overflows unscaled
    std, _ = invariant_std_mean(x, [-1])
    assert std[:2].isnan().all()
    assert_close_to_reference(std[2:], ref_var[2:].sqrt())
    out, _, rstd = invariant_layer_norm(x, 1)
    assert out[:2].isnan().all() and rstd[:2].isnan().all()
    assert_close_to_reference(out[2:], aten.native_layer_norm(x[2:].double(), [3], None, None, 1e-5)[0])


# ---------------------------------------------------------------------------------------------
# Bad and edge inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.uint8])
def test_integer_and_bool_inputs_raise_type_error_pointing_to_aten(dtype):
    x = torch.ones(2, 3, dtype=dtype)
    for call in (
        lambda: invariant_sum(x, [1]),
        lambda: invariant_mean(x, [1]),
        lambda: invariant_var_mean(x, [1]),
        lambda: invariant_softmax(x, 1),
        lambda: invariant_log_softmax(x, 1),
        lambda: invariant_layer_norm(x, 1),
    ):
        with pytest.raises(TypeError, match="exact.*aten"):
            call()


def test_empty_reduced_extent_matches_torch():
    x = torch.randn(3, 0)
    assert torch.equal(invariant_sum(x, [1]), torch.zeros(3))
    assert invariant_mean(x, [1]).isnan().all()
    var, mean = invariant_var_mean(x, [1])
    assert var.isnan().all() and mean.isnan().all() and var.shape == (3,)
    assert invariant_softmax(x, 1).shape == (3, 0)
    assert invariant_log_softmax(x, 1).shape == (3, 0)
    out, mean, rstd = invariant_layer_norm(x, 1)
    ref = aten.native_layer_norm(x, [0], None, None, 1e-5)
    assert out.shape == (3, 0) and torch.equal(mean, ref[1]) and rstd.isnan().all() and rstd.shape == ref[2].shape


def test_zero_rows_give_empty_outputs():
    x = torch.randn(0, 5, 7)
    assert invariant_sum(x, [2]).shape == (0, 5)
    assert invariant_mean(x, [1, 2], keepdim=True).shape == (0, 1, 1)
    assert [t.shape for t in invariant_var_mean(x, [2])] == [(0, 5), (0, 5)]
    assert invariant_softmax(x, -1).shape == (0, 5, 7)
    assert [t.shape for t in invariant_layer_norm(x, 1)] == [(0, 5, 7), (0, 5, 1), (0, 5, 1)]


def test_all_dims_and_scalar_inputs_match_torch():
    x = torch.randn(3, 4)
    for dims in (None, [], [0, 1], [-1, 0]):
        assert invariant_sum(x, dims).shape == ()
        assert torch.allclose(invariant_sum(x, dims), x.sum(), rtol=1e-6)
    assert invariant_sum(x, None, keepdim=True).shape == (1, 1)
    s = torch.tensor(3.0)
    assert torch.equal(invariant_sum(s, [0]), s) and torch.equal(invariant_sum(s, []), s)
    assert torch.equal(invariant_softmax(s, 0), torch.tensor(1.0))
    var, mean = invariant_var_mean(s)
    assert var.isnan() and mean == 3.0


def test_bad_dims_raise_like_torch():
    x = torch.randn(2, 3)
    with pytest.raises(IndexError):
        invariant_sum(x, [2])
    with pytest.raises(RuntimeError, match="multiple times"):
        invariant_sum(x, [1, -1])
    with pytest.raises(RuntimeError, match="does not match"):
        invariant_layer_norm(x, [4])


def test_var_with_correction_at_or_past_extent_is_inf_or_nan_like_torch():
    x = torch.tensor([[1.0, 2.0], [5.0, 5.0]])
    for correction in (2, 3):
        var, _ = invariant_var_mean(x, [1], correction)
        ref, _ = torch.var_mean(x, 1, correction=correction)
        assert var[0].isinf() and ref[0].isinf()
        assert var[1].isnan() and ref[1].isnan()


def test_softmax_handles_infinities_like_torch():
    x = torch.tensor([[0.0, -math.inf, 1.0], [-math.inf, -math.inf, -math.inf], [math.inf, 0.0, 0.0]])
    for fn, ref in ((invariant_softmax, torch.softmax), (invariant_log_softmax, torch.log_softmax)):
        out, want = fn(x, 1), ref(x, 1)
        assert torch.equal(out.isnan(), want.isnan())
        finite = ~want.isnan()
        assert torch.allclose(out[finite], want[finite])


def test_non_contiguous_inputs_give_correct_results():
    x = _randn((20, 6, 9), torch.float32, 11).permute(2, 0, 1)[:, ::2]  # (9, 10, 6), strided
    assert not x.is_contiguous()
    x64 = x.double()
    assert_close_to_reference(invariant_sum(x, [0, 2]), x64.sum((0, 2)), torch.float32)
    assert_close_to_reference(invariant_softmax(x, 1), torch.softmax(x64, 1), torch.float32)
    expanded = torch.randn(1, 40).expand(5, 40)
    assert_close_to_reference(invariant_layer_norm(expanded, 1)[0], aten.native_layer_norm(expanded.double(), [40], None, None, 1e-5)[0])
