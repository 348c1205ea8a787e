"""The backend end to end on CUDA: a bf16 transformer block at a real size, CUDA graphs, one compile."""

import pytest
import torch

from inductor_bi.testing import assert_close_to_reference, assert_rows_equal

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _block(norm):
    from tests.test_reductions_backend import Block

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
    torch._dynamo.reset()
    block = _block("rms")
    compiled = torch.compile(block, backend="batch_invariant", mode="reduce-overhead")
    x = torch.randn(8, 128, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        for _ in range(3):  # warm-up, record, replay
            full = compiled(x).clone()
        ref = torch.compile(block, backend="batch_invariant")(x)
    assert_rows_equal(full, ref, "CUDA graph replay vs plain launch")


def test_training_step_compiles_on_cuda():
    torch._dynamo.reset()
    block = _block("layer").float()
    x = torch.randn(4, 64, 1024, device="cuda", requires_grad=True)
    torch.compile(block, backend="batch_invariant")(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
