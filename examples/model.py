"""A Llama-style decoder in one readable file (gpt-fast style): the model of examples/llm.py's
serving engine, examples/rl.py's loop and benchmarks/e2e.py.

RMSNorm (written as Hugging Face writes it, statistics in fp32), rotary embeddings, GQA attention
through F.scaled_dot_product_attention, a SwiGLU MLP and a static KV cache with one slot per
running request. Two entry points share the weights: ``forward`` (whole sequences, the trainer's
view) and ``step`` (any mix of prefill and decode tokens against the cache, the serving engine's).
Parameter names follow Hugging Face's Llama, so ``build_model(checkpoint=...)`` loads a
LlamaForCausalLM state dict whose config matches the ModelArgs (Llama 3's rope scaling is not
implemented). Nothing here is specific to the backend: ``torch.compile`` it either way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelArgs:
    vocab_size: int = 256
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 172
    max_seq_len: int = 64  # KV cache length per request (prompt + generated tokens)
    max_batch: int = 8  # KV cache slots: requests that can run at once
    rope_base: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


PRESETS = {
    # Small enough for Triton's interpreter on a CPU (the backend's CPU reference mode).
    "tiny": ModelArgs(),
    # Llama-3.2-1B's shapes (hidden 2048, 16 layers, 32 heads, 8 KV heads), a 32k vocabulary.
    "llama-1b": ModelArgs(
        vocab_size=32000, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192,
        max_seq_len=512, max_batch=64, rope_base=500000.0,
    ),
}


class RMSNorm(nn.Module):
    """Written by hand as Hugging Face does (pow / mean / rsqrt), statistics in fp32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [b, l, heads, head_dim]; cos/sin [b, l, head_dim] at each token's own position."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


class KVCache(nn.Module):
    """A static cache: one slot per running request, ``max_seq_len`` positions per slot.

    Slots are reused by later requests without being cleared: positions a token cannot see are
    hidden by the attention mask, and hold finite values (the previous request's keys, or zeros).
    """

    def __init__(self, args: ModelArgs, dtype: torch.dtype):
        super().__init__()
        shape = (args.max_batch, args.n_kv_heads, args.max_seq_len, args.head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype), persistent=False)

    def update(self, slots, positions, k_new, v_new, kv_len: int):
        """Write each token's key/value at (its slot, its position), then return every token's own
        slot, positions [0, kv_len): [T, n_kv_heads, kv_len, head_dim]. The writes come first, so
        a token sees the tokens of its request computed in the same step (chunked prefill)."""
        self.k[slots, :, positions] = k_new[:, :, 0]  # each (slot, position) is written once
        self.v[slots, :, positions] = v_new[:, :, 0]
        return self.k[slots, :, :kv_len], self.v[slots, :, :kv_len]


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.q_proj = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.k_proj = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.v_proj = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.o_proj = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(self, x, cos, sin, serving: tuple | None = None):
        """Training: x [B, L, dim] whole sequences, causal. Serving: x [T, 1, dim], one token per
        row, ``serving = (slots, positions, kv_len, mask)``: attention over the row's cache slot."""
        b, l, _ = x.shape
        q = apply_rotary(self.q_proj(x).view(b, l, self.n_heads, self.head_dim), cos, sin)
        k = apply_rotary(self.k_proj(x).view(b, l, self.n_kv_heads, self.head_dim), cos, sin)
        v = self.v_proj(x).view(b, l, self.n_kv_heads, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [b, heads, l, head_dim]
        if serving is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            slots, positions, kv_len, mask = serving
            k, v = self.kv_cache.update(slots, positions, k, v, kv_len)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, l, -1))


