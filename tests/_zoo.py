"""The model zoo: Hugging Face architectures built from tiny configs with random init (no download).

One ``ZooModel`` per architecture: how to build it at a size (``ZOO_CPU`` for the interpreter,
``ZOO_GPU`` for the GPU tests), the inputs of a batch (``make_inputs``), the tensor compared row
by row (``pick``), and its decoder KV cache, if any. The tests (tests/test_model_zoo*.py,
tests/gpu/test_zoo_gpu.py) and tools/gen_models_doc.py share this list, so the doc's rows are the
zoo's models; tests/test_hf_models.py and tests/gpu/test_hf_gpu.py build their Llama, Qwen3, GPT-2
and Qwen3-MoE with the same builders at their own sizes.
"""

from __future__ import annotations

import copy
import pathlib
import re
import traceback
from dataclasses import dataclass, field
from typing import Callable

import torch

_REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Size:
    """One size for the whole zoo; each builder maps it onto its config's names."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int  # GQA models; multi-query models use 1
    intermediate: int
    vocab: int
    seq: int  # tokens per row (decoder tokens for encoder-decoders)
    experts: int = 4
    image: int = 8  # ViT: square image side, patch = image // 2
    mel_frames: int = 16  # Whisper: input frames (2 x its max_source_positions)
    audio: int = 40  # wav2vec2: samples per row
    moe_intermediate: int | None = None  # each expert's width (None: intermediate // 2)
    positions: int | None = None  # position table length (None: 4 x seq + 16)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def expert_intermediate(self) -> int:
        return self.moe_intermediate or self.intermediate // 2

    @property
    def max_positions(self) -> int:
        return self.positions or 4 * self.seq + 16


ZOO_CPU = Size(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, vocab=96, seq=6)
ZOO_GPU = Size(hidden=256, layers=2, heads=8, kv_heads=2, intermediate=512, vocab=1024, seq=32,
               experts=8, image=32, mel_frames=64, audio=800)  # fmt: skip
# tests/gpu/test_hf_gpu.py's Llama / Qwen3 / GPT-2 / Qwen3-MoE (a moderate real size), also
# tools/diagnose/diagnose_length.py's model. tests/test_hf_models.py has its CPU size.
HF_GPU = Size(hidden=1024, layers=4, heads=16, kv_heads=4, intermediate=2816, vocab=32000, seq=128,
              experts=8, moe_intermediate=512, positions=1024)  # fmt: skip


@dataclass(frozen=True)
class ZooModel:
    name: str
    family: str  # what the architecture exercises, for the doc
    build: Callable[[Size], torch.nn.Module]
    kind: str  # "causal" | "encoder" | "seq2seq" | "vision" | "speech-ctc" | "speech-seq2seq"
    kv_cache: bool = False  # has a decoder KV cache (decode == full forward is tested)
    attention_mask: bool = True  # pass one (text models); without it HF builds its own
    decode_bitwise: bool = True  # False: the model itself computes a prefix differently (notes)
    fullgraph: bool = True
    notes: str = ""

    def make_inputs(self, size: Size, batch: int, generator: torch.Generator, dtype=torch.float32) -> dict:
        """A batch of random inputs (keyword arguments of the model's forward)."""
        inputs = _INPUTS[self.kind](size, batch, generator, dtype)
        if not self.attention_mask:
            inputs.pop("attention_mask", None)
        return inputs

    def cache_kwargs(self) -> dict:
        """Keyword arguments for a call that fills a fresh KV cache (one per call: a cache is
        filled in place). Encoder-decoders get their cache from here, not from the model: Whisper
        builds its own by deepcopying its config, which Dynamo cannot trace on torch 2.11."""
        if self.kind == "causal":
            return {"use_cache": True}
        if self.kv_cache:
            from transformers import DynamicCache, EncoderDecoderCache

            return {"use_cache": True, "past_key_values": EncoderDecoderCache(DynamicCache(), DynamicCache())}
        return {}

    def pick(self, out) -> torch.Tensor:
        """The tensor compared: logits where the model has a head, else the last hidden state."""
        return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


# ---------------------------------------------------------------------------------------------
# Inputs per kind. Token ids start at 3 (0-2 are pad / bos / eos in these configs); masks are all
# ones: every row is its own length, and a row's bits must not depend on its neighbours anyway.
# ---------------------------------------------------------------------------------------------


def _ids(size: Size, batch: int, g: torch.Generator, length: int | None = None) -> torch.Tensor:
    return torch.randint(3, size.vocab, (batch, length or size.seq), generator=g)


def _text(size, batch, g, dtype):
    ids = _ids(size, batch, g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _seq2seq(size, batch, g, dtype):
    ids = _ids(size, batch, g, size.seq + 2)  # encoder and decoder lengths differ on purpose
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "decoder_input_ids": _ids(size, batch, g)}


def _vision(size, batch, g, dtype):
    return {"pixel_values": torch.randn(batch, 3, size.image, size.image, generator=g).to(dtype)}


def _speech_ctc(size, batch, g, dtype):
    return {"input_values": torch.randn(batch, size.audio, generator=g).to(dtype)}


def _speech_seq2seq(size, batch, g, dtype):
    feats = torch.randn(batch, 8, size.mel_frames, generator=g).to(dtype)  # 8 mel bins
    return {"input_features": feats, "decoder_input_ids": _ids(size, batch, g)}


_INPUTS = {
    "causal": _text,
    "encoder": _text,
    "seq2seq": _seq2seq,
    "vision": _vision,
    "speech-ctc": _speech_ctc,
    "speech-seq2seq": _speech_seq2seq,
}


def stack_rows(rows: list[dict]) -> dict:
    """Concatenate single-row inputs (dim 0) into one batch."""
    return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}


