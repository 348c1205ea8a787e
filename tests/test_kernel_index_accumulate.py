"""fixed_order_index_put_accumulate (kernels/index_accumulate.py): accuracy against float64, the
ascending-source-position chain bit for bit, a destination's bits whatever else is put, errors,
empty inputs; fixed_order_embedding_dense_backward against aten's."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import inductor_bi  # noqa: F401  (registers torch.ops.inductor_bi)
from inductor_bi.kernels.index_accumulate import (
    fixed_order_embedding_dense_backward,
    fixed_order_index_put_accumulate,
    fixed_order_scatter_add,
)
from inductor_bi.testing import assert_close_to_reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _float64_reference(dest, indices, values, mask=None):
    values = values.double() if mask is None else values.double().masked_fill(~mask, 0)
    return dest.double().index_put(tuple(indices), values.expand(*indices[0].shape, *dest.shape[len(indices) :]), accumulate=True)


def _sequential_chain(dest, index, values):
    """The contract written out: per destination, an fp32 accumulator from zero, the contributions
    added in ascending source position, then dest + sum rounded once to dest's dtype."""
    acc_dtype = torch.float64 if dest.dtype == torch.float64 else torch.float32
    rows = dest.shape[0]
    out = dest.clone()
    flat, vals = index.reshape(-1), values.reshape(index.numel(), dest[0].numel())
    for d in range(rows):
        positions = [i for i in range(flat.numel()) if int(flat[i]) % rows == d]
        if not positions:
            continue
        acc = torch.zeros(vals.shape[1], dtype=acc_dtype)
        for i in positions:
            acc = acc + vals[i].to(acc_dtype)
        out[d] = (dest[d].reshape(-1).to(acc_dtype) + acc).to(dest.dtype).reshape(dest.shape[1:])
    return out


@st.composite
def _puts(draw, max_rows=9):
    rows = draw(st.integers(1, max_rows), label="destination rows")
    index_shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=2), label="index shape")
    columns = draw(st.integers(1, 6), label="columns")
    seed = draw(st.integers(0, 2**16), label="seed")
    return rows, tuple(index_shape), columns, seed


