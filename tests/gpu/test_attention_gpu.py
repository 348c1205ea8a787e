"""fixed_split_attention on CUDA at real sizes: accuracy and the invariance properties in bf16.

On the GPU the properties rest on more than the source order (which the CPU tests check): every
row must go through the same compiled MMA instruction whatever its position in the query tile,
and the SEQUENTIAL and SPLIT/MERGE kernels must compile the shared arithmetic identically. Only
these tests can catch a break there. Every invariance check is ``torch.equal``.
"""

from __future__ import annotations

import pytest
import torch

from inductor_bi.kernels import attention_table
from inductor_bi.kernels.attention import fixed_split_attention, fixed_split_attention_with_lse
from tests._support import sdpa_float64_reference as reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DEV = "cuda"
BF16 = torch.bfloat16
# bf16 output against a float64 reference: p and the output are rounded to bf16 (8 bits).
TOL = {torch.bfloat16: dict(atol=2e-2, rtol=2e-2), torch.float16: dict(atol=4e-3, rtol=4e-3), torch.float32: dict(atol=1e-4, rtol=1e-4)}


def rand(*shape, dtype=BF16, seed=0):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    return torch.randn(*shape, generator=gen, device=DEV, dtype=torch.float32).to(dtype)


def causal_cache_mask(q_pos: torch.Tensor, cache_len: int) -> torch.Tensor:
    """Bool [Lq, cache_len]: the query at absolute position p sees cache slots 0..p."""
    return torch.arange(cache_len, device=DEV)[None, :] <= q_pos.to(DEV)[:, None]


@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize(
    "b, hq, hkv, lq, lk, is_causal, mask_kind",
    [
        (4, 8, 2, 1024, 1024, True, None),  # GQA causal prefill
        (2, 8, 8, 1, 8192, False, None),  # decode, long cache
        (2, 4, 4, 300, 777, False, "float"),  # ragged lengths, additive mask
        (2, 4, 1, 200, 2100, True, "bool"),  # MQA, top-left causal with Lq != Lk, bool mask
    ],
)
def test_matches_float64_reference_gpu(d, b, hq, hkv, lq, lk, is_causal, mask_kind):
    q, k, v = rand(b, hq, lq, d, seed=1), rand(b, hkv, lk, d, seed=2), rand(b, hkv, lk, d, seed=3)
    mask = None
    if mask_kind == "bool":
        mask = rand(b, 1, lq, lk, dtype=torch.float32, seed=4) > -1.0
    elif mask_kind == "float":
        mask = rand(1, hq, lq, lk, seed=4)
    kw = dict(attn_mask=mask, is_causal=is_causal, enable_gqa=hq != hkv)
    out, lse = fixed_split_attention_with_lse(q, k, v, **kw)
    assert out.dtype == BF16 and lse.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference(q, k, v, **kw), **TOL[BF16])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [64, 96, 128, 256])
def test_every_config_compiles_accurate_and_paths_agree_gpu(dtype, d):
    """Each pinned CUDA config (per padded head dim and dtype) at a modest size."""
    q, k, v = rand(2, 4, 130, d, dtype=dtype, seed=5), rand(2, 2, 600, d, dtype=dtype, seed=6), rand(2, 2, 600, d, dtype=dtype, seed=7)
    kw = dict(is_causal=False, enable_gqa=True)
    seq = fixed_split_attention(q, k, v, path="sequential", **kw)
    split = fixed_split_attention(q, k, v, path="split", **kw)
    assert torch.equal(seq, split)
    torch.testing.assert_close(seq.double(), reference(q, k, v, **kw), **TOL[dtype])


