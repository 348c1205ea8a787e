"""fixed_split_attention on CPU (Triton interpreter): accuracy, and the invariance properties.

Shapes are small (the interpreter runs each program in numpy) but cross several key blocks and
several fixed KV splits (16 keys per block, 32 per split on the interpreter), so the split and
merge logic is exercised. Every invariance check is ``torch.equal``, never allclose.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from inductor_bi.kernels import _arrivals, attention_table, knobs
from inductor_bi.kernels.attention import fixed_split_attention, fixed_split_attention_with_lse
from inductor_bi.testing import assert_close_to_reference
from tests._support import float64_attention
from tests._support import sdpa_float64_reference as reference

pytestmark = [
    pytest.mark.filterwarnings("ignore:inductor_bi. running batch-invariant Triton kernels"),
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning"),  # Triton's interpreter
]

SPLIT = attention_table.ATTENTION_INTERPRETER.kv_split
DTYPES = [torch.float32, torch.float16]
# Output tolerance against a float64 reference, per dtype (fp16: p is rounded to fp16 before
# the P@V product and the output to fp16; fp32: fp32 accumulation and exp2).
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float16: dict(atol=4e-3, rtol=4e-3)}
FAST = settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def randn(*shape, dtype=torch.float32, gen=None):
    return torch.randn(*shape, generator=gen, dtype=torch.float32).to(dtype)


def causal_cache_mask(q_pos: torch.Tensor, cache_len: int) -> torch.Tensor:
    """Bool [Lq, cache_len]: query at absolute position p sees cache slots 0..p."""
    return torch.arange(cache_len)[None, :] <= q_pos[:, None]


# ----------------------------------------------------------------------------------------------
# Accuracy
# ----------------------------------------------------------------------------------------------


@st.composite
def attention_case(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    dtype = draw(st.sampled_from(DTYPES))
    b = draw(st.integers(1, 2))
    hkv = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 2, 4]))
    lq = draw(st.integers(1, 40))
    lk = draw(st.integers(1, 72))
    d = draw(st.sampled_from([8, 16, 24, 32]))
    dv = draw(st.sampled_from([d, 16]))
    is_causal = draw(st.booleans())
    mask_kind = draw(st.sampled_from(["none", "bool", "float"]))
    mask_shape = draw(st.sampled_from(["2d", "per_batch", "full"]))
    scale = draw(st.sampled_from([None, 0.3]))
    hq = hkv * group
    q = randn(b, hq, lq, d, dtype=dtype, gen=gen)
    k = randn(b, hkv, lk, d, dtype=dtype, gen=gen)
    v = randn(b, hkv, lk, dv, dtype=dtype, gen=gen)
    shape = {"2d": (lq, lk), "per_batch": (b, 1, lq, lk), "full": (b, hq, lq, lk)}[mask_shape]
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(shape, generator=gen) > 0.3
    elif mask_kind == "float":
        mask = torch.randn(shape, generator=gen)
        mask[torch.rand(shape, generator=gen) < 0.2] = float("-inf")
        mask = mask.to(dtype)
    kwargs = dict(attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=group > 1)
    return q, k, v, kwargs


@FAST
@given(attention_case())
def test_matches_float64_reference(case):
    q, k, v, kwargs = case
    out = fixed_split_attention(q, k, v, **kwargs)
    assert out.dtype == q.dtype and out.shape == (*q.shape[:-1], v.shape[-1])
    torch.testing.assert_close(out.double(), reference(q, k, v, **kwargs), **TOL[q.dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_lse_matches_float64_reference(dtype):
    gen = torch.Generator().manual_seed(1)
    q, k, v = randn(2, 2, 20, 16, dtype=dtype, gen=gen), randn(2, 2, 50, 16, dtype=dtype, gen=gen), randn(2, 2, 50, 16, dtype=dtype, gen=gen)
    mask = torch.rand(20, 50, generator=gen) > 0.5
    mask[3] = False  # a row that sees no key: lse = -inf, output 0 (torch gives 0 too)
    out, lse = fixed_split_attention_with_lse(q, k, v, attn_mask=mask)
    scores = (q.double() @ k.double().transpose(-1, -2)) / 4.0
    expected = torch.logsumexp(scores.masked_fill(~mask, float("-inf")), dim=-1)
    assert lse.dtype == torch.float32 and lse.shape == (2, 2, 20)
    # Row sums by MMA add each p as rounded to the input dtype for the PV product: every term is
    # off by at most eps/2 relative, so the sum's log by at most eps/2 (on top of fp32's own).
    p_rounding = torch.finfo(dtype).eps / 2 if dtype != torch.float32 else 0.0
    torch.testing.assert_close(lse.double(), expected, atol=1e-5 + p_rounding, rtol=1e-5)
    assert torch.equal(out[:, :, 3], torch.zeros_like(out[:, :, 3]))
    torch.testing.assert_close(out.double(), reference(q, k, v, attn_mask=mask), **TOL[dtype])


@pytest.mark.parametrize("path", ["sequential", "split"])
@pytest.mark.parametrize("pack_gqa", [False, True])
def test_cache_read_in_place_gives_the_bits_of_the_gathered_cache(path, pack_gqa):
    """kv_rows (attention_table.ATTENTION_FOLD_KV_GATHER): batch row b reading cache slot kv_rows[b] in
    place gives exactly what attention over ``cache[kv_rows]`` gives; negative slots wrap."""
    gen = torch.Generator().manual_seed(11)
    slots, b, lk = 6, 4, 300
    k_cache, v_cache = randn(slots, 2, 512, 16, gen=gen), randn(slots, 2, 512, 16, gen=gen)
    q = randn(b, 4, 1, 16, gen=gen)
    rows = torch.tensor([3, 0, 5, -2])
    mask = torch.rand(b, 1, 1, lk, generator=gen) > 0.2
    options = dict(attn_mask=mask, enable_gqa=True, path=path, pack_gqa=pack_gqa)
    gathered = fixed_split_attention(q, k_cache[rows, :, :lk], v_cache[rows, :, :lk], **options)
    in_place = fixed_split_attention(q, k_cache[:, :, :lk], v_cache[:, :, :lk], kv_rows=rows, **options)
    assert torch.equal(in_place, gathered)


def test_cache_rows_must_be_one_integer_slot_per_batch_row():
    q, cache = randn(3, 2, 1, 16), randn(5, 2, 8, 16)
    for bad in (torch.tensor([0, 1]), torch.tensor([0.0, 1.0, 2.0]), torch.zeros(3, 1, dtype=torch.long)):
        with pytest.raises(RuntimeError, match="kv_rows must be"):
            fixed_split_attention(q, cache, cache, kv_rows=bad)
    with pytest.raises(RuntimeError, match="kv_rows wants"):
        fixed_split_attention(q[0], cache[0], cache[0], kv_rows=torch.tensor([0]))


def test_causal_with_lq_not_lk_is_top_left_like_torch():
    gen = torch.Generator().manual_seed(2)
    for lq, lk in [(10, 40), (40, 10)]:
        q, k, v = randn(1, 2, lq, 16, gen=gen), randn(1, 2, lk, 16, gen=gen), randn(1, 2, lk, 16, gen=gen)
        out = fixed_split_attention(q, k, v, is_causal=True)
        torch.testing.assert_close(out.double(), reference(q, k, v, is_causal=True), **TOL[torch.float32])


def test_bf16_runs_upcast_on_cpu():
    gen = torch.Generator().manual_seed(3)
    q, k, v = (randn(1, 2, 20, 16, dtype=torch.bfloat16, gen=gen) for _ in range(3))
    out = fixed_split_attention(q, k, v, is_causal=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), reference(q, k, v, is_causal=True), atol=2e-2, rtol=2e-2)


def test_non_contiguous_inputs_give_same_bits():
    """q/k/v as transposed views of [B, L, H, D] buffers (the usual projection layout)."""
    gen = torch.Generator().manual_seed(4)
    q = randn(2, 30, 4, 16, gen=gen).transpose(1, 2)
    k = randn(2, 45, 2, 16, gen=gen).transpose(1, 2)
    v = randn(2, 45, 2, 32, gen=gen)[..., ::2].transpose(1, 2)  # strided last dim too
    out = fixed_split_attention(q, k, v, is_causal=True, enable_gqa=True)
    contiguous = fixed_split_attention(q.contiguous(), k.contiguous(), v.contiguous(), is_causal=True, enable_gqa=True)
    assert torch.equal(out, contiguous)
    torch.testing.assert_close(out.double(), reference(q, k, v, is_causal=True, enable_gqa=True), **TOL[torch.float32])


def test_3d_inputs_and_broadcast_batch_like_torch():
    gen = torch.Generator().manual_seed(5)
    q, k, v = randn(3, 12, 16, gen=gen), randn(3, 20, 16, gen=gen), randn(3, 20, 8, gen=gen)
    torch.testing.assert_close(fixed_split_attention(q, k, v).double(), reference(q, k, v), **TOL[torch.float32])
    q4, k4, v4 = randn(2, 3, 12, 16, gen=gen), randn(1, 3, 20, 16, gen=gen), randn(1, 3, 20, 16, gen=gen)
    torch.testing.assert_close(fixed_split_attention(q4, k4, v4).double(), reference(q4, k4, v4), **TOL[torch.float32])


# ----------------------------------------------------------------------------------------------
# Invariance
# ----------------------------------------------------------------------------------------------


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from(DTYPES),
    batch=st.integers(2, 5),
    length=st.integers(1, 70),
    is_causal=st.booleans(),
    mask_kind=st.sampled_from(["none", "bool", "float"]),
    path=st.sampled_from([None, "sequential", "split"]),
)
def test_row_equals_alone_for_any_batch(seed, dtype, batch, length, is_causal, mask_kind, path):
    gen = torch.Generator().manual_seed(seed)
    pos = int(torch.randint(batch, (1,), generator=gen))
    q = randn(batch, 4, length, 16, dtype=dtype, gen=gen)
    k = randn(batch, 2, length, 16, dtype=dtype, gen=gen)
    v = randn(batch, 2, length, 16, dtype=dtype, gen=gen)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(batch, 1, length, length, generator=gen) > 0.3
    elif mask_kind == "float":
        mask = torch.randn(batch, 1, length, length, generator=gen).to(dtype)
    kw = dict(is_causal=is_causal, enable_gqa=True)
    in_batch = fixed_split_attention(q, k, v, attn_mask=mask, path=path, **kw)
    alone_mask = None if mask is None else mask[pos : pos + 1]
    alone = fixed_split_attention(q[pos : pos + 1], k[pos : pos + 1], v[pos : pos + 1], attn_mask=alone_mask, **kw)
    assert torch.equal(in_batch[pos : pos + 1], alone)


@pytest.mark.parametrize("dtype", DTYPES)
def test_head_equals_alone_for_any_head_count(dtype):
    gen = torch.Generator().manual_seed(6)
    q, k, v = randn(1, 6, 40, 16, dtype=dtype, gen=gen), randn(1, 2, 40, 16, dtype=dtype, gen=gen), randn(1, 2, 40, 16, dtype=dtype, gen=gen)
    all_heads = fixed_split_attention(q, k, v, is_causal=True, enable_gqa=True)
    for h in range(6):
        kv = h // 3
        alone = fixed_split_attention(q[:, h : h + 1], k[:, kv : kv + 1], v[:, kv : kv + 1], is_causal=True)
        assert torch.equal(all_heads[:, h : h + 1], alone), h


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("is_causal,mask", [(False, None), (True, None), (False, "bool")], ids=["full", "causal", "bool-mask"])
def test_row_sums_by_mma_match_float64_reference(dtype, is_causal, mask):
    """Each block's p (rounded as the PV product takes it) is summed by a ones-matrix MMA: still
    accurate, and sequential == split bitwise."""
    gen = torch.Generator().manual_seed(7)
    q, k, v = randn(2, 4, 37, 32, dtype=dtype, gen=gen), randn(2, 2, 90, 32, dtype=dtype, gen=gen), randn(2, 2, 90, 32, dtype=dtype, gen=gen)
    attn_mask = (torch.rand(37, 90, generator=gen) > 0.3) if mask == "bool" else None
    seq = fixed_split_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=True, path="sequential")
    split = fixed_split_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=True, path="split")
    assert torch.equal(seq, split)
    want = reference(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=True)
    torch.testing.assert_close(seq.double(), want, **TOL[dtype])


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(seed=0, dtype=torch.float16, total=80, heads=(4, 2), d=32)  # crosses two split boundaries
@example(seed=1, dtype=torch.float32, total=67, heads=(1, 1), d=16)
@example(seed=2, dtype=torch.float16, total=75, heads=(4, 2), d=16)
@given(
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from(DTYPES),
    total=st.integers(2, 80),
    heads=st.sampled_from([(1, 1), (2, 1), (4, 2)]),
    d=st.sampled_from([16, 32]),
)
def test_decode_equals_prefill_bitwise(seed, dtype, total, heads, d):
    """Token t gets the same bits in (i) a causal prefill of all tokens, (ii) a one-query decode
    against a cache of exactly t+1 keys or a longer preallocated cache behind a mask, on either
    path, and (iii) a chunked prefill of queries at an offset into the cache."""
    _check_decode_equals_prefill(seed, dtype, total, heads, d)


def _check_decode_equals_prefill(seed, dtype, total, heads, d):
    gen = torch.Generator().manual_seed(seed)
    hq, hkv = heads
    capacity = total + 23  # preallocated cache slots past the last token: filled, finite, hidden
    q = randn(1, hq, total, d, dtype=dtype, gen=gen)
    k_cache = randn(1, hkv, capacity, d, dtype=dtype, gen=gen)
    v_cache = randn(1, hkv, capacity, d, dtype=dtype, gen=gen)
    k, v = k_cache[:, :, :total], v_cache[:, :, :total]
    gqa = hq != hkv
    prefill = fixed_split_attention(q, k, v, is_causal=True, enable_gqa=gqa)

    # Positions around block and split boundaries, plus a few random ones.
    picks = {0, total - 1, SPLIT - 1, SPLIT, SPLIT + 1, 2 * SPLIT}
    picks |= set(torch.randint(total, (2,), generator=gen).tolist())
    for t in sorted(p for p in picks if p < total):
        want = prefill[:, :, t : t + 1]
        qt = q[:, :, t : t + 1]
        for path, pack in (("sequential", False), ("split", False), ("sequential", True), ("split", True)):
            exact = fixed_split_attention(qt, k[:, :, : t + 1], v[:, :, : t + 1], enable_gqa=gqa, path=path, pack_gqa=pack)
            assert torch.equal(exact, want), (t, path, pack, "cache of t+1 keys")
        hidden = causal_cache_mask(torch.tensor([t]), capacity)
        masked = fixed_split_attention(qt, k_cache, v_cache, attn_mask=hidden, enable_gqa=gqa)
        assert torch.equal(masked, want), (t, "preallocated cache, bool mask")
        additive = torch.zeros(1, capacity, dtype=dtype).masked_fill(~hidden, float("-inf"))
        masked = fixed_split_attention(qt, k_cache, v_cache, attn_mask=additive, enable_gqa=gqa, path="split")
        assert torch.equal(masked, want), (t, "preallocated cache, additive mask")

        # Chunked prefill: the chunk [c0, c1) holding t, queries at offset c0 into the cache.
        c0 = int(torch.randint(t + 1, (1,), generator=gen))
        c1 = int(torch.randint(t + 1, total + 1, (1,), generator=gen))
        chunk_mask = causal_cache_mask(torch.arange(c0, c1), c1)
        chunk = fixed_split_attention(q[:, :, c0:c1], k[:, :, :c1], v[:, :, :c1], attn_mask=chunk_mask, enable_gqa=gqa)
        assert torch.equal(chunk[:, :, t - c0 : t - c0 + 1], want), (t, c0, c1, "chunked prefill")


@FAST
@given(attention_case(), st.booleans())
def test_sequential_and_split_paths_identical(case, merge_in_last):
    """Also whichever program merges the splits: a MERGE launch, or the split program of a query
    tile that finishes last (attention_table.ATTENTION_MERGE_IN_LAST_PROGRAM)."""
    q, k, v, kwargs = case
    out_seq, lse_seq = fixed_split_attention_with_lse(q, k, v, path="sequential", **kwargs)
    with knobs.overridden(ATTENTION_MERGE_IN_LAST_PROGRAM=merge_in_last):
        out_split, lse_split = fixed_split_attention_with_lse(q, k, v, path="split", **kwargs)
    assert torch.equal(out_seq, out_split)
    assert torch.equal(lse_seq, lse_split)
    assert torch.count_nonzero(_arrivals._BLOCKS.get(q.device, torch.zeros(1))) == 0  # counters put back


@FAST
@given(attention_case(), st.sampled_from(["sequential", "split"]), st.booleans(), st.booleans())
def test_tma_and_pointer_loads_give_the_same_bits(case, path, pack_gqa, q_by_tma):
    """K / V blocks (and the query tile, attention_table.ATTENTION_Q_BY_TMA) fetched by TMA descriptors
    or by pointer loads: keys past Lk, queries past Lq and head-dim
    columns past D arrive as zeros either way, so every row has the same bits (head dims that
    are no power of two included)."""
    q, k, v, kwargs = case
    pointer = fixed_split_attention_with_lse(q, k, v, path=path, pack_gqa=pack_gqa, tma=False, **kwargs)
    with knobs.overridden(ATTENTION_Q_BY_TMA=q_by_tma):
        tma = fixed_split_attention_with_lse(q, k, v, path=path, pack_gqa=pack_gqa, tma=True, **kwargs)
    assert torch.equal(tma[0], pointer[0]) and torch.equal(tma[1], pointer[1])


@pytest.mark.parametrize("path", ["sequential", "split"])
def test_tma_reads_a_cache_slot_in_place_with_the_same_bits(path):
    """A cache read in place through TMA: the descriptor spans the whole cache and each program
    addresses its batch row's slot; keys past the read length are zeros, not the next slot's."""
    gen = torch.Generator().manual_seed(12)
    k_cache, v_cache = randn(5, 2, 128, 16, gen=gen), randn(5, 2, 128, 16, gen=gen)
    k_cache[:, :, 70:] = float("nan")  # past the read length: must never reach a row
    v_cache[:, :, 70:] = float("nan")
    q = randn(3, 4, 1, 16, gen=gen)
    rows = torch.tensor([4, 0, -2])
    options = dict(enable_gqa=True, path=path, kv_rows=rows)
    pointer = fixed_split_attention(q, k_cache[:, :, :70], v_cache[:, :, :70], tma=False, **options)
    tma = fixed_split_attention(q, k_cache[:, :, :70], v_cache[:, :, :70], tma=True, **options)
    assert not pointer.isnan().any() and torch.equal(tma, pointer)


def test_layouts_tma_cannot_describe_fall_back_to_pointer_loads():
    """A broadcast K (stride 0) or an odd row stride cannot be a TMA descriptor: same bits by
    pointer loads, no error."""
    gen = torch.Generator().manual_seed(13)
    q = randn(2, 2, 5, 16, gen=gen)
    k = randn(1, 2, 9, 16, gen=gen).expand(2, 2, 9, 16)  # batch stride 0
    v = randn(2, 2, 9, 17, gen=gen)[..., :16]  # row stride of 17 elements
    assert torch.equal(fixed_split_attention(q, k, v, tma=True), fixed_split_attention(q, k, v, tma=False))


@FAST
@given(attention_case(), st.sampled_from(["sequential", "split"]))
def test_gqa_packed_and_unpacked_identical(case, path):
    """One program per group of query heads (rows = position x head) computes every row with the
    same bits as one program per head, and stays accurate."""
    q, k, v, kwargs = case
    out, lse = fixed_split_attention_with_lse(q, k, v, path=path, pack_gqa=False, **kwargs)
    out_packed, lse_packed = fixed_split_attention_with_lse(q, k, v, path=path, pack_gqa=True, **kwargs)
    assert torch.equal(out_packed, out)
    assert torch.equal(lse_packed, lse)
    torch.testing.assert_close(out_packed.double(), reference(q, k, v, **kwargs), **TOL[q.dtype])


def test_explicit_causal_masks_equal_is_causal():
    """A 0/-inf additive mask and a bool mask hide keys exactly like is_causal (x + 0 == x)."""
    gen = torch.Generator().manual_seed(7)
    q, k, v = (randn(2, 2, 50, 16, dtype=torch.float16, gen=gen) for _ in range(3))
    causal = fixed_split_attention(q, k, v, is_causal=True)
    tril = torch.ones(50, 50, dtype=torch.bool).tril()
    additive = torch.zeros(50, 50, dtype=torch.float16).masked_fill(~tril, float("-inf"))
    assert torch.equal(fixed_split_attention(q, k, v, attn_mask=tril), causal)
    assert torch.equal(fixed_split_attention(q, k, v, attn_mask=additive), causal)
    # is_causal together with a mask applies both (torch's CPU behaviour).
    both = fixed_split_attention(q, k, v, attn_mask=torch.ones(50, 50, dtype=torch.bool), is_causal=True)
    assert torch.equal(both, causal)


# ----------------------------------------------------------------------------------------------
# Bad and empty input
# ----------------------------------------------------------------------------------------------


def test_empty_batch_or_queries_give_empty_output():
    q, k, v = torch.randn(0, 2, 5, 16), torch.randn(0, 2, 7, 16), torch.randn(0, 2, 7, 8)
    assert fixed_split_attention(q, k, v).shape == (0, 2, 5, 8)
    out, lse = fixed_split_attention_with_lse(torch.randn(1, 2, 0, 16), torch.randn(1, 2, 7, 16), torch.randn(1, 2, 7, 8))
    assert out.shape == (1, 2, 0, 8) and lse.shape == (1, 2, 0)


def test_no_keys_gives_zeros_like_torch():
    q, k, v = torch.randn(1, 2, 5, 16), torch.randn(1, 2, 0, 16), torch.randn(1, 2, 0, 8)
    out, lse = fixed_split_attention_with_lse(q, k, v)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    assert torch.equal(out, torch.zeros(1, 2, 5, 8)) and bool((lse == float("-inf")).all())


def test_fully_masked_rows_give_zeros_like_torch():
    q, k, v = torch.randn(1, 1, 4, 16), torch.randn(1, 1, 40, 16), torch.randn(1, 1, 40, 16)
    mask = torch.ones(4, 40, dtype=torch.bool)
    mask[1] = False
    additive = torch.zeros(4, 40).masked_fill(~mask, float("-inf"))
    for m in (mask, additive):
        for path in ("sequential", "split"):
            out = fixed_split_attention(q, k, v, attn_mask=m, path=path)
            assert torch.equal(out[:, :, 1], torch.zeros(1, 1, 16))
            torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=m), atol=2e-5, rtol=2e-5)


def test_mismatched_dtypes_raise():
    q, k = torch.randn(1, 1, 4, 16), torch.randn(1, 1, 4, 16)
    with pytest.raises(RuntimeError, match="same dtype"):
        fixed_split_attention(q, k.half(), k)


def test_unsupported_dtype_raises():
    x = torch.randn(1, 1, 4, 16, dtype=torch.float64)
    with pytest.raises(TypeError, match="not supported"):
        fixed_split_attention(x, x, x)


def test_head_dim_over_limit_raises_not_implemented():
    x = torch.randn(1, 1, 4, 264)
    with pytest.raises(NotImplementedError, match="up to 256"):
        fixed_split_attention(x, x, x)
    with pytest.raises(NotImplementedError, match="up to 256"):
        fixed_split_attention(x[..., :16], x[..., :16], x)


def test_head_count_errors():
    q, k = torch.randn(1, 4, 4, 16), torch.randn(1, 2, 4, 16)
    with pytest.raises(RuntimeError, match="enable_gqa"):
        fixed_split_attention(q, k, k)
    with pytest.raises(RuntimeError, match="must divide"):
        fixed_split_attention(q, torch.randn(1, 3, 4, 16), torch.randn(1, 3, 4, 16), enable_gqa=True)


def test_bad_mask_and_path_raise():
    x = torch.randn(1, 1, 4, 16)
    with pytest.raises(RuntimeError, match="does not broadcast"):
        fixed_split_attention(x, x, x, attn_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool or floating"):
        fixed_split_attention(x, x, x, attn_mask=torch.ones(4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="path"):
        fixed_split_attention(x, x, x, path="fast")


def test_output_is_laid_out_token_major_so_merging_heads_is_a_view():
    """[B, Hq, Lq, Dv] with [B, Lq, Hq, Dv] memory, like torch's flash SDPA: the usual
    ``out.transpose(1, 2).reshape(B, Lq, Hq * Dv)`` needs no copy, and the values are right."""
    q, k, v = (torch.randn(2, h, 5, 16) for h in (4, 2, 2))
    out = fixed_split_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert out.shape == (2, 4, 5, 16) and out.transpose(1, 2).is_contiguous()
    merged = out.transpose(1, 2).reshape(2, 5, 64)
    assert merged.data_ptr() == out.data_ptr()
    ref = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True, enable_gqa=True)
    assert_close_to_reference(out, ref, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# Any scale; heads and ranks that broadcast like torch's SDPA
# ----------------------------------------------------------------------------------------------


def _masking(kind: str, b: int, lq: int, lk: int, gen, dtype=torch.float32) -> dict:
    """Each way a key gets hidden: is_causal, a bool key-padding mask, an additive float mask with -inf."""
    if kind == "causal":
        return dict(is_causal=True)
    if kind == "padding":  # each batch row sees its first n keys
        lengths = torch.randint(1, lk + 1, (b, 1, 1, 1), generator=gen)
        return dict(attn_mask=torch.arange(lk) < lengths)
    mask = torch.randn(b, 1, lq, lk, generator=gen)
    mask[torch.rand(b, 1, lq, lk, generator=gen) < 0.3] = float("-inf")
    return dict(attn_mask=mask.to(dtype))


@pytest.mark.parametrize("scale", [0.0, -0.0, -0.25, -4.0, 1e-30, 4.0])
@pytest.mark.parametrize("masking", ["causal", "padding", "float"])
def test_any_scale_matches_float64_reference_and_stays_invariant(scale, masking):
    """The kernel puts the scale into exp2's argument and takes a block's max before scaling,
    which holds for scale > 0: a zero or negative scale must still give softmax(q k^T * scale) v
    (not NaN), with a row's bits independent of its batch and of the execution path."""
    gen = torch.Generator().manual_seed(21)
    b, lq, lk = 3, 20, 45  # keys across two splits and a partial block
    q, k, v = randn(b, 2, lq, 16, gen=gen), randn(b, 2, lk, 16, gen=gen), randn(b, 2, lk, 16, gen=gen)
    kw = dict(scale=scale, **_masking(masking, b, lq, lk, gen))
    out = fixed_split_attention(q, k, v, path="sequential", **kw)
    # Scores scaled by |scale| <= 4 carry that factor of the fp32 dot product's rounding.
    tol = 2e-5 * max(1.0, abs(scale))
    torch.testing.assert_close(out.double(), float64_attention(q, k, v, **kw), atol=tol, rtol=tol)
    assert torch.equal(fixed_split_attention(q, k, v, path="split", **kw), out)
    alone = {key: (val[1:2] if isinstance(val, torch.Tensor) else val) for key, val in kw.items()}
    assert torch.equal(fixed_split_attention(q[1:2], k[1:2], v[1:2], **alone), out[1:2])


