"""invariant_matmul kernel on CPU (Triton interpreter): accuracy vs float64, bitwise invariance."""

import contextlib

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from inductor_bi.kernels import _arrivals, knobs, matmul, matmul_table
from inductor_bi.kernels._launch import launch
from inductor_bi.kernels.matmul import invariant_matmul
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal

CPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("dtype", CPU_DTYPES)
@pytest.mark.parametrize("m,n,k", [(1, 8, 8), (37, 50, 300), (64, 33, 129)])
def test_matches_float64_reference(dtype, m, n, k):
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    assert_close_to_reference(invariant_matmul(a, b), a.double() @ b.double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_addmm_epilogue_matches_reference(dtype):
    a, b, bias = torch.randn(20, 70, dtype=dtype), torch.randn(70, 24, dtype=dtype), torch.randn(24, dtype=dtype)
    out = invariant_matmul(a, b, bias, beta=0.5, alpha=2.0)
    assert_close_to_reference(out, 2.0 * (a.double() @ b.double()) + 0.5 * bias.double())


def test_beta_zero_ignores_bias_like_aten():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    bias = torch.full((3,), float("nan"))
    assert not invariant_matmul(a, b, bias, beta=0.0).isnan().any()


def test_batched_matches_reference():
    a, b = torch.randn(3, 20, 40), torch.randn(3, 40, 10)
    bias = torch.randn(3, 1, 10)
    assert_close_to_reference(invariant_matmul(a, b, bias), a.double() @ b.double() + bias.double())


@given(
    m=st.integers(1, 80),
    n=st.integers(1, 48),
    k=st.integers(1, 300),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    data=st.data(),
)
def test_row_equals_alone_for_any_batch(m, n, k, dtype, data):
    row = data.draw(st.integers(0, m - 1), label="row position")
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    bias = torch.randn(n, dtype=dtype)
    batched = invariant_matmul(a, b, bias)
    alone = invariant_matmul(a[row : row + 1], b, bias)
    assert_rows_equal(batched[row : row + 1], alone)


@given(m=st.integers(1, 40), k=st.integers(129, 400), data=st.data())
def test_row_is_independent_of_its_companions(m, k, data):
    row = data.draw(st.integers(0, m - 1))
    a, b = torch.randn(m, k), torch.randn(k, 16)
    other = torch.randn(m, k)
    other[row] = a[row]
    assert_rows_equal(invariant_matmul(a, b)[row], invariant_matmul(other, b)[row])


@given(
    m=st.integers(1, 40), k=st.integers(1, 400), alpha=st.sampled_from([1.0, 0.5]), beta=st.sampled_from([1.0, 3.0]),
    merge_in_last=st.booleans(), batches=st.sampled_from([0, 2]),
)
def test_split_k_gives_the_same_bits_as_one_program(m, k, alpha, beta, merge_in_last, batches):
    """Whichever program merges: a separate MERGE launch or the chunk program that finishes last
    (matmul_table.MATMUL_MERGE_IN_LAST_PROGRAM)."""
    lead = (batches,) if batches else ()
    a, b, bias = torch.randn(*lead, m, k), torch.randn(*lead, k, 40), torch.randn(*lead, m, 40)
    one = invariant_matmul(a, b, bias, beta=beta, alpha=alpha, split_k=False)
    with knobs.overridden(MATMUL_MERGE_IN_LAST_PROGRAM=merge_in_last):
        split = invariant_matmul(a, b, bias, beta=beta, alpha=alpha, split_k=True)
    assert_rows_equal(split, one, "split-K vs single program")


def test_merge_in_the_last_program_leaves_every_arrival_counter_at_zero(monkeypatch):
    """The counters are reused by the next split launch on the stream: the merging program must
    put each one back, or the next launch would merge before its partials are written."""
    monkeypatch.setattr(matmul_table, "MATMUL_MERGE_IN_LAST_PROGRAM", True)
    a, b = torch.randn(2, 40, 300), torch.randn(2, 300, 70)  # several tiles, batches and chunks
    with _launch_flags() as flags:
        out = invariant_matmul(a, b, split_k=True)
    assert flags.get("MERGE_IN_LAST") and flags["MODE"] == 1  # one launch, the split one
    assert_rows_equal(out, invariant_matmul(a, b, split_k=False), "merged in the last program")
    block = _arrivals._BLOCKS[a.device]
    assert torch.count_nonzero(block) == 0


def test_split_falls_back_to_a_merge_launch_when_a_stream_has_no_counters(monkeypatch):
    monkeypatch.setattr(matmul_table, "MATMUL_MERGE_IN_LAST_PROGRAM", True)
    monkeypatch.setattr(_arrivals, "SPLIT_ARRIVAL_SET_SIZE", 1)  # more tiles than a set holds
    a, b = torch.randn(40, 300), torch.randn(300, 70)
    with _launch_flags() as flags:
        out = invariant_matmul(a, b, split_k=True)
    assert flags["MODE"] == 2 and not flags.get("MERGE_IN_LAST")  # the last launch was the merge
    assert_rows_equal(out, invariant_matmul(a, b, split_k=False), "merge launch")


@contextlib.contextmanager
def _launch_flags():
    """The compile-time flags of the kernel launches made inside the block (the last wins)."""
    flags = {}

    def spy(kernel, grid, device, *args, **kwargs):
        flags.update({"USE_TMA": False, **kwargs})
        return launch(kernel, grid, device, *args, **kwargs)

    original, matmul.launch = matmul.launch, spy
    try:
        yield flags
    finally:
        matmul.launch = original


@given(
    m=st.integers(1, 40), n=st.integers(1, 70), k=st.sampled_from([8, 64, 136, 200]),
    dtype=st.sampled_from([torch.float32, torch.float16]), weight_kmajor=st.booleans(), split=st.booleans(),
)
def test_tma_descriptor_loads_give_the_same_bits_as_pointer_loads(m, n, k, dtype, weight_kmajor, split):
    a = torch.randn(m, k, dtype=dtype)
    b = torch.randn(n, k, dtype=dtype).t() if weight_kmajor else torch.randn(k, n, dtype=dtype)
    pointer = invariant_matmul(a, b, tma=False, split_k=split)
    with _launch_flags() as flags:
        tma = invariant_matmul(a, b, tma=True, split_k=split)
    rows_fit = (k * a.element_size()) % 16 == 0
    cols_fit = ((k if weight_kmajor else n) * a.element_size()) % 16 == 0
    assert flags["USE_TMA"] == (rows_fit and cols_fit)  # descriptors where TMA allows, else pointers
    assert torch.equal(tma, pointer)


def test_batched_row_equals_alone():
    a, b = torch.randn(5, 30, 64), torch.randn(5, 64, 20)
    assert_rows_equal(invariant_matmul(a, b)[2, 7:8], invariant_matmul(a[2:3, 7:8], b[2:3])[0])


def test_transposed_and_strided_operands_are_correct():
    a = torch.randn(40, 30).t()  # [30, 40], column-major
    b = torch.randn(80, 20)[::2]  # [40, 20], row stride 40
    assert_close_to_reference(invariant_matmul(a, b), a.double() @ b.double())
    assert_rows_equal(invariant_matmul(a, b), invariant_matmul(a.contiguous(), b.contiguous()))


@pytest.mark.parametrize("m,n,k", [(0, 5, 7), (5, 0, 7), (0, 0, 0)])
def test_empty_output(m, n, k):
    assert invariant_matmul(torch.randn(m, k), torch.randn(k, n)).shape == (m, n)


def test_empty_reduction_gives_zeros_plus_bias():
    bias = torch.randn(3)
    for tma in (False, True):  # TMA descriptors cannot describe a 0-size dim: pointer loads run
        a, b = torch.randn(4, 8)[:, :0], torch.randn(8, 4)[:0, :3]  # 0-size views with aligned rows
        out = invariant_matmul(a, b, bias, tma=tma)
        assert torch.equal(out, bias.expand(4, 3))


def test_mismatched_dtypes_raise():
    with pytest.raises(RuntimeError, match="same dtype"):
        invariant_matmul(torch.randn(2, 3), torch.randn(3, 2, dtype=torch.float16))


def test_integer_dtypes_raise_a_clear_error():
    with pytest.raises(TypeError, match="integer matmuls are exact"):
        invariant_matmul(torch.ones(2, 3, dtype=torch.int64), torch.ones(3, 2, dtype=torch.int64))


def test_shape_mismatch_raises():
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        invariant_matmul(torch.randn(2, 3), torch.randn(4, 2))


def test_interpreted_launch_leaves_triton_language_as_it_was():
    """The interpreter switches triton.language to its own builtins for a launch; they must be
    back afterwards. (Through triton 3.6's own helper-call path, tl.core stayed switched after an
    interpreted tl.zeros, and every later GPU compile in the process failed.)"""
    import inspect

    import triton.language as tl

    def builtins():
        return {(pkg.__name__, name): member for pkg in (tl, tl.core) for name, member in inspect.getmembers(pkg) if tl.core.is_builtin(member)}

    before = builtins()
    invariant_matmul(torch.randn(5, 300), torch.randn(300, 40), split_k=True)
    after = builtins()
    assert before.keys() == after.keys()
    assert [key for key in before if after[key] is not before[key]] == []


def test_knobs_overridden_puts_values_back_and_rejects_unknown_names():
    before = matmul_table.MATMUL_MERGE_IN_LAST_PROGRAM
    with pytest.raises(RuntimeError):
        with knobs.overridden(MATMUL_MERGE_IN_LAST_PROGRAM=not before):
            assert matmul_table.MATMUL_MERGE_IN_LAST_PROGRAM is (not before)
            raise RuntimeError("inside")
    assert matmul_table.MATMUL_MERGE_IN_LAST_PROGRAM is before
    with pytest.raises(AttributeError, match="MATMUL_MERGE_TILES"):
        with knobs.overridden(MATMUL_MERGE_TILES=None):
            pass


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_chunk_partials_of_k_slices_merge_to_the_unsplit_bits(dtype):
    """A row-parallel matmul's ranks each hold whole K chunks: their unrounded chunk partials,
    concatenated in K order and merged, are invariant_matmul's bits (one chunk per slice or two)."""
    k_chunk = matmul_table.MATMUL_INTERPRETER.k_chunk
    g = torch.Generator().manual_seed(7)
    a = torch.randn(5, 4 * k_chunk, generator=g).to(dtype)
    b = torch.randn(4 * k_chunk, 24, generator=g).to(dtype)
    unsplit = invariant_matmul(a, b)
    for ranks in (1, 2, 4):
        width = a.shape[1] // ranks
        parts = torch.cat([matmul.fixed_chunk_partials(a[:, r * width : (r + 1) * width], b[r * width : (r + 1) * width]) for r in range(ranks)])
        assert parts.dtype == torch.float32 and parts.shape == (4, 5, 24)
        assert torch.equal(matmul.merge_fixed_chunk_partials(parts, a.shape[1], dtype), unsplit), ranks
    with pytest.raises(ValueError, match="chunks"):
        matmul.merge_fixed_chunk_partials(parts[:3], a.shape[1], dtype)
