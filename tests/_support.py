"""Shared test support: loading examples/ and scripts as modules, recording the graphs the backend rewrites."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_file(path: str, module_name: str):
    """Import a .py file of the repo that is not in a package (examples/, benchmarks/, tools/)."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def load_example(name: str):
    """Import examples/<name>.py."""
    return load_file(f"examples/{name}.py", f"{name}_example")


def sdpa_float64_reference(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """softmax(q k^T * scale + mask) v in float64, by torch's math SDPA (a row that sees no key
    gives 0, as the kernel's does). With both a mask and
    is_causal, the causal part (top-left aligned) is folded into the mask first: torch 2.11-2.13's
    math path composed the two this way, torch 2.14 and CUDA refuse the pair, and the kernel takes it."""
    m = attn_mask
    if m is not None and m.dtype != torch.bool:
        m = m.double()
    if m is not None and is_causal:
        tril = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        m = (m & tril) if m.dtype == torch.bool else m.masked_fill(~tril, float("-inf"))
        is_causal = False
    return torch.nn.functional.scaled_dot_product_attention(
        q.double(), k.double(), v.double(), attn_mask=m, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa
    )


def float64_attention(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """softmax(q k^T * scale + mask) v in float64, written out and differentiable (torch's CPU flash
    SDPA gives NaN for causal rows at a scale <= 0, so it cannot be the reference there). K / V heads
    are repeated for GQA and broadcast otherwise, like torch; a row that sees no key gives 0 (and no
    gradient), like torch."""
    q, k, v = q.double(), k.double(), v.double()
    if enable_gqa:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], -3)
        v = v.repeat_interleave(q.shape[-3] // v.shape[-3], -3)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    visible = torch.ones(scores.shape[-2:], dtype=torch.bool)
    if is_causal:
        visible = visible.tril()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        visible = visible & attn_mask
    elif attn_mask is not None:
        scores = scores + attn_mask.double()
    scores = scores.masked_fill(~visible, float("-inf"))
    sees = scores.amax(-1, keepdim=True) > float("-inf")
    p = torch.where(sees, torch.softmax(scores.masked_fill(~sees, 0.0), -1), 0.0)
    return p @ v


def error_chain_text(err: BaseException) -> str:
    """An exception and every exception it was raised from or during, one "Type: message" a line
    (torch.compile wraps a backend's error in its own)."""
    parts = []
    while err is not None:
        parts.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


@pytest.fixture
def graphs(monkeypatch):
    """Every aten graph the backend rewrites, with its rewrites: [(gm, rewrites), ...]."""
    import inductor_bi.backend as backend

    seen = []
    real = backend.rewrite_graph

    def recording(gm):
        rewrites = real(gm)
        seen.append((gm, rewrites))
        return rewrites

    monkeypatch.setattr(backend, "rewrite_graph", recording)
    return seen


# The Hugging Face models of the GPU tests (tests/gpu/test_hf_gpu.py) and of
# benchmarks/diagnose_length.py: a moderate real size, so the two see the same model.
HF_GPU_SIZE = dict(
    hidden_size=1024,
    num_hidden_layers=4,
    num_attention_heads=16,
    num_key_value_heads=4,
    vocab_size=32000,
    intermediate_size=2816,
    max_position_embeddings=1024,
)
HF_GPU_HEAD_DIM, HF_GPU_MOE = 64, (8, 512)


def build_hf_model(name: str, size: dict, head_dim: int, moe: tuple[int, int], experts_implementation=None):
    """A randomly initialised Hugging Face causal LM of the given family: ``size`` is the
    Llama-style config (GPT-2 takes the same dims), ``moe`` is (num_experts, moe_intermediate_size)."""
    import torch
    import transformers

    torch.manual_seed(0)
    if name == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**size))
    elif name == "qwen3":
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**size, head_dim=head_dim))
    elif name == "gpt2":
        config = transformers.GPT2Config(
            n_embd=size["hidden_size"],
            n_layer=size["num_hidden_layers"],
            n_head=size["num_attention_heads"],
            vocab_size=size["vocab_size"],
            n_positions=size["max_position_embeddings"],
            bos_token_id=1,
            eos_token_id=1,
        )
        model = transformers.GPT2LMHeadModel(config)
    elif name == "qwen3_moe":
        config = transformers.Qwen3MoeConfig(
            **size,
            head_dim=head_dim,
            num_experts=moe[0],
            num_experts_per_tok=2,
            moe_intermediate_size=moe[1],
            # "batched_mm": gather each token's experts' weights, bmm, then sum the top-k outputs.
            # Every op of it is rewritten (bmm -> invariant_matmul, sum -> invariant_sum) or exact
            # (topk, index). The default "grouped_mm" is tested separately; "eager" loops over
            # data-dependent expert hits, which Dynamo cannot trace: it skips those frames and
            # runs them as plain eager PyTorch, outside the backend (not invariant, and
            # fullgraph=True refuses it).
            experts_implementation=experts_implementation or "batched_mm",
        )
        model = transformers.Qwen3MoeForCausalLM(config)
    else:
        raise ValueError(name)
    model.generation_config.pad_token_id = 0
    return model.eval()