def test_negative_scale_decode_equals_prefill_in_fp16():
    """A token gets the same bits in a causal prefill and a one-query decode at a negative scale."""
    gen = torch.Generator().manual_seed(22)
    q, k, v = (randn(1, 2, 40, 16, dtype=torch.float16, gen=gen) for _ in range(3))
    prefill = fixed_split_attention(q, k, v, is_causal=True, scale=-0.3)
    torch.testing.assert_close(prefill.double(), float64_attention(q, k, v, is_causal=True, scale=-0.3), **TOL[torch.float16])
    for t in (0, 17, 33, 39):
        decode = fixed_split_attention(q[:, :, t : t + 1], k[:, :, : t + 1], v[:, :, : t + 1], scale=-0.3, path="split")
        assert torch.equal(decode, prefill[:, :, t : t + 1]), t


# (q, k, v) shapes that torch's SDPA broadcasts without enable_gqa: K / V heads of size 1 (multi-query
# attention as Falcon calls it), a query with one head, K and V with different head counts, batch
# dims of size 1, lower-rank K / V, and rank-2 inputs.
BROADCASTS = {
    "mqa": ((2, 4, 20, 16), (2, 1, 37, 16), (2, 1, 37, 16)),
    "mqa-batch-1": ((3, 4, 20, 16), (1, 1, 37, 16), (1, 1, 37, 8)),
    "one-query-head": ((2, 1, 20, 16), (2, 4, 37, 16), (2, 4, 37, 16)),
    "k-one-head-v-four": ((2, 4, 20, 16), (2, 1, 37, 16), (2, 4, 37, 16)),
    "rank-2-kv": ((2, 4, 20, 16), (37, 16), (37, 16)),
    "rank-3-kv": ((2, 3, 20, 16), (1, 37, 16), (3, 37, 16)),
    "rank-2": ((20, 16), (37, 16), (37, 16)),
    "rank-5": ((2, 3, 4, 20, 16), (2, 1, 1, 37, 16), (1, 3, 1, 37, 16)),
}