@pytest.mark.parametrize("dtype", DTYPES)
@given(put=_puts())
@settings(max_examples=6)
def test_matches_float64_with_duplicates_and_negative_indices(dtype, put):
    rows, index_shape, columns, seed = put
    g = torch.Generator().manual_seed(seed)
    dest = torch.randn(rows, columns, generator=g).to(dtype)
    index = torch.randint(-rows, rows, index_shape, generator=g)  # few rows: many duplicates
    values = torch.randn(*index_shape, columns, generator=g).to(dtype)
    out = fixed_order_index_put_accumulate(dest, [index], values)
    assert out.dtype == dtype and out.shape == dest.shape and out.is_contiguous()
    assert_close_to_reference(out, _float64_reference(dest, [index], values), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@given(put=_puts(max_rows=4))
@settings(max_examples=6)
def test_each_destination_is_the_ascending_source_chain_bit_for_bit(dtype, put):
    rows, index_shape, columns, seed = put
    g = torch.Generator().manual_seed(seed)
    dest = torch.randn(rows, columns, generator=g).to(dtype)
    index = torch.randint(-rows, rows, index_shape, generator=g)
    values = (torch.randn(*index_shape, columns, generator=g) * 1e3).to(dtype)  # rounding in every add
    out = fixed_order_index_put_accumulate(dest, [index], values)
    assert torch.equal(out, _sequential_chain(dest, index, values))


@given(put=_puts(), extra=st.integers(1, 12), data=st.data())
@settings(max_examples=8)
def test_a_destinations_bits_do_not_depend_on_other_puts(put, extra, data):
    """Contributions to other destinations, anywhere among the sources, and zero contributions to
    the destination itself change none of its bits."""
    rows, index_shape, columns, seed = put
    g = torch.Generator().manual_seed(seed)
    rows += 1  # room for a destination nobody else hits
    dest = torch.randn(rows, columns, generator=g)
    target = data.draw(st.integers(0, rows - 1), label="destination")
    index = torch.randint(0, rows, (index_shape[0],), generator=g)
    values = torch.randn(index_shape[0], columns, generator=g) * 100
    alone = fixed_order_index_put_accumulate(dest, [index], values)

    others = torch.tensor([(target + 1 + i % (rows - 1)) % rows for i in range(extra)], dtype=torch.int64)
    zero_for_target = torch.full((2,), target)
    where = sorted(data.draw(st.lists(st.integers(0, index.numel()), min_size=extra + 2, max_size=extra + 2), label="insert at"))
    new_index, new_values, inserted = [], [], list(zip(where, torch.cat([others, zero_for_target]), range(extra + 2)))
    it = iter(inserted)
    pending = next(it, None)
    for i in range(index.numel() + 1):
        while pending is not None and pending[0] == i:
            new_index.append(pending[1])
            new_values.append(torch.randn(columns, generator=g) if pending[2] < extra else torch.zeros(columns))
            pending = next(it, None)
        if i < index.numel():
            new_index.append(index[i])
            new_values.append(values[i])
    crowded = fixed_order_index_put_accumulate(dest, [torch.stack(new_index)], torch.stack(new_values))
    assert torch.equal(crowded[target], alone[target])


@given(batch=st.integers(1, 6), seq=st.integers(1, 5), data=st.data())
@settings(max_examples=8)
def test_embedding_gradient_of_a_row_alone_is_its_bits_in_any_batch(batch, seq, data):
    """An embedding's gradient put [B, S] ids into [V, H]: the row whose loss counts (the others'
    gradients are zeros) gives the weight gradient it gives alone, wherever it sits in the batch."""
    row = data.draw(st.integers(0, batch - 1), label="row position")
    vocab, hidden = 5, 12
    ids = torch.randint(0, vocab, (batch, seq))
    grads = torch.zeros(batch, seq, hidden)
    grads[row] = torch.randn(seq, hidden) * 100
    mask = (ids != 0).unsqueeze(-1)  # padding_idx 0, as the decomposition masks it
    zeros = torch.zeros(vocab, hidden)
    in_batch = fixed_order_index_put_accumulate(zeros, [ids], grads, mask)
    alone = fixed_order_index_put_accumulate(zeros, [ids[row : row + 1]], grads[row : row + 1], mask[row : row + 1])
    assert torch.equal(in_batch, alone)


def test_same_bits_run_to_run():
    dest = torch.randn(5, 33)
    index = torch.randint(0, 5, (3, 7))
    values = torch.randn(3, 7, 33) * 1e4
    first = fixed_order_index_put_accumulate(dest, [index], values)
    assert all(torch.equal(first, fixed_order_index_put_accumulate(dest, [index], values)) for _ in range(2))


def test_an_index_out_of_range_is_a_clear_error():
    dest, values = torch.zeros(4, 3), torch.ones(2, 3)
    for bad in (4, -5):
        with pytest.raises(IndexError, match=f"index {bad} is out of bounds for dimension 0 with size 4"):
            fixed_order_index_put_accumulate(dest, [torch.tensor([0, bad])], values)
    with pytest.raises(IndexError, match="dimension 1 with size 3"):
        fixed_order_index_put_accumulate(torch.zeros(4, 3), [torch.tensor([1]), torch.tensor([3])], torch.ones(1))


def test_masked_out_positions_contribute_nothing_and_are_never_checked():
    dest = torch.randn(4, 3)
    index = torch.tensor([[1, 99], [2, 1]])  # 99: out of range, masked out
    values = torch.randn(2, 2, 3)
    mask = torch.tensor([[True, False], [True, True]]).unsqueeze(-1)
    out = fixed_order_index_put_accumulate(dest, [index], values, mask)
    want = dest.double().index_put((index[mask[..., 0]],), values[mask[..., 0]].double(), accumulate=True)
    assert_close_to_reference(out, want)
    # a mask that varies along the columns zeroes those elements only
    mask = torch.rand(2, 2, 3) > 0.5
    index = torch.tensor([[1, 3], [2, 1]])
    out = fixed_order_index_put_accumulate(dest, [index], values, mask)
    assert_close_to_reference(out, _float64_reference(dest, [index], values, mask))


def test_several_leading_indices_and_broadcast_values():
    dest = torch.randn(4, 3, 2)
    a, b = torch.randint(-4, 4, (5, 1)), torch.randint(-3, 3, (1, 6))  # broadcast to [5, 6]
    values = torch.randn(2)  # broadcast to [5, 6, 2]
    out = fixed_order_index_put_accumulate(dest, [a, b], values)
    assert_close_to_reference(out, _float64_reference(dest, [a, b], values))


@pytest.mark.parametrize("index_shape, columns", [((0,), 3), ((2, 0), 3), ((3,), 0)])
def test_empty_puts_return_dest(index_shape, columns):
    dest = torch.randn(4, columns)
    index = torch.zeros(index_shape, dtype=torch.int64)
    out = fixed_order_index_put_accumulate(dest, [index], torch.randn(*index_shape, columns))
    assert torch.equal(out, dest) and (dest.numel() == 0 or out.data_ptr() != dest.data_ptr())  # a copy


def test_untouched_destinations_keep_their_bits_even_negative_zero():
    dest = torch.tensor([[-0.0, 1.0], [-0.0, -0.0]])
    out = fixed_order_index_put_accumulate(dest, [torch.tensor([0])], torch.tensor([[0.0, 0.0]]))
    assert torch.equal(out[1].signbit(), torch.tensor([True, True]))  # row 1: not a destination


def test_rejects_what_it_does_not_serve():
    with pytest.raises(TypeError, match="dtype torch.complex64"):
        fixed_order_index_put_accumulate(torch.zeros(2, dtype=torch.complex64), [torch.tensor([0])], torch.ones(1, dtype=torch.complex64))
    with pytest.raises(TypeError, match="values are torch.float16"):
        fixed_order_index_put_accumulate(torch.zeros(2), [torch.tensor([0])], torch.ones(1, dtype=torch.float16))
    with pytest.raises(TypeError, match="int32 / int64"):
        fixed_order_index_put_accumulate(torch.zeros(2), [torch.tensor([True, False])], torch.ones(2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("padding_idx, scale_grad_by_freq", [(-1, False), (2, False), (-1, True)])
def test_embedding_dense_backward_matches_aten(dtype, padding_idx, scale_grad_by_freq):
    grad = torch.randn(3, 5, 8).to(dtype)
    ids = torch.randint(0, 6, (3, 5))
    args = (ids, 6, padding_idx, scale_grad_by_freq)
    out = fixed_order_embedding_dense_backward(grad, *args)
    want = torch.ops.aten.embedding_dense_backward(grad.double(), *args)
    assert out.dtype == dtype
    assert_close_to_reference(out, want, dtype=dtype)
    assert torch.equal(torch.ops.inductor_bi.fixed_order_embedding_dense_backward(grad, *args), out)


def test_custom_ops_pass_opcheck():
    dest, index, values = torch.randn(5, 4), torch.randint(0, 5, (2, 3)), torch.randn(2, 3, 4)
    mask = torch.rand(2, 3, 1) > 0.3
    op = torch.ops.inductor_bi.fixed_order_index_put_accumulate.default
    torch.library.opcheck(op, (dest, [index], values, mask), test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(op, (dest.requires_grad_(), [index], values.requires_grad_()), test_utils=("test_autograd_registration",))
    emb = torch.ops.inductor_bi.fixed_order_embedding_dense_backward.default
    torch.library.opcheck(emb, (torch.randn(2, 3, 4), index, 5, -1, False), test_utils=("test_schema", "test_faketensor"))


def test_eager_autograd_through_the_op():
    dest = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    values = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    index, mask = torch.randint(-5, 5, (2, 3)), torch.rand(2, 3, 1) > 0.3
    torch.autograd.gradcheck(lambda d, v: torch.ops.inductor_bi.fixed_order_index_put_accumulate(d, [index], v, mask), (dest, values))


def _sm90_launch(dtype, n, rows, columns):
    """The kernel's launch arguments as the host code passes them for a put of n positions into a
    [rows, columns] dest (tensors on the CPU: only their dtypes and alignment matter here)."""
    import triton.language as tl

    from inductor_bi.kernels import index_accumulate

    out, values = torch.empty(rows, columns, dtype=dtype), torch.empty(n, columns, dtype=dtype)
    keys, order = torch.empty(n, dtype=torch.int64), torch.empty(n, dtype=torch.int64)
    args = (out, values, keys, order, n, rows, columns, out.stride(0), values.stride(0), values.stride(1))
    kwargs = dict(ACC_DTYPE=tl.float32, BLOCK_C=index_accumulate.INDEX_ACCUMULATE_BLOCK_C,
                  num_warps=index_accumulate.INDEX_ACCUMULATE_WARPS, num_stages=1)  # fmt: skip
    return index_accumulate._segment_sums_kernel, args, kwargs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sm90_one_binary_for_every_batch_adding_in_fp32_only(dtype):
    """Compiled for an H100 (no GPU needed): the number of positions (the batch's tokens) is not
    specialized, so one binary serves every batch; for any width its float ops are the same
    conversions and fp32 adds, no fma."""
    from tests._support import load_file

    inspect_kernels = load_file("tools/diagnose/inspect_kernels.py", "inspect_kernels")
    keys = {inspect_kernels.binary_key(*_sm90_launch(dtype, n, 32000, 4096)) for n in (1, 7, 16, 4096)}
    assert len(keys) == 1, keys
    ops = [inspect_kernels.float_ops(inspect_kernels.compile_for_h100(*_sm90_launch(dtype, 7, 32000, c))) for c in (4096, 77, 1)]
    assert ops[0] == ops[1] == ops[2]
    assert "add.f32" in ops[0] and all(op == "add.f32" or op.startswith("cvt") for op in ops[0]), ops[0]


@settings(max_examples=15, deadline=None)
@given(dim=st.integers(0, 1), rows=st.integers(1, 6), cols=st.integers(1, 5), data=st.data())
def test_scatter_add_matches_float64_and_sums_each_element_in_index_order(dim, rows, cols, data):
    """aten.scatter_add's result (float64 reference), duplicates included; each destination
    element is the ascending chain of its contributions (row-major over index), bit for bit."""
    size = (rows, cols)
    dest = torch.randn(3 + rows, 2 + cols, dtype=torch.float16)
    index = torch.tensor(data.draw(st.lists(st.integers(0, dest.shape[dim] - 1), min_size=rows * cols, max_size=rows * cols))).view(size)
    src = torch.randn(rows + 1, cols + 1, dtype=torch.float16)  # larger than index: read over index's shape
    got = fixed_order_scatter_add(dest, dim, index, src)
    assert_close_to_reference(got, dest.double().scatter_add(dim, index, src.double()))
    chain = torch.zeros(dest.shape, dtype=torch.float32)
    for i in range(rows):
        for j in range(cols):
            at = (int(index[i, j]), j) if dim == 0 else (i, int(index[i, j]))
            chain[at] += src[i, j].float()
    assert torch.equal(got, (dest.float() + chain).half()), "each element: its contributions in index order, added once"


def test_scatter_add_refuses_a_negative_index_as_aten_does():
    with pytest.raises(IndexError, match="out of bounds"):
        fixed_order_scatter_add(torch.zeros(3, 2), 0, torch.tensor([[-1, 0]]), torch.ones(1, 2))
