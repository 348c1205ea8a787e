"""Scans (kernels/scan.py and the custom ops over it): cumsum, cumprod, logcumsumexp.

On CPU through Triton's interpreter (the block is the small interpreter block, so rows of a
few dozen elements carry a prefix across blocks); on CUDA too when there is one. Checked: a row's
bits alone == inside any batch at any position (Hypothesis), a prefix's bits == the same positions
of a longer row, accuracy against float64, aten's dtype rules, edge cases (length 0 / 1, 0-dim,
non-contiguous and unaligned inputs, inf / nan), bad inputs, and the ops' gradients.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import inductor_bi  # noqa: F401  (registers torch.ops.inductor_bi)
from inductor_bi.kernels import scan
from inductor_bi.kernels.scan import invariant_cumprod, invariant_cumsum, invariant_logcumsumexp, invariant_scan
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal

bi = torch.ops.inductor_bi
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
OPS = ["cumsum", "cumprod", "logcumsumexp"]
ATEN = {"cumsum": torch.cumsum, "cumprod": torch.cumprod, "logcumsumexp": torch.logcumsumexp}
_SAME_WIDTH_INT = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}


def _bits(t):
    """The raw bits: NaN == NaN and -0.0 != 0.0 (invariance is about bits, not values)."""
    return t.contiguous().view(_SAME_WIDTH_INT[t.dtype])


def _data(op, shape, dtype, seed, device="cpu"):
    """Inputs each op is meant for: cumprod's factors near +-1 (products neither vanish nor blow
    up over a long row), logcumsumexp's spread over +-8."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if op == "cumprod":
        x = torch.sign(x) * (1 + 0.02 * x.abs())
    elif op == "logcumsumexp":
        x = 4 * x
    return x.to(dtype).to(device)


def test_interpreter_block_makes_test_rows_span_several_blocks():
    # The lengths below (up to 70) must cross block boundaries for the carried prefix to be tested.
    assert scan.scan_block(torch.device("cpu")) * 3 < 70
    assert scan.scan_block(torch.device("cuda")) == scan.SCAN_BLOCK_CUDA


@st.composite
def placements(draw, device):
    """(op, dtype, length up to 4 blocks, scanned dim, batch, position of the row in it, seed)."""
    return (
        draw(st.sampled_from(OPS)),
        draw(st.sampled_from([torch.float32, torch.float16, torch.float64])),
        draw(st.integers(1, 4 * scan.scan_block(torch.device(device)) + 6)),
        draw(st.sampled_from([-1, 1])),  # along the last dim, or along a middle dim
        draw(st.integers(2, 9)),
        draw(st.integers(0, 8)),
        draw(st.integers(0, 2**31 - 1)),
    )


