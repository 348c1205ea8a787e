"""invariant_matmul on CUDA at real sizes: bf16/fp16/fp32, bitwise row invariance, accuracy."""

import pytest
import torch
import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st

from inductor_bi.kernels import matmul_table
from inductor_bi.kernels.matmul import invariant_matmul
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
LLAMA_NK = [(4096, 4096), (14336, 4096), (4096, 14336), (1024, 4096)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", LLAMA_NK)
def test_row_equals_alone_for_batch_sizes_1_to_4096(dtype, n, k):
    torch.manual_seed(0)
    a = torch.randn(4096, k, device="cuda", dtype=dtype)
    w = torch.randn(k, n, device="cuda", dtype=dtype) / k**0.5
    full = invariant_matmul(a, w)
    for m in (1, 2, 3, 7, 16, 33, 64, 127, 256, 1000, 2048):
        assert_rows_equal(full[:m], invariant_matmul(a[:m], w), f"M={m}")
    assert_close_to_reference(full[:256], a[:256].double() @ w.double(), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_k_and_single_program_agree_bitwise(dtype):
    a = torch.randn(48, 14336, device="cuda", dtype=dtype)
    w = torch.randn(14336, 4096, device="cuda", dtype=dtype)
    bias = torch.randn(4096, device="cuda", dtype=dtype)
    one = invariant_matmul(a, w, bias, split_k=False)
    split = invariant_matmul(a, w, bias, split_k=True)
    assert_rows_equal(split, one, "split-K vs single program")


def test_merge_in_the_last_program_is_exact_launch_after_launch():
    """The arrival counters are reused launch after launch: a counter not put back, or a partial
    read before it is visible, would show as a changed bit somewhere in 200 launches."""
    assert matmul_table.MATMUL_MERGE_IN_LAST_PROGRAM
    a = torch.randn(16, 14336, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(4096, 14336, device="cuda", dtype=torch.bfloat16).t()
    one = invariant_matmul(a, w, split_k=False)
    outs = [invariant_matmul(a, w, split_k=True) for _ in range(200)]
    assert all(torch.equal(out, one) for out in outs)


def test_split_launches_on_concurrent_streams_give_the_same_bits():
    """Each stream has its own arrival counters, so split launches running at once on two
    streams cannot count each other's chunks."""
    a = [torch.randn(8, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    w = torch.randn(2048, 8192, device="cuda", dtype=torch.bfloat16).t()
    expected = [invariant_matmul(x, w, split_k=False) for x in a]
    streams = [torch.cuda.Stream() for _ in range(2)]
    torch.cuda.synchronize()
    outs = [[], []]
    for _ in range(50):
        for i, stream in enumerate(streams):
            with torch.cuda.stream(stream):
                outs[i].append(invariant_matmul(a[i], w, split_k=True))
    torch.cuda.synchronize()
    for i in range(2):
        assert all(torch.equal(out, expected[i]) for out in outs[i]), f"stream {i}"


def test_split_merged_in_the_last_program_replays_exactly_in_a_cuda_graph():
    a = torch.randn(4, 4096, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(1024, 4096, device="cuda", dtype=torch.bfloat16).t()
    one = invariant_matmul(a, w, split_k=False)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on the capture stream, as torch.cuda.graph asks
        invariant_matmul(a, w, split_k=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = invariant_matmul(a, w, split_k=True)
    for _ in range(20):
        out.zero_()
        graph.replay()
        assert torch.equal(out, one)


@given(
    m=st.integers(1, 600), n=st.integers(1, 700), k=st.integers(1, 3000),
    dtype=st.sampled_from(DTYPES), data=st.data(),
)
def test_row_equals_alone_hypothesis(m, n, k, dtype, data):
    row = data.draw(st.integers(0, m - 1))
    a = torch.randn(m, k, device="cuda", dtype=dtype)
    w = torch.randn(k, n, device="cuda", dtype=dtype)
    bias = torch.randn(n, device="cuda", dtype=dtype)
    batched = invariant_matmul(a, w, bias)
    assert_rows_equal(batched[row : row + 1], invariant_matmul(a[row : row + 1], w, bias))
    assert_close_to_reference(batched, a.double() @ w.double() + bias.double(), dtype=dtype, tol_scale=2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 64, 300, 4096])
@pytest.mark.parametrize("k", [4096, 1100, 2050, 50])
def test_tma_pointer_tall_and_short_paths_give_the_same_bits(dtype, m, k, monkeypatch):
    """Every way of fetching and distributing tiles (TMA or pointer loads; 64- or 128-row programs
    with 128- or 64-wide K steps; split-K or not) runs one arithmetic, so all give the same bits,
    on both weight layouts; also where K ends inside a K step (zero-padded MMAs)."""
    torch.manual_seed(0)
    a = torch.randn(m, k, device="cuda", dtype=dtype)
    weight = torch.randn(1024, k, device="cuda", dtype=dtype) / k**0.5
    outs = {}
    for layout, b in {"[out, in].t()": weight.t(), "[in, out]": weight.t().contiguous()}.items():
        for tall in (False, True):
            monkeypatch.setattr(matmul_table, "MATMUL_TALL_MIN_SM_FRACTION", 0 if tall else 10**9)
            for tma in (False, True):
                for split in (False, True):
                    outs[layout, tall, tma, split] = invariant_matmul(a, b, tma=tma, split_k=split)
    reference = outs["[out, in].t()", False, False, False]
    for key, out in outs.items():
        assert_rows_equal(out, reference, str(key))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_one_binary_for_any_batch_gives_the_specialized_bits(dtype, monkeypatch):
    """matmul_table.ONE_BINARY_FOR_ANY_BATCH: M unspecialized, one compiled binary per launch shape (the
    short tile, not split: 64 tiles of N = 8192) for M = 1..64, and the bits of the binaries
    Triton specializes per M class; rows still equal alone, split-K and tall launches included."""
    from inductor_bi.kernels import _launch, matmul

    torch.manual_seed(0)
    a = torch.randn(4096, 2048, device="cuda", dtype=dtype)
    w = torch.randn(2048, 8192, device="cuda", dtype=dtype) / 2048**0.5
    monkeypatch.setattr(matmul_table, "ONE_BINARY_FOR_ANY_BATCH", False)
    specialized = {m: invariant_matmul(a[:m], w) for m in (1, 7, 16, 33, 64)}
    monkeypatch.setattr(matmul_table, "ONE_BINARY_FOR_ANY_BATCH", True)
    kernel = matmul._invariant_matmul_kernel
    assert _launch.compiled_kernel(kernel) is not kernel
    before = _launch.binaries_compiled(kernel)
    for m, expected in specialized.items():
        assert_rows_equal(invariant_matmul(a[:m], w), expected, f"M={m}")
    assert _launch.binaries_compiled(kernel) - before <= 1
    full = invariant_matmul(a, w)  # the tall launch shape
    for m in (1, 5, 64, 300):
        assert_rows_equal(full[:m], invariant_matmul(a[:m], w), f"M={m} vs 4096")
    assert_rows_equal(invariant_matmul(a[:48], w[:, :4096], split_k=True), invariant_matmul(a[:48], w[:, :4096], split_k=False), "split-K")


def test_transposed_weight_like_linear():
    w = torch.randn(4096, 1024, device="cuda", dtype=torch.bfloat16)  # nn.Linear stores [out, in]
    a = torch.randn(300, 1024, device="cuda", dtype=torch.bfloat16)
    out = invariant_matmul(a, w.t())
    assert_rows_equal(out[5:6], invariant_matmul(a[5:6], w.t()))
    assert_close_to_reference(out, a.double() @ w.double().t(), dtype=torch.bfloat16)


def test_float64_is_supported():
    a = torch.randn(100, 300, device="cuda", dtype=torch.float64)
    b = torch.randn(300, 50, device="cuda", dtype=torch.float64)
    assert_close_to_reference(invariant_matmul(a, b), a @ b)


class LlamaMLP(nn.Module):
    def __init__(self, d=4096, h=14336):
        super().__init__()
        self.gate = nn.Linear(d, h, bias=False)
        self.up = nn.Linear(d, h, bias=False)
        self.down = nn.Linear(h, d, bias=False)

    def forward(self, x):
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x))


def test_llama_mlp_compiled_rows_equal_alone_and_stock_differs():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = LlamaMLP().cuda().to(torch.bfloat16)
    x = torch.randn(512, 4096, device="cuda", dtype=torch.bfloat16)
    compiled = torch.compile(model, backend="batch_invariant", dynamic=True)
    with torch.no_grad():
        full = compiled(x)
        for m in (1, 2, 8, 31, 64, 200):
            assert_rows_equal(full[:m], compiled(x[:m]), f"M={m}")
        assert_close_to_reference(full, model.double()(x.double()), dtype=torch.bfloat16, tol_scale=2)
