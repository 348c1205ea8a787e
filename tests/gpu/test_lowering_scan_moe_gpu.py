"""Scans and MoE routing launched by Inductor (inductor_bi/lowerings/scan.py, moe.py) give the bits of
the custom-op launches (``options={"inductor_launches": False}``), with one compiled graph for
every batch size: a Hugging Face Qwen3-MoE with the default "grouped_mm" experts (grouped matmul
over data-dependent offsets, no host read) and an OPT-style position cumsum with a
logcumsumexp / cumprod over the sequence, in bf16 and fp32, batches 1..8; row 0 alone == row 0
in the batch; the launched MoE also under mode="reduce-overhead" (CUDA graphs: possible now
that nothing reads the offsets on the host)."""

from __future__ import annotations

import pytest
import torch

from inductor_bi.kernels.matmul import invariant_matmul
from inductor_bi.kernels.moe import exact_histc, invariant_grouped_mm
from inductor_bi.testing import assert_rows_equal

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

BATCHES = (1, 3, 8)
CUSTOM_OPS = ("inductor_bi::invariant_grouped_mm", "inductor_bi::exact_histc", "inductor_bi::invariant_cumsum",
              "inductor_bi::invariant_cumprod", "inductor_bi::invariant_logcumsumexp")  # fmt: skip