@pytest.mark.parametrize("device", DEVICES)
@given(data=st.data())
def test_row_alone_equals_row_in_any_batch_at_any_position(device, data):
    op, dtype, length, dim, batch, pos, seed = data.draw(placements(device))
    pos = pos % batch
    inner = (length, 3) if dim == 1 else (3, length)
    others = _data(op, (batch, *inner), dtype, seed, device)
    row = _data(op, (1, *inner), dtype, seed + 1, device)
    batched = torch.cat([others[:pos], row, others[pos + 1 :]])
    alone = invariant_scan(row, dim, op)
    assert_rows_equal(_bits(invariant_scan(batched, dim, op)[pos : pos + 1]), _bits(alone), f"{op} row at {pos} of {batch}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_prefix_has_the_bits_of_the_same_positions_in_a_longer_row(device, op, dtype):
    """out[j] depends on x[:j + 1] only: a short row (a prefill) and a long one (the same row later
    in a decode) agree, across block boundaries too."""
    block = scan.scan_block(torch.device(device))
    length = block * 2 + 5
    x = _data(op, (2, length), dtype, 7, device)
    full = invariant_scan(x, 1, op)
    for cut in (1, block - 1, block, block + 1, length - 1):
        assert_rows_equal(_bits(invariant_scan(x[:, :cut], 1, op)), _bits(full[:, :cut]), f"{op} prefix of {cut}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled kernels: CUDA only")
def test_one_compiled_binary_serves_every_row_length_and_row_count():
    """Triton never specializes on the length: no length or row count gets its own variant (its
    own register layout, so its own combine tree)."""
    from inductor_bi.kernels._launch import binaries_compiled

    invariant_cumsum(torch.randn(1, 3, device="cuda"), 1)
    before = binaries_compiled(scan._row_scan_kernel)
    for rows, length in ((1, 1), (3, 16), (64, 17), (5, 1024), (2, 1031), (7, 4096)):
        invariant_cumsum(torch.randn(rows, length, device="cuda"), 1)
    assert binaries_compiled(scan._row_scan_kernel) == before


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_close_to_float64(device, op, dtype):
    x = _data(op, (5, 150), dtype, 3, device)
    out = invariant_scan(x, 1, op)
    assert out.dtype == dtype and out.shape == x.shape
    # A scan's error grows with the position (each output is one more combine); the dtype's
    # tolerance times a few covers L = 150 with fp32 accumulation.
    assert_close_to_reference(out, ATEN[op](x.double().cpu(), 1), dtype=dtype, tol_scale=4)


@pytest.mark.parametrize("op", OPS)
def test_fp16_accumulates_in_fp32_like_aten_on_cpu(op):
    # 300 fp16 steps: an fp16 running value would drift far beyond fp16's own rounding of the result.
    x = _data(op, (2, 300), torch.float16, 11)
    ref = ATEN[op](x.double(), 1)
    ours, eager = invariant_scan(x, 1, op), ATEN[op](x, 1)
    assert_close_to_reference(ours, ref, dtype=torch.float16)
    assert_close_to_reference(eager, ref, dtype=torch.float16)  # eager CPU: an fp32 accumulator too


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "x_dtype, dtype",
    [
        (torch.int64, torch.float32),  # an integer mask scanned as floats (HF position ids)
        (torch.bool, torch.float16),
        (torch.float16, torch.float32),
        (torch.float32, torch.float16),  # aten converts x first, then scans in fp16's accumulator
        (torch.float32, torch.float64),
        (torch.float32, None),
    ],
)
@pytest.mark.parametrize("op", ["cumsum", "cumprod"])
def test_dtype_argument_converts_first_as_aten(device, op, x_dtype, dtype):
    x = (_data(op, (3, 40), torch.float32, 5, device) * (3 if op == "cumsum" else 1)).to(x_dtype)
    out = invariant_scan(x, 1, op, dtype)
    want = ATEN[op](x, 1, dtype=dtype)
    assert out.dtype == want.dtype and out.shape == want.shape
    assert torch.equal(_bits(out), _bits(invariant_scan(x.to(want.dtype), 1, op)))
    assert_close_to_reference(out, ATEN[op](x.double(), 1), dtype=want.dtype, tol_scale=4)


def test_integer_counts_are_exact_whatever_the_order():
    # OPT's position ids: cumsum of a float mask of ones and zeros is exact in any order.
    mask = torch.ones(4, 100)
    mask[1, 60:] = 0
    mask[2, :7] = 0
    assert torch.equal(invariant_cumsum(mask, 1), torch.cumsum(mask, 1))


@pytest.mark.parametrize("op", OPS)
def test_edge_shapes_match_aten(op):
    cases = [
        torch.randn(3, 0),  # length 0
        torch.randn(0, 5),  # no rows
        torch.randn(4, 1),  # length 1: the element itself
        torch.tensor(0.7),  # 0-dim: dim 0 / -1, as aten
        torch.randn(2, 3, 5),
    ]
    for x in cases:
        for dim in ([0, -1] if x.dim() == 0 else range(-x.dim(), x.dim())):
            out, want = invariant_scan(x, dim, op), ATEN[op](x, dim)
            assert out.shape == want.shape and out.dtype == want.dtype and out.is_contiguous()
            if want.numel() and (x.dim() == 0 or x.shape[dim] == 1):
                assert torch.equal(_bits(out), _bits(want))  # one element: no arithmetic
            else:
                torch.testing.assert_close(out, want)


@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_and_unaligned_inputs_give_the_contiguous_bits(op):
    x = _data(op, (6, 41), torch.float32, 9)
    want = invariant_scan(x, 1, op)
    transposed = x.t().contiguous().t()  # same values, column-major
    offset = torch.cat([torch.zeros(1), x.reshape(-1)])[1:].view(6, 41)  # 4 bytes off alignment
    assert offset.data_ptr() % 16 != 0
    strided = torch.stack([x, torch.zeros_like(x)], -1)[..., 0]  # every other element
    for view in (transposed, offset, strided):
        assert torch.equal(view, x)
        assert torch.equal(_bits(invariant_scan(view, 1, op)), _bits(want))
    assert torch.equal(_bits(invariant_scan(x.t(), 0, op)), _bits(want.t()))