def select_row(inputs: dict, row: int) -> dict:
    return {k: v[row : row + 1].clone() for k, v in inputs.items()}


def right_padded_batch(lengths: tuple[int, ...], vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids (1..vocab-1), one row per length, right-padded with id 0 to the longest,
    and their attention mask (0 on the padding): tests/test_hf_models.py's and its GPU twin's batch."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (len(lengths), max(lengths)), generator=g)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return ids.masked_fill(mask == 0, 0), mask


# ---------------------------------------------------------------------------------------------
# Builders: size -> model (eval mode, seeded). Every config is the architecture's own class.
# ---------------------------------------------------------------------------------------------


def _t():
    import transformers

    return transformers


def llama_config(s: Size, **extra) -> dict:
    """The Llama-style config names of a size."""
    return dict(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                num_key_value_heads=s.kv_heads, intermediate_size=s.intermediate, vocab_size=s.vocab,
                max_position_embeddings=s.max_positions, **extra)  # fmt: skip


def _ids_cfg() -> dict:
    return dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)


def build_llama(s):
    t = _t()
    return t.LlamaForCausalLM(t.LlamaConfig(**llama_config(s), **_ids_cfg()))


def build_qwen2(s):
    t = _t()
    return t.Qwen2ForCausalLM(t.Qwen2Config(**llama_config(s), **_ids_cfg()))


def build_qwen3(s):
    t = _t()
    return t.Qwen3ForCausalLM(t.Qwen3Config(**llama_config(s, head_dim=s.head_dim), **_ids_cfg()))


