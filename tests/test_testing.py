"""inductor_bi.testing's helpers: every dtype they accept is compared in full (complex parts,
integers, NaN and infinities, shapes), and anything they cannot compare gets a clear error."""

import math

import pytest
import torch

from inductor_bi.testing import (
    RELATIVE_TOLERANCE,
    assert_batch_invariant,
    assert_close_to_reference,
    assert_rows_equal,
    relative_error,
)

NAN, INF = math.nan, math.inf


# ---------------------------------------------------------------------------------------------
# relative_error / assert_close_to_reference
# ---------------------------------------------------------------------------------------------


def test_relative_error_sees_the_imaginary_part():
    c = torch.randn(6, dtype=torch.complex64)
    ref = c.to(torch.complex128)
    assert relative_error(c + 1j, ref) == pytest.approx(math.sqrt(6) / ref.norm().item(), rel=1e-6)
    assert relative_error(c.conj(), ref) > 0  # a conjugate differs in the imaginary part only
    assert relative_error(c, ref) < 1e-7
    with pytest.raises(AssertionError, match="relative error"):
        assert_close_to_reference(c + 1j, ref)


def test_relative_error_of_a_real_output_against_a_complex_reference_counts_the_imaginary_part():
    ref = torch.tensor([1 + 1j, 2 - 1j], dtype=torch.complex128)
    assert relative_error(ref.real, ref) == pytest.approx(math.sqrt(2) / ref.norm().item())


def test_complex_outputs_get_the_tolerance_of_their_real_dtype():
    ref = torch.randn(50, dtype=torch.complex128)
    assert_close_to_reference(ref.to(torch.complex64), ref)  # float32's tolerance
    noisy = ref * (1 + 1e-3)
    with pytest.raises(AssertionError, match="complex64"):
        assert_close_to_reference(noisy.to(torch.complex64), ref)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.int8, torch.uint8, torch.bool])
def test_integer_and_bool_outputs_are_compared_exactly(dtype):
    ref = torch.tensor([0, 1, 1, 0, 1]).to(dtype)
    assert_close_to_reference(ref.clone(), ref)
    assert_close_to_reference(ref.clone(), ref.double())  # a float64 reference of exact values
    wrong = ref.clone()
    wrong[2] = 0
    with pytest.raises(AssertionError, match=f"1 of 5 elements differ.*{dtype}.*exactly"):
        assert_close_to_reference(wrong, ref)
    with pytest.raises(AssertionError, match="exactly"):
        assert_close_to_reference(ref, ref.double() + 0.25)  # no tolerance hides a fraction


def test_a_dtype_without_a_tolerance_gets_a_clear_error():
    x = torch.randn(4).to(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="no relative tolerance for torch.float8_e4m3fn.*dtype="):
        assert_close_to_reference(x, x.double())
    assert_close_to_reference(x, x.double(), dtype=torch.bfloat16)  # the fix the message names


def test_nan_and_infinities_in_the_same_places_as_the_reference_are_not_errors():
    ref = torch.tensor([1.0, NAN, INF, -INF, 2.0], dtype=torch.float64)
    assert relative_error(ref.float(), ref) == 0.0
    assert_close_to_reference(ref.float(), ref)


@pytest.mark.parametrize(
    "out",
    [
        [1.0, NAN, INF, -INF, NAN],  # NaN where the reference is finite
        [1.0, 3.0, INF, -INF, 2.0],  # a number where the reference is NaN
        [1.0, NAN, -INF, -INF, 2.0],  # an infinity of the wrong sign
        [1.0, NAN, INF, -INF, INF],  # an overflow where the reference is finite
        [1.0, NAN, 1e30, -INF, 2.0],  # finite where the reference is infinite
    ],
)
def test_nan_or_infinity_where_the_reference_has_none_is_an_infinite_error(out):
    ref = torch.tensor([1.0, NAN, INF, -INF, 2.0], dtype=torch.float64)
    assert relative_error(torch.tensor(out), ref) == INF
    with pytest.raises(AssertionError, match="relative error inf"):
        assert_close_to_reference(torch.tensor(out), ref)