def test_infinities_and_nans_follow_aten():
    inf, nan = float("inf"), float("nan")
    rows = {
        "cumsum": [1.0, inf, 2.0, -inf, 3.0] + [1.0] * 20,  # inf + -inf = nan, and nan stays
        "cumprod": [2.0, 0.0, 3.0, inf, 1.0] + [1.0] * 20,  # 0 * inf = nan
        "logcumsumexp": [-inf, -inf, 1.0, inf, 2.0, nan, 3.0] + [0.5] * 20,
    }
    for op, values in rows.items():
        x = torch.tensor([values, [-inf] * len(values), [0.0] * len(values)])
        out, want = invariant_scan(x, 1, op), ATEN[op](x, 1)
        assert torch.equal(torch.isnan(out), torch.isnan(want)), op
        assert torch.equal(torch.isinf(out) & (out > 0), torch.isinf(want) & (want > 0)), op
        assert torch.equal(torch.isinf(out) & (out < 0), torch.isinf(want) & (want < 0)), op
        finite = torch.isfinite(want)
        torch.testing.assert_close(out[finite], want[finite])


def test_logcumsumexp_keeps_tiny_increments():
    # log(1 + u) for u far below fp32's epsilon must not round to 0: log1p's job.
    x = torch.tensor([[0.0, -20.0, -25.0, -30.0] * 5])
    assert_close_to_reference(invariant_logcumsumexp(x, 1) - x[:, :1], torch.logcumsumexp(x.double(), 1), dtype=torch.float32)


def test_sign_of_zero_is_carried_across_blocks_as_aten():
    x = torch.ones(40)
    x[0], x[1] = -1.0, 0.0  # -0.0 from position 1 on, in every block
    assert torch.equal(_bits(invariant_cumprod(x, 0)), _bits(torch.cumprod(x, 0)))


def test_integer_and_complex_inputs_raise_saying_what_to_do():
    with pytest.raises(TypeError, match="stay on aten"):
        invariant_cumsum(torch.arange(5), 0)
    with pytest.raises(TypeError, match="not supported"):
        invariant_cumsum(torch.randn(5, dtype=torch.complex64), 0)
    with pytest.raises(IndexError, match="out of range"):
        invariant_cumsum(torch.randn(2, 5), 2)
    with pytest.raises(ValueError, match="one of"):
        invariant_scan(torch.randn(5), 0, "cummax")


# ---------------------------------------------------------------------------------------------
# The custom ops: fake implementations and gradients
# ---------------------------------------------------------------------------------------------


def _op_call(op, x, dim):
    return getattr(bi, f"invariant_{op}")(x, dim) if op == "logcumsumexp" else getattr(bi, f"invariant_{op}")(x, dim, None)


@pytest.mark.parametrize("op", OPS)
def test_custom_op_fake_matches_the_real_output(op):
    x = torch.randn(3, 7, 5).transpose(0, 2)
    torch.library.opcheck(getattr(bi, f"invariant_{op}"), (x, 1) if op == "logcumsumexp" else (x, 1, None))
    if op != "logcumsumexp":
        torch.library.opcheck(getattr(bi, f"invariant_{op}"), (torch.arange(6).view(2, 3), -1, torch.float32))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("zeros", [False, True])
def test_custom_op_gradients_match_float64(op, zeros):
    x = _data(op, (4, 37), torch.float32, 13)
    if zeros:  # cumprod's gradient has its own formula at and after a row's first zero
        x[0, 5] = x[1, 0] = x[1, 20] = x[2, 36] = 0.0
    g = torch.randn(4, 37)
    leaf = x.clone().requires_grad_(True)
    (_op_call(op, leaf, 1) * g).sum().backward()
    ref = x.double().requires_grad_(True)
    (ATEN[op](ref, 1) * g.double()).sum().backward()
    assert_close_to_reference(leaf.grad, ref.grad, dtype=torch.float32, tol_scale=10)


@pytest.mark.parametrize("op", OPS)
def test_custom_op_gradient_rows_are_batch_invariant(op):
    x = _data(op, (5, 37), torch.float32, 17)
    g = torch.randn(5, 37)

    def grad_of(rows):
        leaf = x[rows].clone().requires_grad_(True)
        (_op_call(op, leaf, 1) * g[rows]).sum().backward()
        return leaf.grad

    full = grad_of(slice(0, 5))
    assert_rows_equal(_bits(full[3:4]), _bits(grad_of(slice(3, 4))), f"{op} gradient, row 3 alone")
    assert_rows_equal(_bits(full[1:3]), _bits(grad_of(slice(1, 3))), f"{op} gradient, rows 1-2")