def build_mistral(s):
    t = _t()
    # A window shorter than the sequence, so the sliding mask cuts keys off.
    return t.MistralForCausalLM(t.MistralConfig(**llama_config(s, sliding_window=s.seq // 2), **_ids_cfg()))


def build_gemma2(s):
    t = _t()
    config = t.Gemma2Config(**llama_config(s, head_dim=s.head_dim, sliding_window=s.seq // 2,
                                          attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                                          query_pre_attn_scalar=s.head_dim), **_ids_cfg())  # fmt: skip
    return t.Gemma2ForCausalLM(config)


def build_phi(s):
    t = _t()
    config = t.PhiConfig(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                         intermediate_size=s.intermediate, vocab_size=s.vocab, partial_rotary_factor=0.5,
                         max_position_embeddings=s.max_positions, **_ids_cfg())  # fmt: skip
    return t.PhiForCausalLM(config)


def build_gpt_neox(s):
    t = _t()
    config = t.GPTNeoXConfig(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                             intermediate_size=s.intermediate, vocab_size=s.vocab, partial_rotary_factor=0.25,
                             max_position_embeddings=s.max_positions, **_ids_cfg())  # fmt: skip
    return t.GPTNeoXForCausalLM(config)


def build_stablelm(s):
    t = _t()
    return t.StableLmForCausalLM(t.StableLmConfig(**llama_config(s, partial_rotary_factor=0.25), **_ids_cfg()))


def build_bloom(s):
    t = _t()
    config = t.BloomConfig(hidden_size=s.hidden, n_layer=s.layers, n_head=s.heads, vocab_size=s.vocab, **_ids_cfg())
    return t.BloomForCausalLM(config)


def build_mpt(s):
    t = _t()
    config = t.MptConfig(d_model=s.hidden, n_heads=s.heads, n_layers=s.layers, expansion_ratio=2,
                         max_seq_len=s.max_positions, vocab_size=s.vocab, pad_token_id=0)  # fmt: skip
    return t.MptForCausalLM(config)


def build_gpt2(s):
    t = _t()
    config = t.GPT2Config(n_embd=s.hidden, n_layer=s.layers, n_head=s.heads, vocab_size=s.vocab,
                          n_positions=s.max_positions, **_ids_cfg())  # fmt: skip
    return t.GPT2LMHeadModel(config)


def build_opt(s):
    t = _t()
    config = t.OPTConfig(hidden_size=s.hidden, num_hidden_layers=s.layers, ffn_dim=s.intermediate,
                         num_attention_heads=s.heads, vocab_size=s.vocab, word_embed_proj_dim=s.hidden,
                         max_position_embeddings=s.max_positions, **_ids_cfg())  # fmt: skip
    return t.OPTForCausalLM(config)


def build_falcon(s):
    t = _t()
    config = t.FalconConfig(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                            multi_query=True, new_decoder_architecture=False, alibi=False, vocab_size=s.vocab,
                            **_ids_cfg())  # fmt: skip
    return t.FalconForCausalLM(config)


def build_gpt_bigcode(s):
    t = _t()
    config = t.GPTBigCodeConfig(n_embd=s.hidden, n_layer=s.layers, n_head=s.heads, multi_query=True,
                                n_positions=s.max_positions, vocab_size=s.vocab, **_ids_cfg())  # fmt: skip
    return t.GPTBigCodeForCausalLM(config)


# HF's "batched_mm" experts: gather each token's experts' weights, bmm, sum the top-k outputs,
# all rewritten (bmm -> invariant_matmul, sum -> invariant_sum) or exact (topk, index). The
# default "grouped_mm" (M per expert follows the batch) is tests/test_hf_models.py's
# test_moe_default_grouped_mm_is_invariant_or_refused; "eager" loops over data-dependent expert
# hits, which Dynamo cannot trace (it would run them eagerly, outside the backend; fullgraph=True
# refuses it).
MOE_EXPERTS = "batched_mm"


def build_qwen3_moe(s, experts_implementation=MOE_EXPERTS):
    t = _t()
    config = t.Qwen3MoeConfig(**llama_config(s, head_dim=s.head_dim), num_experts=s.experts, num_experts_per_tok=2,
                              moe_intermediate_size=s.expert_intermediate,
                              experts_implementation=experts_implementation, **_ids_cfg())  # fmt: skip
    return t.Qwen3MoeForCausalLM(config)


def build_mixtral(s):
    t = _t()
    config = t.MixtralConfig(**llama_config(s), num_local_experts=s.experts, num_experts_per_tok=2,
                             experts_implementation=MOE_EXPERTS, **_ids_cfg())  # fmt: skip
    return t.MixtralForCausalLM(config)


def _bert_like(s: Size) -> dict:
    return dict(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                intermediate_size=s.intermediate, vocab_size=s.vocab, max_position_embeddings=s.max_positions)  # fmt: skip


def build_bert(s):
    t = _t()
    return t.BertForMaskedLM(t.BertConfig(**_bert_like(s), pad_token_id=0))


def build_roberta(s):
    t = _t()
    # Position ids count the non-pad tokens of the row (an integer cumsum: exact); pad id 1 as in
    # the real checkpoints, so the random ids (>= 3) are never padding.
    return t.RobertaForMaskedLM(t.RobertaConfig(**_bert_like(s), pad_token_id=1, bos_token_id=0, eos_token_id=2))


def build_distilbert(s):
    t = _t()
    config = t.DistilBertConfig(dim=s.hidden, n_layers=s.layers, n_heads=s.heads, hidden_dim=s.intermediate,
                                vocab_size=s.vocab, max_position_embeddings=s.max_positions, pad_token_id=0)  # fmt: skip
    return t.DistilBertForMaskedLM(config)


def build_t5(s):
    t = _t()
    config = t.T5Config(d_model=s.hidden, d_kv=s.head_dim, d_ff=s.intermediate, num_layers=s.layers,
                        num_decoder_layers=s.layers, num_heads=s.heads, vocab_size=s.vocab,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16,
                        decoder_start_token_id=0, pad_token_id=0, eos_token_id=2)  # fmt: skip
    return t.T5ForConditionalGeneration(config)


def build_bart(s):
    t = _t()
    config = t.BartConfig(d_model=s.hidden, encoder_layers=s.layers, decoder_layers=s.layers,
                          encoder_attention_heads=s.heads, decoder_attention_heads=s.heads,
                          encoder_ffn_dim=s.intermediate, decoder_ffn_dim=s.intermediate, vocab_size=s.vocab,
                          max_position_embeddings=s.max_positions, decoder_start_token_id=2, forced_eos_token_id=None,
                          **_ids_cfg())  # fmt: skip
    return t.BartForConditionalGeneration(config)


def build_vit(s):
    t = _t()
    config = t.ViTConfig(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                         intermediate_size=s.intermediate, image_size=s.image, patch_size=s.image // 2,
                         num_channels=3)  # fmt: skip
    return t.ViTModel(config, add_pooling_layer=False)


def build_whisper(s):
    t = _t()
    config = t.WhisperConfig(d_model=s.hidden, encoder_layers=s.layers, decoder_layers=s.layers,
                             encoder_attention_heads=s.heads, decoder_attention_heads=s.heads,
                             encoder_ffn_dim=s.intermediate, decoder_ffn_dim=s.intermediate, vocab_size=s.vocab,
                             num_mel_bins=8, max_source_positions=s.mel_frames // 2,
                             max_target_positions=s.max_positions, decoder_start_token_id=1, **_ids_cfg())  # fmt: skip
    return t.WhisperForConditionalGeneration(config)


def build_wav2vec2(s):
    t = _t()
    # Conv feature extractor (the first conv's GroupNorm normalizes each row's channels over
    # time: per row), a grouped conv positional embedding, then a post-norm transformer.
    config = t.Wav2Vec2Config(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                              intermediate_size=s.intermediate, vocab_size=s.vocab, conv_dim=(16, 16),
                              conv_stride=(4, 2), conv_kernel=(8, 4), num_conv_pos_embeddings=4,
                              num_conv_pos_embedding_groups=2, feat_extract_norm="group", **_ids_cfg())  # fmt: skip
    return t.Wav2Vec2ForCTC(config)


ZOO: list[ZooModel] = [
    ZooModel("llama", "decoder, rotary, GQA", build_llama, "causal", kv_cache=True),
    ZooModel("qwen2", "decoder, rotary, GQA, qkv bias", build_qwen2, "causal", kv_cache=True),
    ZooModel("qwen3", "decoder, rotary, GQA, q/k RMSNorm", build_qwen3, "causal", kv_cache=True),
    ZooModel("mistral", "decoder, rotary, GQA, sliding window", build_mistral, "causal", kv_cache=True),
    ZooModel("gemma2", "decoder, rotary, attention and logit soft-capping, alternating sliding window", build_gemma2, "causal", kv_cache=True),
    ZooModel("phi", "decoder, partial rotary (1/2), parallel attention + MLP", build_phi, "causal", kv_cache=True),
    ZooModel("gpt_neox", "decoder (Pythia), partial rotary (1/4), parallel residual", build_gpt_neox, "causal", kv_cache=True),
    ZooModel("stablelm", "decoder, partial rotary (1/4), LayerNorm", build_stablelm, "causal", kv_cache=True),
    ZooModel("bloom", "decoder, ALiBi", build_bloom, "causal", kv_cache=True),
    ZooModel("mpt", "decoder, ALiBi (bias relative to the last key)", build_mpt, "causal", kv_cache=True,
             decode_bitwise=False,
             notes="decode == full forward within fp32 tolerance, not bitwise: MPT's ALiBi bias for a key is "
                   "(key - key count + 1) x slope, so a prefill of L-1 tokens gives its rows the scores of a "
                   "prefill of L tokens shifted by one slope (equal after softmax in exact arithmetic only); "
                   "eager fp32 differs the same way"),
    ZooModel("gpt2", "decoder, learned positions", build_gpt2, "causal", kv_cache=True),
    ZooModel("opt", "decoder, learned positions from a cumsum of the mask", build_opt, "causal", kv_cache=True,
             attention_mask=False,
             notes="called without attention_mask, as model(input_ids) is: OPT then builds a float mask of ones "
                   "and takes its cumsum for the position ids"),
    ZooModel("falcon", "decoder, rotary, multi-query (1 KV head)", build_falcon, "causal", kv_cache=True),
    ZooModel("gpt_bigcode", "decoder, learned positions, multi-query (1 KV head)", build_gpt_bigcode, "causal", kv_cache=True),
    ZooModel("qwen3_moe", "decoder MoE, top-2 of 4 experts", build_qwen3_moe, "causal", kv_cache=True),
    ZooModel("mixtral", "decoder MoE, top-2 of 4 experts, GQA", build_mixtral, "causal", kv_cache=True),
    ZooModel("bert", "encoder, learned positions, post-LayerNorm", build_bert, "encoder"),
    ZooModel("roberta", "encoder, positions from the non-pad count", build_roberta, "encoder"),
    ZooModel("distilbert", "encoder", build_distilbert, "encoder"),
    ZooModel("t5", "encoder-decoder, relative position bias, RMSNorm", build_t5, "seq2seq", kv_cache=True),
    ZooModel("bart", "encoder-decoder, learned positions", build_bart, "seq2seq", kv_cache=True),
    ZooModel("vit", "vision transformer, conv patch embedding", build_vit, "vision"),
    ZooModel("whisper", "speech encoder-decoder, conv front-end", build_whisper, "speech-seq2seq", kv_cache=True),
    ZooModel("wav2vec2", "speech encoder, conv feature extractor with GroupNorm, conv positions", build_wav2vec2, "speech-ctc"),
]
BY_NAME = {m.name: m for m in ZOO}


def build(entry: ZooModel, size: Size, dtype=torch.float32, device="cpu", **options) -> torch.nn.Module:
    """The model at ``size`` (seeded, eval mode); ``options`` go to its builder."""
    torch.manual_seed(0)
    model = entry.build(size, **options)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = 0
    return model.to(device=device, dtype=dtype).eval()


def greedy_generate(model: torch.nn.Module, ids: torch.Tensor, new_tokens: int):
    """Greedy ``generate`` with a static cache: exactly ``new_tokens`` tokens, with every step's
    logits. The caller compiles ``model.forward`` with the backend: generate()'s own compile
    leaves the prefill eager (not invariant) and uses stock Inductor, so it is disabled."""
    return model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        cache_implementation="static",
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        output_logits=True,
        return_dict_in_generate=True,
        disable_compile=True,
    )


# ---------------------------------------------------------------------------------------------
# The run: compile once (strict, dynamic=True, fullgraph), then every property on that compile.
# ---------------------------------------------------------------------------------------------


@dataclass
class ZooResult:
    """What one zoo model did under the backend (a JSON record for docs/models.md)."""

    name: str
    family: str
    status: str  # "invariant" | "refused" | "failed"
    reason: str = ""  # the refusal (BatchInvarianceError) or the failure, verbatim
    notes: str = ""  # the zoo entry's notes (what a check means for this model)
    rewritten: dict = field(default_factory=dict)  # custom op -> count, in the first forward graph
    graphs: int = 0  # aten graphs compiled over the whole run
    checks: list = field(default_factory=list)  # what was compared, in order
    seconds: float = 0.0

    def to_json(self) -> dict:
        record = {k: getattr(self, k) for k in ("name", "family", "notes", "status", "rewritten", "graphs", "checks")}
        return dict(record, reason=relative_paths(self.reason), seconds=round(self.seconds, 1))


def relative_paths(text: str) -> str:
    """File paths as the repository's or an installed package's (no machine-specific prefix)."""
    text = re.sub(r'[^\s"\[]*/(site|dist)-packages/', "", text)
    return text.replace(str(_REPO) + "/", "")


def batch_invariance_error(err: BaseException):
    """The BatchInvarianceError behind an exception Dynamo wrapped, or None."""
    from inductor_bi import BatchInvarianceError

    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, BatchInvarianceError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def custom_op_counts(gm: torch.fx.GraphModule) -> dict:
    counts: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_function" and str(n.target).startswith("inductor_bi."):
            name = str(n.target).removeprefix("inductor_bi.").removesuffix(".default")
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _to(inputs: dict, device, dtype=None) -> dict:
    out = {}
    for k, v in inputs.items():
        v = v.to(device)
        out[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
    return out


def _assert_equal(batched: torch.Tensor, alone: torch.Tensor, what: str):
    from inductor_bi.testing import assert_rows_equal

    assert_rows_equal(batched, alone, what)


def run_zoo_model(entry: ZooModel, size: Size, *, dtype=torch.float32, device="cpu", seed: int = 0,
                  tol_scale: float = 10.0) -> ZooResult:  # fmt: skip
    """Compile ``entry`` (strict, ``dynamic=True``, fullgraph) and check, on that one compile:
    row 0 alone == row 0 at a random position in batches of 5 and 2 (``torch.equal``); close to a
    float64 eager reference; and, with a KV cache, prefill + one decode step == the full forward.
    A BatchInvarianceError is a refusal (its message kept); any other error or a failed check is
    a failure (its message kept). Nothing is raised."""
    import time

    from inductor_bi.testing import assert_close_to_reference
    from tests._support import GraphRecorder

    start = time.perf_counter()
    result = ZooResult(entry.name, entry.family, "failed", notes=entry.notes)
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(seed)
    model = build(entry, size, dtype, device)
    target = _to(entry.make_inputs(size, 1, g, dtype), device)
    others = _to(entry.make_inputs(size, 4, g, dtype), device)
    positions = {b: int(torch.randint(0, b, (), generator=g)) for b in (5, 2)}
    with GraphRecorder() as rec, torch.no_grad():
        try:
            compiled = torch.compile(model, backend="batch_invariant", dynamic=True, fullgraph=entry.fullgraph)
            outs = {}
            for b in (5, 2):
                p = positions[b]
                rows = [select_row(others, i) for i in range(b - 1)]
                rows.insert(p, target)
                # Every call fills a cache where the model has one: the prefill's graph serves all.
                outs[b] = entry.pick(compiled(**stack_rows(rows), **entry.cache_kwargs()))[p : p + 1]
                if b == 5:
                    result.rewritten = custom_op_counts(rec.graphs[0]) if rec.graphs else {}
            alone = entry.pick(compiled(**target, **entry.cache_kwargs()))
            for b in (5, 2):
                _assert_equal(outs[b], alone, f"{entry.name}: row 0 at position {positions[b]} of {b} vs alone")
                result.checks.append(f"row alone == row at position {positions[b]} of {b}")
            reference = copy.deepcopy(model).double()
            want = entry.pick(reference(**_to(target, device, torch.float64), **entry.cache_kwargs()))
            assert_close_to_reference(alone, want, dtype=dtype, tol_scale=tol_scale)
            result.checks.append("close to float64 eager")
            if entry.kv_cache:
                _check_decode(entry, compiled, others, result, dtype, tol_scale)
            result.status = "invariant"
        except Exception as err:  # recorded, not raised: the caller asserts on the result
            refusal = batch_invariance_error(err)
            if refusal is not None:
                result.status, result.reason = "refused", str(refusal)
            else:
                result.reason = _failure(err)
        finally:
            result.graphs = len(rec.graphs)
            result.seconds = time.perf_counter() - start
            torch._dynamo.reset()
    return result


def _check_decode(entry: ZooModel, compiled, others: dict, result: ZooResult, dtype, tol_scale):
    """Two rows: prefill all but the last token with a cache, decode the last one against it;
    its logits == the full forward's logits at that position (batch 2, the dynamic graph)."""
    from inductor_bi.testing import assert_close_to_reference

    pair = {k: v[:2].clone() for k, v in others.items()}
    key = "input_ids" if entry.kind == "causal" else "decoder_input_ids"
    tokens = pair[key]
    n = tokens.shape[1]
    full = entry.pick(compiled(**pair, **entry.cache_kwargs()))[:, n - 1 : n]
    # Sliced inputs are cloned: a strided view would add a stride guard and a recompile.
    prefix = dict(pair, **{key: tokens[:, : n - 1].clone()})
    if entry.kind == "causal" and "attention_mask" in pair:
        prefix["attention_mask"] = pair["attention_mask"][:, : n - 1].clone()
    cache = compiled(**prefix, **entry.cache_kwargs()).past_key_values
    step = dict(pair, **{key: tokens[:, n - 1 :].clone()})
    decoded = entry.pick(compiled(**step, use_cache=True, past_key_values=cache))
    if not entry.decode_bitwise:
        assert_close_to_reference(decoded, full.double(), dtype=dtype, tol_scale=tol_scale)
        result.checks.append("decode step with the KV cache close to the full forward (see notes)")
        return
    _assert_equal(full, decoded, f"{entry.name}: decode step with the KV cache vs full forward")
    result.checks.append("decode step with the KV cache == full forward")


def _failure(err: BaseException) -> str:
    """The error's type and message, and where it was raised: the innermost frame of inductor_bi,
    else of transformers (where a model's code fails)."""
    frames = traceback.extract_tb(err.__traceback__)
    where = next((f"{f.filename}:{f.lineno}" for pkg in ("inductor_bi", "transformers") for f in reversed(frames)
                  if f"/{pkg}/" in f.filename), "")  # fmt: skip
    return f"{type(err).__name__}: {err}".strip() + (f" [{where}]" if where else "")


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------

_SOURCE_LINE = re.compile(r'File "[^"]+", line \d+')


def assert_clear_refusal(message: str):
    """A refusal names the aten op and the model's source line (what to rewrite)."""
    assert "aten." in message, f"the refusal names no aten op:\n{message}"
    assert _SOURCE_LINE.search(message) and "<unknown source line>" not in message, (
        f"the refusal names no source line:\n{message}"
    )


def check_result(result: ZooResult):
    """Every zoo model must compile and pass: each computes a row from that row alone (eval mode),
    so a refusal is a false one. A refusal must still name its op and source line."""
    if result.status == "refused":
        assert_clear_refusal(result.reason)
    assert result.status == "invariant", f"{result.name} {result.status}:\n{result.reason}"


# ---------------------------------------------------------------------------------------------
# Which models CI runs. A model's run is ~25-50 s of CPU (2-4 Inductor compiles: the dynamic
# batch, batch 1, the decode step(s)), so CI runs one of each feature the others do not share
# (about 4 min of CPU in all: 20-90 s each on 2 busy cores); the rest are marked slow and run with `-m slow`, e.g.
# `bash scripts/test.sh -m slow tests/test_model_zoo_decoders.py tests/test_model_zoo_others.py`.
# ---------------------------------------------------------------------------------------------

CI_MODELS = {
    "mistral",  # rotary, GQA, sliding window (Llama / Qwen3 / GPT-2 / Qwen3-MoE: tests/test_hf_models.py)
    "bloom",  # ALiBi through eager attention (baddbmm + softmax)
    "falcon",  # multi-query attention
    "bert",  # encoder
    "vit",  # convolution (patch embedding)
    "whisper",  # encoder-decoder with a KV cache, speech conv front-end
}


def zoo_params(kinds: set[str]) -> list:
    import pytest

    return [
        pytest.param(m.name, marks=() if m.name in CI_MODELS else (pytest.mark.slow,), id=m.name)
        for m in ZOO
        if m.kind in kinds
    ]