def _dispatched_custom_ops(fn, *args, **kwargs) -> set[str]:
    """The routing / scan custom ops one call dispatches (the profiler's op names)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn(*args, **kwargs)
    return {e.name for e in prof.events() if e.name in CUSTOM_OPS}


def _compiled_pair(fn):
    torch._dynamo.reset()
    launched = torch.compile(fn, backend="batch_invariant", dynamic=True, fullgraph=True)
    dispatched = torch.compile(fn, backend="batch_invariant", dynamic=True, fullgraph=True, options={"inductor_launches": False})
    return launched, dispatched


def _check_launched_equals_dispatched(launched, dispatched, make_inputs, pick, what: str):
    """Every batch size: launched == custom ops, bitwise; row 0 alone == row 0 in the largest batch."""
    full = None
    with torch.no_grad():
        for batch in sorted(BATCHES, reverse=True):
            inputs = make_inputs(batch)
            got = pick(launched(**inputs))
            assert_rows_equal(got, pick(dispatched(**inputs)), f"{what}, batch {batch}: launched vs custom ops")
            if full is None:
                full = got
            assert_rows_equal(got[:1], full[:1], f"{what}: row 0 in a batch of {batch} vs of {max(BATCHES)}")
    return full


# ---------------------------------------------------------------------------------------------
# Qwen3-MoE, HF's default experts ("grouped_mm"): bf16 reaches aten._grouped_mm, fp32
# transformers::grouped_mm_fallback; both become invariant_grouped_mm, launched by Inductor.
# ---------------------------------------------------------------------------------------------


def _qwen3_moe(dtype):
    pytest.importorskip("transformers")
    from tests._zoo import BY_NAME, ZOO_GPU, build

    return build(BY_NAME["qwen3_moe"], ZOO_GPU, dtype, "cuda", experts_implementation="grouped_mm")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_qwen3_moe_launched_routing_gives_the_custom_op_bits(dtype):
    model = _qwen3_moe(dtype)
    launched, dispatched = _compiled_pair(model.forward)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, model.config.vocab_size, (max(BATCHES), 48), generator=g).cuda()

    def inputs(batch):
        return dict(input_ids=ids[:batch], use_cache=False)

    _check_launched_equals_dispatched(launched, dispatched, inputs, lambda out: out.logits, f"Qwen3-MoE {dtype}")
    with torch.no_grad():
        assert not _dispatched_custom_ops(launched, **inputs(3)), "the routing ops are launched by Inductor"
        assert "inductor_bi::invariant_grouped_mm" in _dispatched_custom_ops(dispatched, **inputs(3))


def test_qwen3_moe_launched_routing_runs_in_cuda_graphs():
    from torch._dynamo.utils import counters

    model = _qwen3_moe(torch.bfloat16)
    torch._dynamo.reset()
    counters.clear()
    graphed = torch.compile(model.forward, backend="batch_invariant", dynamic=True, mode="reduce-overhead")
    plain = torch.compile(model.forward, backend="batch_invariant", dynamic=True)
    ids = torch.randint(1, model.config.vocab_size, (4, 48), device="cuda")
    with torch.no_grad():
        for batch in (4, 1):
            for _ in range(3):  # warm-up, record, replay
                out = graphed(input_ids=ids[:batch], use_cache=False).logits.clone()
            assert_rows_equal(out, plain(input_ids=ids[:batch], use_cache=False).logits, f"batch {batch}: CUDA graph replay vs plain")
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])


# ---------------------------------------------------------------------------------------------
# OPT-style positions: a cumsum of the attention mask along the sequence (in the mask's float
# dtype), then a logcumsumexp and a cumprod over the sequence. 64 positions (a multiple of 16:
# Inductor passes the length specialized) and 1100 (more than one scan block, no multiple of 16).
# ---------------------------------------------------------------------------------------------


class _Positions(torch.nn.Module):
    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.to(self.embed.weight.dtype)
        positions = torch.cumsum(mask, dim=1) * mask - 1
        h = self.embed(input_ids) * positions.unsqueeze(-1)
        decay = torch.cumprod(torch.sigmoid(h[..., :4]), dim=1)
        return torch.cat([torch.logcumsumexp(h, dim=1), decay, positions.unsqueeze(-1)], dim=-1)


@pytest.mark.parametrize("seq", [64, 1100])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_opt_style_scans_launched_give_the_custom_op_bits(dtype, seq):
    torch.manual_seed(0)
    model = _Positions(512, 32).to("cuda", dtype).eval()
    launched, dispatched = _compiled_pair(model)
    ids = torch.randint(0, 512, (max(BATCHES), seq), device="cuda")
    mask = torch.ones_like(ids)
    mask[1, seq // 2 :] = 0  # a right-padded row
    full = _check_launched_equals_dispatched(
        launched, dispatched, lambda b: dict(input_ids=ids[:b], attention_mask=mask[:b]), lambda out: out, f"scans {dtype} L={seq}"
    )
    with torch.no_grad():
        assert not _dispatched_custom_ops(launched, input_ids=ids[:3], attention_mask=mask[:3])
        assert_rows_equal(full[1:2], launched(input_ids=ids[1:2], attention_mask=mask[1:2]), "the padded row alone")


def test_histc_launched_gives_the_custom_op_and_aten_counts():
    """Integer-valued ids (an MoE's tokens per expert) and data on edges no float holds exactly."""

    def count(ids, y):
        return torch.histc(ids, bins=8, min=0, max=7), torch.histc(y, bins=6, min=0.1, max=0.7)

    launched, dispatched = _compiled_pair(count)
    ids = torch.randint(0, 8, (4096,), device="cuda").float()
    y = torch.rand(4096, device="cuda")
    y[:4] = torch.tensor([0.1, 0.7, 0.3, 0.5], device="cuda")
    for n in (4096, 77, 1):
        got, want = launched(ids[:n], y[:n]), dispatched(ids[:n], y[:n])
        aten = (torch.histc(ids[:n], 8, 0, 7), torch.histc(y[:n], 6, 0.1, 0.7))
        for g, w, ref in zip(got, want, aten):
            assert torch.equal(g, w) and torch.equal(g, ref), (n, g, w, ref)
    assert not _dispatched_custom_ops(launched, ids, y)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("counts", [[3, 0, 40, 9], [1, 4300, 70, 9]], ids=["few-rows-split-k", "tall-tiles"])
def test_grouped_rows_are_invariant_matmul_rows_on_the_gpu(dtype, counts):
    """The grouped kernel shares invariant_matmul's arithmetic (short tile, pointer loads) with
    every launch shape invariant_matmul picks: split-K for few rows (K = 2500: several chunks, a
    ragged last step), tall tiles with TMA for a group of 4300 rows."""
    torch.manual_seed(0)
    k, n, groups = 2500, 384, len(counts)
    a = torch.randn(sum(counts) + 5, k, device="cuda").to(dtype)
    b = torch.randn(groups, n, k, device="cuda").to(dtype).transpose(1, 2)
    offs = torch.tensor(counts, device="cuda").cumsum(0).to(torch.int32)
    out = invariant_grouped_mm(a, b, offs)
    start = 0
    for g, end in enumerate(offs.tolist()):
        if end > start:
            assert_rows_equal(out[start:end], invariant_matmul(a[start:end], b[g]), f"group {g}")
        start = end
    assert torch.equal(out[start:], torch.zeros_like(out[start:]))


def test_exact_histc_equals_aten_on_the_gpu():
    x = torch.rand(100_000, device="cuda")
    x[:4] = torch.tensor([0.1, 0.7, 0.3, 0.5], device="cuda")
    for bins, lo, hi in ((6, 0.1, 0.7), (8, 0.0, 1.0), (3, 0.3, 0.9)):
        assert torch.equal(exact_histc(x, bins, lo, hi), torch.histc(x, bins, lo, hi))
        assert torch.equal(exact_histc(x.double(), bins, lo, hi), torch.histc(x.double(), bins, lo, hi))