class MLP(nn.Module):
    """SwiGLU."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.up_proj = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.down_proj = nn.Linear(args.ffn_dim, args.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.input_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.self_attn = Attention(args)
        self.post_attention_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.mlp = MLP(args)

    def forward(self, x, cos, sin, serving=None):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, serving)
        return h + self.mlp(self.post_attention_layernorm(h))


class Transformer(nn.Module):
    """Two entry points, one set of weights:

    * ``forward(tokens [B, L]) -> logits [B, L, vocab]``: the trainer's view, whole (right-padded)
      sequences, causal attention, no cache.
    * ``step(tokens [T], slots [T], positions [T], kv_len) -> logits [T, vocab]``: the serving
      engine's view. Any mix of prefill and decode tokens of any requests, flattened to T rows;
      each row is a one-query attention over its request's cache slot, masked to the positions up
      to its own. A fully hidden key changes nothing in ``fixed_split_attention``, so under the
      backend a token's bits equal those of the same token in ``forward``.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.embed_tokens = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(DecoderLayer(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.lm_head = nn.Linear(args.dim, args.vocab_size, bias=False)
        inv_freq = 1.0 / args.rope_base ** (torch.arange(0, args.head_dim, 2).float() / args.head_dim)
        angles = torch.outer(torch.arange(args.max_seq_len).float(), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("rope_cos", angles.cos(), persistent=False)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)

    def setup_kv_cache(self, dtype: torch.dtype | None = None) -> None:
        dtype = dtype or self.lm_head.weight.dtype
        device = self.lm_head.weight.device
        for layer in self.layers:  # the layer's own head count: a tensor-parallel rank keeps a share
            args = replace(self.args, n_kv_heads=layer.self_attn.n_kv_heads)
            layer.self_attn.kv_cache = KVCache(args, dtype).to(device)

    def _decode(self, tokens, positions, serving=None):
        x = self.embed_tokens(tokens)
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        for layer in self.layers:
            x = layer(x, cos, sin, serving)
        return self.lm_head(self.norm(x)).float()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        return self._decode(tokens, positions)

    def step(self, tokens, slots, positions, kv_len: int) -> torch.Tensor:
        # Row t may see keys 0..positions[t] of its own slot; the rest of the slot is hidden.
        visible = torch.arange(kv_len, device=tokens.device) <= positions[:, None]  # [T, kv_len]
        serving = (slots, positions, kv_len, visible[:, None, None, :])  # [T, heads=1, q=1, kv_len]
        return self._decode(tokens[:, None], positions[:, None], serving).squeeze(1)


def tensor_parallel(model: Transformer, mesh) -> Transformer:
    """Megatron-style tensor parallelism over ``mesh`` (a 1-D DeviceMesh), with DTensor: the
    embedding split by vocabulary rows, q / k / v / gate / up by output columns, o / down by input
    columns (their outputs summed across ranks), the logits gathered whole on every rank. Each rank
    keeps n_heads / world query and n_kv_heads / world key-value heads, and a KV cache of them."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    world = mesh.size()
    if model.args.n_heads % world or model.args.n_kv_heads % world:
        raise ValueError(f"tensor_parallel: {model.args.n_heads} query / {model.args.n_kv_heads} key-value heads do not split over {world} ranks")
    plan = {
        "embed_tokens": RowwiseParallel(input_layouts=Replicate()),
        "lm_head": ColwiseParallel(output_layouts=Replicate()),
    }
    for i in range(len(model.layers)):
        plan |= {f"layers.{i}.self_attn.{p}": ColwiseParallel() for p in ("q_proj", "k_proj", "v_proj")}
        plan |= {f"layers.{i}.mlp.{p}": ColwiseParallel() for p in ("gate_proj", "up_proj")}
        plan |= {f"layers.{i}.self_attn.o_proj": RowwiseParallel(), f"layers.{i}.mlp.down_proj": RowwiseParallel()}
    parallelize_module(model, mesh, plan)
    for layer in model.layers:
        layer.self_attn.n_heads //= world
        layer.self_attn.n_kv_heads //= world
    caches = [layer.self_attn.kv_cache for layer in model.layers if layer.self_attn.kv_cache is not None]
    if caches:  # rebuilt with the rank's heads
        model.setup_kv_cache(caches[0].k.dtype)
    return model


def build_model(args: ModelArgs, device, dtype, seed: int = 0, checkpoint: str | None = None) -> Transformer:
    """Random weights from ``seed`` (the same weights for every mode), or a state dict."""
    torch.manual_seed(seed)
    model = Transformer(args)
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = {k.removeprefix("model."): v for k, v in state.items()}  # HF LlamaForCausalLM
        if "lm_head.weight" not in state and "embed_tokens.weight" in state:
            state["lm_head.weight"] = state["embed_tokens.weight"]  # tied embeddings (Llama 3.2)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"--checkpoint {checkpoint}: missing parameters {missing}; do the flags match its config?")
        if unexpected:
            print(f"--checkpoint {checkpoint}: ignored {len(unexpected)} unknown entries, e.g. {unexpected[:3]}")
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    model.setup_kv_cache()
    return model
