"""Row reductions on CUDA at real sizes: bf16/fp16/fp32, bitwise row invariance, accuracy.

Same properties as tests/test_kernel_reduction.py, with the compiled kernels (where layouts,
warps and vector widths are real) and hidden sizes that run one step (<= 4096) or loop (> 4096).
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from inductor_bi.kernels.reduction import (
    invariant_layer_norm,
    invariant_log_softmax,
    invariant_mean,
    invariant_rms_norm_rows,
    invariant_softmax,
    invariant_sum,
    invariant_var_mean,
)
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
aten = torch.ops.aten
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
# 4096 and 1000 fit one BLOCK_R step; 5120 and 11008 loop over a masked tail; 128 is small.
HIDDEN = [128, 1000, 4096, 5120, 11008]
BATCHES = (1, 2, 3, 7, 16, 33, 64, 127, 256, 1000, 2048, 4096)


def _weights(hidden, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(hidden, device="cuda", dtype=dtype, generator=g)


def _row_ops(hidden, dtype):
    """name -> (fn over the last dim of [rows, hidden], float64 reference)."""
    w, b = _weights(hidden, dtype, 1), _weights(hidden, dtype, 2)
    w64, b64 = w.double(), b.double()
    return {
        "sum": (lambda x: invariant_sum(x, [-1]), lambda x: x.sum(-1)),
        "mean": (lambda x: invariant_mean(x, [-1], keepdim=True), lambda x: x.mean(-1, keepdim=True)),
        # RMSNorm's mean of squares as the backend folds it (x widened and squared in the kernel).
        "mean_of_squares": (
            lambda x: invariant_mean(x, [-1], True, torch.float32, square=True),
            lambda x: x.pow(2).mean(-1, keepdim=True),
        ),
        "var_mean": (lambda x: invariant_var_mean(x, [-1]), lambda x: torch.var_mean(x, -1)),
        "softmax": (lambda x: invariant_softmax(x, -1), lambda x: torch.softmax(x, -1)),
        "log_softmax": (lambda x: invariant_log_softmax(x, -1), lambda x: torch.log_softmax(x, -1)),
        # The fused RMSNorm row kernel the backend uses (passes/rms_norm.py), no cast before the weight.
        "rms_norm": (
            lambda x: invariant_rms_norm_rows(x, 1e-6, w, None, x.dtype)[0],
            lambda x: torch.nn.functional.rms_norm(x, [hidden], w64, 1e-6),
        ),
        "layer_norm": (
            lambda x: invariant_layer_norm(x, 1, w, b, 1e-5),
            lambda x: aten.native_layer_norm(x, [hidden], w64, b64, 1e-5),
        ),
    }


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


def _bits(t):
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _assert_same_bits(batched, alone, what):
    for i, (b, a) in enumerate(zip(_outputs(batched), _outputs(alone))):
        assert_rows_equal(_bits(b), _bits(a), f"{what}, output {i}")


def _unaligned_copy(row):
    """The same values at an address one element past a 16-byte boundary."""
    buf = torch.empty(row.numel() + 1, device=row.device, dtype=row.dtype)
    view = buf[1:].view(row.shape)
    view.copy_(row)
    assert view.data_ptr() % 16 != 0
    return view


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("name", ["sum", "mean", "mean_of_squares", "var_mean", "softmax", "log_softmax", "rms_norm", "layer_norm"])
def test_row_equals_alone_for_batch_sizes_1_to_4096(dtype, hidden, name):
    torch.manual_seed(0)
    fn, ref = _row_ops(hidden, dtype)[name]
    x = torch.randn(4096, hidden, device="cuda", dtype=dtype) * 2 + 0.5
    full = _outputs(fn(x))
    for m in BATCHES:
        _assert_same_bits(tuple(t[:m] for t in full), fn(x[:m]), f"{name} M={m}")
    for p in (0, 1, 777, 4095):
        row = x[p : p + 1]
        want = tuple(t[p : p + 1] for t in full)
        _assert_same_bits(want, fn(row), f"{name} row {p} as a view")
        _assert_same_bits(want, fn(row.clone()), f"{name} row {p} copied")
        _assert_same_bits(want, fn(_unaligned_copy(row)), f"{name} row {p} at an unaligned address")
    for got, want in zip(full, _outputs(ref(x[:256].double()))):
        assert_close_to_reference(got[:256], want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", [[1], [-1], [1, 2], [2, 1]])
def test_sum_mean_var_mean_over_inner_dims_row_equals_alone(dtype, dims):
    torch.manual_seed(0)
    x = torch.randn(64, 333, 96, device="cuda", dtype=dtype)
    for fn, ref in (
        (lambda t: invariant_sum(t, dims), lambda t: t.sum(dims)),
        (lambda t: invariant_mean(t, dims, keepdim=True), lambda t: t.mean(dims, keepdim=True)),
        (lambda t: invariant_var_mean(t, dims, 0), lambda t: torch.var_mean(t, dims, correction=0)),
    ):
        full = _outputs(fn(x))
        for m in (1, 2, 5, 31, 64):
            _assert_same_bits(tuple(t[:m] for t in full), fn(x[:m]), f"dims={dims} M={m}")
        _assert_same_bits(tuple(t[9:10] for t in full), fn(x[9:10].clone()), f"dims={dims} row 9")
        for got, want in zip(full, _outputs(ref(x.double()))):
            assert_close_to_reference(got, want, dtype)


@given(
    dtype=st.sampled_from(DTYPES),
    hidden=st.integers(1, 20000),
    rows=st.integers(1, 512),
    data=st.data(),
    name=st.sampled_from(["sum", "var_mean", "softmax", "log_softmax", "rms_norm", "layer_norm"]),
)
def test_row_equals_alone_among_random_companions(dtype, hidden, rows, data, name):
    p = data.draw(st.integers(0, rows - 1), label="position")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    g = torch.Generator(device="cuda").manual_seed(seed)
    fn, _ = _row_ops(hidden, dtype)[name]
    row = torch.randn(1, hidden, device="cuda", dtype=dtype, generator=g)
    batch = torch.randn(rows, hidden, device="cuda", dtype=dtype, generator=g)
    batch[p] = row[0]
    _assert_same_bits(tuple(t[p : p + 1] for t in _outputs(fn(batch))), fn(row), f"{name} R={hidden} row {p}/{rows}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_stats_dtypes_match_aten_on_cuda(dtype):
    x = torch.randn(8, 256, device="cuda", dtype=dtype)
    ours = invariant_layer_norm(x, 1)
    theirs = aten.native_layer_norm(x, [256], None, None, 1e-5)
    assert [t.dtype for t in ours] == [t.dtype for t in theirs]
    assert [t.shape for t in ours] == [t.shape for t in theirs]


def test_rows_past_2_to_the_31_elements_use_int64_offsets():
    # rows * R > 2**31: the last row's offset overflows int32 unless computed in int64.
    r = 16384
    rows = 2**31 // r + 8
    x = torch.empty(rows, r, device="cuda", dtype=torch.float16)
    x.normal_()
    last = x[-1:].clone()
    _assert_same_bits(invariant_sum(x, [-1])[-1:], invariant_sum(last, [-1]), "sum, last row")
    _assert_same_bits(invariant_softmax(x, -1)[-1:], invariant_softmax(last, -1), "softmax, last row")
