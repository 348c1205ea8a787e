"""Kernels launched by Inductor's generated code (inductor_launches, the default) give the bits of
the custom-op launches, on a Hugging Face Llama in bf16, and one compiled graph serves every
batch size (row 0 alone == row 0 in a batch)."""

from __future__ import annotations

import pytest
import torch

from inductor_bi.testing import assert_rows_equal

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
transformers = pytest.importorskip("transformers")


def _llama():
    config = transformers.LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=2,
                                      num_attention_heads=8, num_key_value_heads=2, vocab_size=2048)  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).to("cuda", torch.bfloat16).eval()


def test_inductor_launched_kernels_give_the_custom_op_bits_for_every_batch():
    from torch._dynamo.utils import counters

    model = _llama()
    torch._dynamo.reset()
    launched = torch.compile(model.forward, backend="batch_invariant", dynamic=True)
    dispatched = torch.compile(model.forward, backend="batch_invariant", dynamic=True, options={"inductor_launches": False})
    ids = torch.randint(0, 2048, (48, 40), device="cuda")
    with torch.no_grad():
        counters.clear()
        full = launched(input_ids=ids, use_cache=False).logits
        for batch in (1, 3, 17, 48):
            got = launched(input_ids=ids[:batch], use_cache=False).logits
            assert_rows_equal(got[:1], full[:1], f"row 0 alone in a batch of {batch} vs of 48")
            assert_rows_equal(got, dispatched(input_ids=ids[:batch], use_cache=False).logits, f"batch {batch}: launches vs custom ops")
        one = launched(input_ids=ids[:2, :1], use_cache=False).logits  # a decode-sized call: few rows, split-K
        assert_rows_equal(one, dispatched(input_ids=ids[:2, :1], use_cache=False).logits, "few rows")