@pytest.mark.parametrize("name", list(BROADCASTS))
def test_heads_and_batch_dims_broadcast_like_torch(name):
    gen = torch.Generator().manual_seed(23)
    q, k, v = (randn(*s, gen=gen) for s in BROADCASTS[name])
    out = fixed_split_attention(q, k, v, is_causal=True)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert out.shape == want.shape
    torch.testing.assert_close(out.double(), float64_attention(q, k, v, is_causal=True), **TOL[torch.float32])


@pytest.mark.parametrize("path", ["sequential", "split"])
def test_one_kv_head_broadcast_is_gqa_with_every_query_head_in_its_group(path):
    """Multi-query attention by broadcasting gives the bits of enable_gqa with one K/V head (the
    same head read by every query head, packed or not), and a row's bits do not depend on its batch."""
    gen = torch.Generator().manual_seed(24)
    q, k, v = randn(3, 4, 6, 16, gen=gen), randn(3, 1, 40, 16, gen=gen), randn(3, 1, 40, 16, gen=gen)
    mask = torch.rand(3, 1, 6, 40, generator=gen) > 0.2
    out = fixed_split_attention(q, k, v, attn_mask=mask, path=path)
    for pack in (False, True):
        assert torch.equal(fixed_split_attention(q, k, v, attn_mask=mask, enable_gqa=True, path=path, pack_gqa=pack), out)
    assert torch.equal(fixed_split_attention(q[2:], k[2:], v[2:], attn_mask=mask[2:]), out[2:])


def test_gqa_with_different_key_and_value_head_counts_like_torch():
    gen = torch.Generator().manual_seed(25)
    q, k, v = randn(2, 4, 9, 16, gen=gen), randn(2, 1, 30, 16, gen=gen), randn(2, 2, 30, 16, gen=gen)
    out = fixed_split_attention(q, k, v, enable_gqa=True, is_causal=True)
    want = float64_attention(q, k, v, enable_gqa=True, is_causal=True)
    torch.testing.assert_close(out.double(), want, **TOL[torch.float32])