def test_complex_infinities_and_nans_are_compared_like_real_ones():
    ref = torch.tensor([1 + 1j, complex(INF, 0), complex(NAN, 0)], dtype=torch.complex128)
    assert relative_error(ref.to(torch.complex64), ref) == 0.0
    assert relative_error(torch.tensor([1 + 1j, complex(0, INF), complex(NAN, 0)]), ref) == INF


def test_relative_error_of_tiny_and_huge_values_neither_underflows_nor_overflows():
    """The norms are taken after scaling by the largest magnitude: squares of 1e-200 or 1e200
    would underflow to 0 or overflow to inf in float64."""
    for magnitude in (1e-200, 1e200):
        ref = torch.tensor([3.0, 4.0], dtype=torch.float64) * magnitude
        assert relative_error(ref * (1 + 1e-3), ref) == pytest.approx(1e-3)


def test_empty_outputs_have_no_error():
    assert relative_error(torch.empty(0, 3), torch.empty(0, 3, dtype=torch.float64)) == 0.0
    assert_close_to_reference(torch.empty(0, dtype=torch.int32), torch.empty(0, dtype=torch.int64))


def test_a_shape_that_only_broadcasts_to_the_reference_is_an_error():
    """[3] against [3, 1] broadcasts to [3, 3]: a wrong-shaped output must not pass."""
    with pytest.raises(ValueError, match=r"shape \(3,\).*\(3, 1\)"):
        relative_error(torch.ones(3), torch.ones(3, 1, dtype=torch.float64))
    with pytest.raises(AssertionError, match="shape"):
        assert_close_to_reference(torch.ones(3), torch.ones(3, 1, dtype=torch.float64))


def test_tolerances_cover_every_floating_dtype_the_kernels_take():
    assert set(RELATIVE_TOLERANCE) == {torch.float64, torch.float32, torch.float16, torch.bfloat16}


# ---------------------------------------------------------------------------------------------
# assert_rows_equal / assert_batch_invariant: bitwise
# ---------------------------------------------------------------------------------------------


def test_rows_with_nan_in_the_same_places_are_equal():
    row = torch.tensor([1.0, NAN, -INF])
    assert_rows_equal(row, row.clone())
    assert_rows_equal(torch.tensor([complex(NAN, 1.0)]), torch.tensor([complex(NAN, 1.0)]))


def test_rows_differing_in_the_sign_of_zero_are_not_bitwise_equal():
    with pytest.raises(AssertionError, match="1 of 2 elements differ"):
        assert_rows_equal(torch.tensor([0.0, 1.0]), torch.tensor([-0.0, 1.0]))


def test_rows_differing_in_the_imaginary_part_report_its_size():
    c = torch.tensor([1 + 2j, 3 + 4j], dtype=torch.complex64)
    with pytest.raises(AssertionError, match=r"1 of 2 elements differ \(max abs diff 5\.000e-01\)"):
        assert_rows_equal(c, c + torch.tensor([0.5j, 0]))


def test_rows_of_different_dtypes_are_an_error_not_a_comparison():
    with pytest.raises(AssertionError, match="dtypes differ"):
        assert_rows_equal(torch.ones(2), torch.ones(2, dtype=torch.float64))


def test_integer_and_bool_rows_compare_exactly():
    assert_rows_equal(torch.tensor([True, False]), torch.tensor([True, False]))
    with pytest.raises(AssertionError, match="1 of 3 elements differ"):
        assert_rows_equal(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4]))


def test_a_model_whose_rows_are_nan_is_batch_invariant():
    """sqrt of a negative row is NaN wherever the row is computed: invariant, not a mismatch."""
    x = torch.tensor([[-1.0, 4.0], [9.0, -2.0], [1.0, 1.0]])
    assert_batch_invariant(torch.sqrt, x, diagnose=False)


def test_a_model_that_changes_a_complex_row_with_the_batch_is_caught():
    def leaks_the_batch(x):
        return x + 1j * x.shape[0]  # the imaginary part follows the batch size

    x = torch.randn(4, 3, dtype=torch.complex64)
    with pytest.raises(AssertionError, match="not batch-invariant"):
        assert_batch_invariant(leaks_the_batch, x, diagnose=False)