@pytest.mark.parametrize("d", [64, 128])
def test_row_equals_alone_for_any_batch_gpu(d):
    hq, hkv = 8, 2
    # Prefill: 64 causal sequences of 1024 tokens.
    q, k, v = rand(64, hq, 1024, d, seed=10), rand(64, hkv, 1024, d, seed=11), rand(64, hkv, 1024, d, seed=12)
    batch = fixed_split_attention(q, k, v, is_causal=True, enable_gqa=True)
    for pos in (0, 17, 63):
        alone = fixed_split_attention(q[pos : pos + 1], k[pos : pos + 1], v[pos : pos + 1], is_causal=True, enable_gqa=True)
        assert torch.equal(batch[pos : pos + 1], alone), pos
    # Decode: 64 single queries against 4096-key caches. The batch fills the GPU on the
    # sequential path, one sequence alone takes the split path: the bits must not care.
    q, k, v = rand(64, hq, 1, d, seed=13), rand(64, hkv, 4096, d, seed=14), rand(64, hkv, 4096, d, seed=15)
    batch = fixed_split_attention(q, k, v, enable_gqa=True)
    for pos in (0, 31, 63):
        alone = fixed_split_attention(q[pos : pos + 1], k[pos : pos + 1], v[pos : pos + 1], enable_gqa=True)
        assert torch.equal(batch[pos : pos + 1], alone), pos
        for path in ("sequential", "split"):
            forced = fixed_split_attention(q[pos : pos + 1], k[pos : pos + 1], v[pos : pos + 1], enable_gqa=True, path=path)
            assert torch.equal(batch[pos : pos + 1], forced), (pos, path)


def test_head_equals_alone_for_any_head_count_gpu():
    q, k, v = rand(2, 32, 512, 128, seed=20), rand(2, 8, 512, 128, seed=21), rand(2, 8, 512, 128, seed=22)
    all_heads = fixed_split_attention(q, k, v, is_causal=True, enable_gqa=True)
    for h in (0, 5, 31):
        kv = h // 4
        alone = fixed_split_attention(q[:, h : h + 1], k[:, kv : kv + 1], v[:, kv : kv + 1], is_causal=True)
        assert torch.equal(all_heads[:, h : h + 1], alone), h


