"""The backend end to end on CUDA: a bf16 transformer block at a real size, CUDA graphs, one compile."""

import pytest
import torch

from inductor_bi.testing import assert_close_to_reference, assert_rows_equal

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _block(norm):
    from tests.test_backend_reductions import Block

    torch.manual_seed(0)
    return Block(d=1024, heads=8, norm=norm).cuda().to(torch.bfloat16)


@pytest.mark.parametrize("norm", ["rms", "layer"])
def test_transformer_block_rows_equal_alone_for_batch_1_to_64(norm):
    torch._dynamo.reset()
    block = _block(norm)
    compiled = torch.compile(block, backend="batch_invariant", dynamic=True)
    x = torch.randn(64, 256, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        full = compiled(x)
        for b in (1, 2, 5, 16, 33):
            assert_rows_equal(full[:b], compiled(x[:b]), f"batch {b}")
        assert_close_to_reference(full[:4], block.double()(x[:4].double()), dtype=torch.bfloat16, tol_scale=2)


def test_stock_compile_block_differs_or_not_is_reported(capsys):
    """Not an assertion on stock behaviour (it varies by version): prints it for the results file."""
    torch._dynamo.reset()
    block = _block("rms")
    stock = torch.compile(block, dynamic=True)
    x = torch.randn(64, 256, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        full = stock(x)
        differ = [b for b in (1, 2, 5, 16, 33) if not torch.equal(full[:b], stock(x[:b]))]
    print(f"stock torch.compile: batch sizes whose rows differ from the batch of 64: {differ}")


def test_reduce_overhead_cuda_graphs_work_and_stay_invariant():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    block = _block("rms")
    compiled = torch.compile(block, backend="batch_invariant", mode="reduce-overhead")
    x = torch.randn(8, 128, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        for _ in range(3):  # warm-up, record, replay
            full = compiled(x).clone()
        skips = counters["inductor"]["cudagraph_skips"]  # Inductor falls back silently otherwise
        ref = torch.compile(block, backend="batch_invariant")(x)
    assert skips == 0, "CUDA graphs were skipped (see TORCH_LOGS=perf_hints)"
    assert_rows_equal(full, ref, "CUDA graph replay vs plain launch")


def test_training_step_compiles_on_cuda():
    torch._dynamo.reset()
    block = _block("layer").float()
    x = torch.randn(4, 64, 1024, device="cuda", requires_grad=True)
    torch.compile(block, backend="batch_invariant")(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_serving_step_with_graph_knobs_on_keeps_rows_invariant_and_close():
    """The graph-level speed knobs forced on (KV cache read in place, residual add and RMSNorm in
    one row kernel): a request's logits are the same bits alone as in a batch of 48, and within
    bf16 tolerance of the knobs-off step."""
    import copy
    import functools

    from inductor_bi.backend import batch_invariant
    from tests._support import load_model_file
    from inductor_bi.kernels import knobs

    llama = load_model_file()
    args = llama.ModelArgs(vocab_size=4096, dim=1024, n_layers=2, n_heads=16, n_kv_heads=4, ffn_dim=2816, max_seq_len=512, max_batch=64)
    model = llama.build_model(args, "cuda", torch.bfloat16, seed=0)
    models = [copy.deepcopy(model), copy.deepcopy(model)]
    for m in models:
        m.setup_kv_cache()
    steps = [torch.compile(m.step, backend=functools.partial(batch_invariant), dynamic=True) for m in models]
    b, kv_len = 48, 300
    tokens = torch.randint(0, args.vocab_size, (b,), device="cuda")
    slots = torch.randperm(args.max_batch, device="cuda")[:b]
    positions = torch.randint(0, kv_len, (b,), device="cuda")
    graph_knobs = dict(ATTENTION_FOLD_KV_GATHER=True, REDUCTION_FOLD_RESIDUAL_ADD=True, REDUCTION_FUSE_RMS_NORM=True)
    with torch.no_grad():
        with knobs.overridden(**{name: False for name in graph_knobs}):
            plain = steps[0](tokens, slots, positions, kv_len)
        with knobs.overridden(**graph_knobs):
            batched = steps[1](tokens, slots, positions, kv_len)
            for i in (0, 17, b - 1):
                alone = steps[1](tokens[i : i + 1], slots[i : i + 1], positions[i : i + 1], kv_len)
                assert_rows_equal(batched[i : i + 1], alone, f"request {i}")
    torch.testing.assert_close(batched.float(), plain.float(), atol=5e-2, rtol=5e-2)
