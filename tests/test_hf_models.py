"""Hugging Face causal LMs through the backend (random init, tiny configs, CPU / Triton interpreter).

For Llama, Qwen3, GPT-2 (LayerNorm, GELU, Conv1D) and Qwen3-MoE: a sequence's logits computed alone
equal (torch.equal) its logits inside a batch of other random sequences, right-padded ones
included; every attention call went to ``fixed_split_attention``, no unsafe op is left, and the
whole forward is one graph (``fullgraph=True``: no Python fallback runs outside the backend).
Greedy ``generate`` with a static cache gives a prompt the same tokens and logits alone and in a
batch.

Cost control (the interpreter is slow, an Inductor compile is 10-30 s): one compile per model for
the forward tests where possible. The batch dimension is marked unbacked, so the same graph serves
batch 1 and batch 4. GPT-2's forward cannot take an unbacked batch (it reshapes the attention mask
by a batch it reads from input_ids: a data-dependent guard), so it runs plain ``dynamic=True``,
which specializes batch 1 into a second graph: both modes are covered.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

transformers = pytest.importorskip("transformers")

from inductor_bi.kernels import reduction_table  # noqa: E402
from inductor_bi.passes.guard import find_violations  # noqa: E402
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal  # noqa: E402
from tests._support import GraphRecorder  # noqa: E402
from tests._zoo import BY_NAME, Size, build, greedy_generate, right_padded_batch  # noqa: E402

# Batch of 4 right-padded sequences (lengths 12, 7, 12, 9; pad id 0, attention_mask 0 there).
LENGTHS = (12, 7, 12, 9)
# GQA (4 query heads, 2 KV heads): HF passes enable_gqa=True (or repeat_kv) to SDPA. 64 positions.
TINY = Size(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=128, seq=max(LENGTHS),
            experts=4, moe_intermediate=32)  # fmt: skip
VOCAB = TINY.vocab


def build_model(name: str, **options) -> torch.nn.Module:
    """The zoo's model (tests/_zoo.py) at this file's size."""
    return build(BY_NAME[name], TINY, **options)


def _unbacked_batch(*tensors, mark=True):
    for t in tensors:
        if mark:
            torch._dynamo.decorators.mark_unbacked(t, 0)
    return tensors


# GPT-2: `attention_mask.view(batch_size, -1)` with batch_size read from input_ids -> Dynamo cannot
# prove 12 * u0 // u1 == 12 for two unbacked batch symbols.
UNBACKED_BATCH = {"llama": True, "qwen3": True, "gpt2": False, "qwen3_moe": True}


def _batch():
    return right_padded_batch(LENGTHS, VOCAB)


@pytest.fixture(scope="module", params=["llama", "qwen3", "gpt2", "qwen3_moe"])
def forward_run(request):
    """One model compiled once; the batch, two rows alone and a sub-batch of 2 run through it."""
    torch._dynamo.reset()
    model = build_model(request.param)
    ids, mask = _batch()
    with GraphRecorder() as recorder, torch.no_grad():
        compiled = torch.compile(model, backend="batch_invariant", dynamic=True, fullgraph=True)

        def logits(rows, length=None):
            length = length or ids.shape[1]
            x, m = _unbacked_batch(
                ids[rows, :length].clone(), mask[rows, :length].clone(), mark=UNBACKED_BATCH[request.param]
            )
            return compiled(input_ids=x, attention_mask=m).logits

        out = SimpleNamespace(
            name=request.param,
            model=model,
            ids=ids,
            mask=mask,
            full=logits([0, 1, 2, 3]),
            row1_alone=logits([1], length=LENGTHS[1]),  # alone: no padding at all
            row2_alone=logits([2]),
            rows23=logits([2, 3]),
        )
    out.graphs = recorder.graphs
    return out


def test_row_alone_equals_row_in_batch(forward_run):
    r = forward_run
    n1 = LENGTHS[1]
    assert_rows_equal(r.full[1:2, :n1], r.row1_alone, f"{r.name}: row 1 (right-padded in the batch) vs alone")
    assert_rows_equal(r.full[2:3], r.row2_alone, f"{r.name}: row 2 in a batch of 4 vs alone")
    assert_rows_equal(r.full[2:3], r.rows23[0:1], f"{r.name}: row 2 at position 2 of 4 vs position 0 of 2")
    n3 = LENGTHS[3]
    assert_rows_equal(r.full[3:4, :n3], r.rows23[1:2, :n3], f"{r.name}: row 3 in a batch of 4 vs of 2")


def test_logits_match_float64_eager(forward_run):
    r = forward_run
    reference = copy.deepcopy(r.model).double()
    with torch.no_grad():
        want = reference(input_ids=r.ids, attention_mask=r.mask).logits
    for row, n in enumerate(LENGTHS):  # padded positions' logits are not meaningful
        assert_close_to_reference(r.full[row, :n], want[row, :n], dtype=torch.float32, tol_scale=10)


def test_one_graph_all_attention_rewritten_nothing_unsafe_left(forward_run):
    r = forward_run
    # fullgraph=True: one graph per call signature; an unbacked batch serves every call (batch 4,
    # 1, 2; L 12, 7) with one graph, plain dynamic=True adds a batch-1 graph.
    assert len(r.graphs) == (1 if UNBACKED_BATCH[r.name] else 2), f"{r.name}: {len(r.graphs)} graphs compiled"
    for gm in r.graphs:
        _check_graph(r, gm)


def _check_graph(r, gm):
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    attention = [t for t in targets if t == "inductor_bi.fixed_split_attention.default"]
    assert len(attention) == r.model.config.num_hidden_layers
    assert not [t for t in targets if "scaled_dot_product" in t or "flash_attention" in t]
    assert find_violations(gm) == []
    assert "inductor_bi.invariant_matmul.default" in targets
    # No op on a host scalar feeds our ops: Inductor compiles a C++ kernel for one even in a GPU
    # model, where stock folds the scalar into a GPU kernel (a norm's unspecialized eps widened
    # on the host cost ~37 s of a llama-1b compile, docs/decisions.md, v12). Host scalars feeding aten ops
    # (HF's rotary attention_scaling) are the model's, the same as stock.
    host_ops_feeding_ours = [
        n.format_node() for n in gm.graph.nodes
        if n.op == "call_function" and isinstance(v := n.meta.get("val"), torch.Tensor) and v.dim() == 0
        and any(str(u.target).startswith("inductor_bi.") for u in n.users)
    ]  # fmt: skip
    assert host_ops_feeding_ours == []
    rms = "inductor_bi.invariant_rms_norm_rows.default" if reduction_table.REDUCTION_FUSE_RMS_NORM else "inductor_bi.invariant_mean.default"
    norm = "inductor_bi.invariant_layer_norm.default" if r.name == "gpt2" else rms
    assert norm in targets
    if r.name == "qwen3_moe":  # router softmax and the top-k combine
        assert {"inductor_bi.invariant_softmax.default", "inductor_bi.invariant_sum.default"} <= set(targets)


# ---------------------------------------------------------------------------------------------
# Greedy generation with a static cache.
#
# generate()'s own auto-compile (CompileConfig / compile_config) compiles only the decode steps:
# the prefill runs uncompiled, i.e. as plain eager PyTorch, which is not batch-invariant. So the
# test compiles model.forward itself with the backend (prefill and decode both go through it) and
# passes disable_compile=True (on CUDA generate would otherwise wrap the forward in its own
# inductor compile). Plain dynamic=True: batch 1 and batch 3 get separate graphs, prefill and
# decode too (4 compiles).
# ---------------------------------------------------------------------------------------------

MAX_NEW_TOKENS = 4


def test_greedy_generate_static_cache_prompt_alone_equals_in_batch():
    torch._dynamo.reset()
    model = build_model("llama")
    model.forward = torch.compile(model.forward, backend="batch_invariant", dynamic=True)
    prompts = torch.randint(1, VOCAB, (3, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        batched = greedy_generate(model, prompts.clone(), MAX_NEW_TOKENS)
        for row in (1, 2):
            alone = greedy_generate(model, prompts[row : row + 1].clone(), MAX_NEW_TOKENS)
            assert torch.equal(alone.sequences[0], batched.sequences[row])
            assert len(alone.logits) == len(batched.logits) == MAX_NEW_TOKENS
            for step, (a, b) in enumerate(zip(alone.logits, batched.logits)):
                assert_rows_equal(b[row : row + 1], a, f"row {row}, generated token {step}")


# ---------------------------------------------------------------------------------------------
# MoE with HF's default experts implementation ("grouped_mm").
#
# Its aten graph: topk (router), sort (group tokens by expert), index (gather), histc (tokens per
# expert, over float expert ids on CPU/MPS, int ids on CUDA), cumsum(dtype=int32) (group offsets),
# a grouped matmul (transformers::grouped_mm_fallback for fp32 weights, aten._grouped_mm for bf16),
# index_put (inverse permutation, integer, no accumulate), index, sum over top-k.
# The grouped matmul runs one aten mm per expert with M = that expert's token count, which depends
# on the batch: not invariant. The backend must either rewrite it (passes/moe.py, when
# registered) or refuse it in strict mode; it must never compile it silently.
# ---------------------------------------------------------------------------------------------


def _scatter_pass_registered() -> bool:
    from inductor_bi import passes

    return any(p.__module__.endswith("passes.moe") for p in passes.PASSES)


def test_moe_default_grouped_mm_is_invariant_or_refused():
    torch._dynamo.reset()
    model = build_model("qwen3_moe", experts_implementation="grouped_mm")
    assert model.config._experts_implementation == "grouped_mm"
    compiled = torch.compile(model, backend="batch_invariant", dynamic=True, fullgraph=True)
    ids, mask = _batch()
    with torch.no_grad():

        def logits(rows):
            x, m = _unbacked_batch(ids[rows].clone(), mask[rows].clone())
            return compiled(input_ids=x, attention_mask=m).logits

        if not _scatter_pass_registered():
            with pytest.raises(Exception, match="BatchInvarianceError"):
                logits([0, 2, 3])
            return
        full = logits([0, 2, 3])
        assert_rows_equal(full[1:2], logits([2]), "grouped_mm MoE: row 2 in a batch of 3 vs alone")
        reference = copy.deepcopy(model).double()
        reference.set_experts_implementation("batched_mm")  # eager grouped_mm has no float64 kernel
        want = reference(input_ids=ids[:1], attention_mask=mask[:1]).logits
    assert_close_to_reference(full[0], want[0], dtype=torch.float32, tol_scale=10)