@pytest.mark.parametrize("d, heads", [(64, (8, 8)), (128, (32, 8))])
def test_decode_equals_prefill_bitwise_gpu(d, heads):
    """Token t gets the same bits in (i) a causal prefill, (ii) a one-query decode against a
    cache of exactly t+1 keys (either path) or a preallocated 8192-slot cache behind a bool or an
    additive mask, and (iii) a chunked prefill of 512 queries at an offset into the cache."""
    hq, hkv = heads
    total, capacity, chunk = 4133, 8192, 512
    gqa = hq != hkv
    q = rand(2, hq, total, d, seed=30)
    k_cache, v_cache = rand(2, hkv, capacity, d, seed=31), rand(2, hkv, capacity, d, seed=32)
    k, v = k_cache[:, :, :total], v_cache[:, :, :total]
    prefill = fixed_split_attention(q, k, v, is_causal=True, enable_gqa=gqa)

    split = attention_table.attention_config(d, BF16, interpreted=False).kv_split
    picks = {0, 1, 63, 64, split - 1, split, split + 1, 1000, 2047, 2048, total - 1}
    picks |= set(torch.randint(total, (5,), generator=torch.Generator().manual_seed(33)).tolist())
    for t in sorted(picks):
        want = prefill[:, :, t : t + 1]
        qt = q[:, :, t : t + 1]
        for path in (None, "sequential", "split"):
            got = fixed_split_attention(qt, k[:, :, : t + 1], v[:, :, : t + 1], enable_gqa=gqa, path=path)
            assert torch.equal(got, want), (t, path, "cache of t+1 keys")
        hidden = causal_cache_mask(torch.tensor([t]), capacity)
        for pack in (False, True):  # one program per query head, or per group sharing a K/V head
            got = fixed_split_attention(qt, k_cache, v_cache, attn_mask=hidden, enable_gqa=gqa, pack_gqa=pack)
            assert torch.equal(got, want), (t, pack, "preallocated cache, bool mask")
        additive = torch.zeros(1, capacity, device=DEV, dtype=BF16).masked_fill(~hidden, float("-inf"))
        got = fixed_split_attention(qt, k_cache, v_cache, attn_mask=additive, enable_gqa=gqa)
        assert torch.equal(got, want), (t, "preallocated cache, additive mask")
        c0 = (t // chunk) * chunk
        c1 = min(c0 + chunk, total)
        chunk_mask = causal_cache_mask(torch.arange(c0, c1), capacity)
        got = fixed_split_attention(q[:, :, c0:c1], k_cache, v_cache, attn_mask=chunk_mask, enable_gqa=gqa)
        assert torch.equal(got[:, :, t - c0 : t - c0 + 1], want), (t, c0, "chunked prefill")
    # Whole chunked prefill against the growing cache, chunk by chunk (each chunk at offset c0
    # sees keys [0, c1)), reassembled: identical to the one-shot prefill.
    pieces = []
    for c0 in range(0, total, chunk):
        c1 = min(c0 + chunk, total)
        mask = causal_cache_mask(torch.arange(c0, c1), c1)
        pieces.append(fixed_split_attention(q[:, :, c0:c1], k[:, :, :c1], v[:, :, :c1], attn_mask=mask, enable_gqa=gqa))
    assert torch.equal(torch.cat(pieces, dim=2), prefill)


# Lengths around tile and split edges; each new (Lq, Lk) may compile another specialization.
@pytest.mark.parametrize("lq, lk", [(1, 1), (1, 257), (1, 8192), (5, 256), (64, 255), (65, 8192), (300, 1), (300, 257), (2100, 2100)])
def test_sequential_split_and_gqa_packed_identical_gpu(lq, lk):
    q, k, v = rand(2, 8, lq, 128, seed=40), rand(2, 2, lk, 128, seed=41), rand(2, 2, lk, 128, seed=42)
    mask = rand(2, 1, lq, lk, dtype=torch.float32, seed=43) > -1.5
    for kw in (dict(is_causal=True), dict(attn_mask=mask), dict(attn_mask=mask.to(BF16))):
        seq_out, seq_lse = fixed_split_attention_with_lse(q, k, v, enable_gqa=True, path="sequential", pack_gqa=False, **kw)
        split_out, split_lse = fixed_split_attention_with_lse(q, k, v, enable_gqa=True, path="split", pack_gqa=False, **kw)
        assert torch.equal(seq_out, split_out)
        assert torch.equal(seq_lse, split_lse)
        packed_out, packed_lse = fixed_split_attention_with_lse(q, k, v, enable_gqa=True, pack_gqa=True, **kw)
        assert torch.equal(packed_out, seq_out)
        assert torch.equal(packed_lse, seq_lse)


def test_strided_layout_gives_same_bits_gpu():
    """q/k/v as transposed views of [B, L, H, D] projections (no copy) vs contiguous copies."""
    q = rand(4, 700, 16, 128, seed=50).transpose(1, 2)
    k = rand(4, 700, 4, 128, seed=51).transpose(1, 2)
    v = rand(4, 700, 4, 128, seed=52).transpose(1, 2)
    out = fixed_split_attention(q, k, v, is_causal=True, enable_gqa=True)
    contiguous = fixed_split_attention(q.contiguous(), k.contiguous(), v.contiguous(), is_causal=True, enable_gqa=True)
    assert torch.equal(out, contiguous)
    torch.testing.assert_close(out.double(), reference(q, k, v, is_causal=True, enable_gqa=True), **TOL[BF16])


@pytest.mark.parametrize("batch,kv_len", [(1, 8192), (16, 4096), (64, 1024)])
def test_split_merged_in_the_last_program_equals_sequential_launch_after_launch(batch, kv_len, monkeypatch):
    """attention_table.ATTENTION_MERGE_IN_LAST_PROGRAM (forced on here): the split program of a query tile
    that counts itself in last merges the splits. Counters reused 50 times and two streams at
    once must give the sequential path's bits every time."""
    monkeypatch.setattr(attention_table, "ATTENTION_MERGE_IN_LAST_PROGRAM", True)
    q = [rand(batch, 32, 1, 128, seed=s) for s in (1, 2)]
    k, v = rand(batch, 8, kv_len, 128, seed=3), rand(batch, 8, kv_len, 128, seed=4)
    want = [fixed_split_attention(x, k, v, enable_gqa=True, path="sequential") for x in q]
    streams = [torch.cuda.Stream() for _ in q]
    torch.cuda.synchronize()
    outs = [[], []]
    for _ in range(50):
        for i, stream in enumerate(streams):
            with torch.cuda.stream(stream):
                outs[i].append(fixed_split_attention(q[i], k, v, enable_gqa=True, path="split"))
    torch.cuda.synchronize()
    for i in range(2):
        assert all(torch.equal(out, want[i]) for out in outs[i]), f"stream {i}"


@pytest.mark.parametrize("batch", [1, 16, 64])
def test_cache_read_in_place_gives_the_bits_of_the_gathered_cache_gpu(batch):
    """kv_rows (attention_table.ATTENTION_FOLD_KV_GATHER): each batch row reading its cache slot in place
    gives the bits of attention over the gathered cache, on both execution paths."""
    torch.manual_seed(batch)
    slots, lk = 96, 1000
    k_cache = torch.randn(slots, 8, 2048, 128, device="cuda", dtype=torch.bfloat16)
    v_cache = torch.randn(slots, 8, 2048, 128, device="cuda", dtype=torch.bfloat16)
    q = torch.randn(batch, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
    rows = torch.randperm(slots, device="cuda")[:batch]
    mask = torch.arange(lk, device="cuda")[None, None, None, :] <= torch.randint(0, lk, (batch, 1, 1, 1), device="cuda")
    for path in ("sequential", "split"):
        gathered = fixed_split_attention(q, k_cache[rows, :, :lk], v_cache[rows, :, :lk], mask, enable_gqa=True, path=path)
        in_place = fixed_split_attention(q, k_cache[:, :, :lk], v_cache[:, :, :lk], mask, enable_gqa=True, path=path, kv_rows=rows)
        assert torch.equal(in_place, gathered), path


@pytest.mark.parametrize("dtype", [BF16, torch.float16])
@pytest.mark.parametrize(
    "case",
    ["prefill-causal", "prefill-mask", "decode-split", "decode-packed", "cache-in-place", "head-dim-80", "transposed-views"],
)
@pytest.mark.parametrize("q_by_tma", [False, True], ids=["kv", "q-kv"])
def test_tma_and_pointer_loads_give_the_same_bits_gpu(dtype, case, q_by_tma, monkeypatch):
    """K / V blocks (and with attention_table.ATTENTION_Q_BY_TMA the query tile) by Hopper TMA
    descriptors or by pointer loads: the same keys and zeros past
    Lk / Lq / D, so the same bits, on every path and layout. Off Hopper both calls take pointer
    loads (the comparison still holds, trivially)."""
    monkeypatch.setattr(attention_table, "ATTENTION_Q_BY_TMA", q_by_tma)
    d, lq, lk, batch = 128, 1000, 1000, 2
    if case.startswith("decode") or case == "cache-in-place":
        lq, lk, batch = 1, 4100, 16
    if case == "head-dim-80":
        d = 80
    q, k, v = rand(batch, 32, lq, d, dtype=dtype, seed=60), rand(batch, 8, lk, d, dtype=dtype, seed=61), rand(batch, 8, lk, d, dtype=dtype, seed=62)
    kw = dict(enable_gqa=True, is_causal=lq > 1)
    if case == "prefill-mask":
        kw = dict(enable_gqa=True, attn_mask=rand(batch, 1, lq, lk, dtype=torch.float32, seed=63) > -1.0)
    elif case == "decode-split":
        kw.update(path="split", pack_gqa=False)
    elif case == "decode-packed":
        kw.update(pack_gqa=True)
    elif case == "cache-in-place":
        k = torch.cat([k, k.flip(0)])[:, :, : lk - 7]  # a 32-slot cache read short of its length
        v = torch.cat([v, v.flip(0)])[:, :, : lk - 7]
        kw.update(kv_rows=torch.randperm(32, device=DEV)[:batch])
    elif case == "transposed-views":
        q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    pointer = fixed_split_attention_with_lse(q, k, v, tma=False, **kw)
    tma = fixed_split_attention_with_lse(q, k, v, tma=True, **kw)
    assert torch.equal(tma[0], pointer[0]) and torch.equal(tma[1], pointer[1])
    if kw.get("kv_rows") is None and "attn_mask" not in kw:
        torch.testing.assert_close(tma[0].double(), reference(q, k, v, **{key: kw[key] for key in ("is_causal", "enable_gqa")}), **TOL[dtype])
