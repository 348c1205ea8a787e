"""Hugging Face causal LMs through the backend on CUDA, bf16, at a moderate real size (random init).

The same properties as tests/test_hf_models.py: a sequence's logits alone equal its logits in a
batch (right-padded neighbours included), every attention is rewritten, greedy generate with a
static cache gives a prompt the same tokens and logits alone and in a batch, and the default
("grouped_mm") MoE experts path is never compiled silently. Sized to run in a few minutes on an
H100 (most of it is compilation). Written against transformers 5.17 to 5.23.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

transformers = pytest.importorskip("transformers")

from inductor_bi.passes.guard import find_violations  # noqa: E402
from inductor_bi.testing import assert_close_to_reference, assert_rows_equal  # noqa: E402
from tests._support import GraphRecorder  # noqa: E402
from tests._zoo import BY_NAME, HF_GPU, build, greedy_generate, right_padded_batch  # noqa: E402

SIZE = HF_GPU
VOCAB = SIZE.vocab
LENGTHS = (128, 77, 128, 100, 128, 64, 128, 128)  # right padding on rows 1, 3, 5
BATCH, SEQ = len(LENGTHS), max(LENGTHS)


def build_model(name: str, **options) -> torch.nn.Module:
    """The zoo's model (tests/_zoo.py) at the GPU size, bf16 on CUDA."""
    return build(BY_NAME[name], SIZE, torch.bfloat16, "cuda", **options)


def _batch():
    return tuple(t.cuda() for t in right_padded_batch(LENGTHS, VOCAB))


# The batch is a backed dynamic dim here, not an unbacked one as in tests/test_hf_models.py: on
# CUDA (seen with torch 2.11) Dynamo's fake run of SDPA guards on batch == 1 (Eq(u0, 1)) and fails
# for an unbacked batch before the backend sees the graph. So batch 1 compiles its own graph (two
# graphs per model) and every other batch size shares one.
GRAPHS_PER_MODEL = 2


@pytest.fixture(scope="module", params=["llama", "qwen3", "gpt2", "qwen3_moe"])
def forward_run(request):
    torch._dynamo.reset()
    name = request.param
    model = build_model(name)
    ids, mask = _batch()
    with GraphRecorder() as recorder, torch.no_grad():
        compiled = torch.compile(model, backend="batch_invariant", dynamic=True, fullgraph=True)

        def logits(rows, length=SEQ):
            return compiled(input_ids=ids[rows, :length].clone(), attention_mask=mask[rows, :length].clone()).logits

        full = logits(list(range(BATCH)))
        sub = logits([5, 6, 0])
        checks = [
            (full[6:7], logits([6]), "row 6 in a batch of 8 vs alone"),
            (full[1:2], logits([1]), "row 1 (right-padded) in a batch of 8 vs alone, same padding"),
            (full[6:7], sub[1:2], "row 6 at position 6 of 8 vs position 1 of 3"),
            (full[5:6, : LENGTHS[5]], sub[0:1, : LENGTHS[5]], "row 5 (padded) in a batch of 8 vs of 3"),
        ]
        unpadded = (full[1:2, : LENGTHS[1]], logits([1], LENGTHS[1]), "row 1 right-padded to 128 vs unpadded (77)")
        # float64 with the same (bf16-rounded) weights
        reference = copy.deepcopy(model).double()(input_ids=ids[:2], attention_mask=mask[:2]).logits
    return SimpleNamespace(
        name=name, model=model, full=full, checks=checks, unpadded=unpadded, reference=reference,
        graphs=recorder.graphs,
    )


def test_row_alone_equals_row_in_batch(forward_run):
    for batched, alone, what in forward_run.checks:
        assert_rows_equal(batched, alone, f"{forward_run.name}: {what}")


def test_right_padded_row_equals_unpadded_row(forward_run):
    """Length invariance: the same tokens padded to a longer sequence give the same logits.
    This caught the attention kernel's row sum following the register layout that Triton picked
    per specialization (a 128- or 80-key call vs a 77-key one): tools/diagnose/diagnose_length.py."""
    assert_rows_equal(*forward_run.unpadded[:2], f"{forward_run.name}: {forward_run.unpadded[2]}")


def test_logits_match_float64_eager(forward_run):
    r = forward_run
    for row in range(2):
        n = LENGTHS[row]
        assert_close_to_reference(r.full[row, :n], r.reference[row, :n], dtype=torch.bfloat16, tol_scale=4)


def test_every_attention_rewritten_nothing_unsafe_left(forward_run):
    r = forward_run
    assert len(r.graphs) == GRAPHS_PER_MODEL
    for gm in r.graphs:
        targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
        assert targets.count("inductor_bi.fixed_split_attention.default") == r.model.config.num_hidden_layers
        assert not [t for t in targets if "scaled_dot_product" in t or "flash_attention" in t or "grouped_mm" in t]
        assert find_violations(gm) == []


MAX_NEW_TOKENS = 16


@pytest.mark.parametrize("name", ["llama", "qwen3_moe"])
def test_greedy_generate_static_cache_prompt_alone_equals_in_batch(name):
    """generate()'s own auto-compile leaves the prefill uncompiled (eager, not invariant) and
    uses inductor: compile model.forward with the backend and disable generate's compile."""
    torch._dynamo.reset()
    model = build_model(name)
    model.forward = torch.compile(model.forward, backend="batch_invariant", dynamic=True)
    prompts = torch.randint(1, VOCAB, (4, 48), generator=torch.Generator().manual_seed(2)).cuda()

    with torch.no_grad():
        batched = greedy_generate(model, prompts.clone(), MAX_NEW_TOKENS)
        for row in (0, 3):
            alone = greedy_generate(model, prompts[row : row + 1].clone(), MAX_NEW_TOKENS)
            assert torch.equal(alone.sequences[0], batched.sequences[row])
            for step, (a, b) in enumerate(zip(alone.logits, batched.logits)):
                assert_rows_equal(b[row : row + 1], a, f"{name}: row {row}, generated token {step}")


def test_greedy_generate_static_cache_in_cuda_graphs_equals_plain_launches():
    """generate() on a static cache with model.forward compiled in mode="reduce-overhead" (CUDA
    graph replays): the same tokens and logits as the plain compile, alone and in a batch."""
    torch._dynamo.reset()
    model = build_model("llama")
    prompts = torch.randint(1, VOCAB, (4, 48), generator=torch.Generator().manual_seed(3)).cuda()
    plain = torch.compile(model.forward, backend="batch_invariant", dynamic=True)
    graphed = torch.compile(model.forward, backend="batch_invariant", dynamic=True, mode="reduce-overhead")
    runs = {}
    with torch.no_grad():
        for name, forward in (("plain", plain), ("graphed", graphed)):
            model.forward = forward
            runs[name] = (greedy_generate(model, prompts.clone(), MAX_NEW_TOKENS), greedy_generate(model, prompts[:1].clone(), MAX_NEW_TOKENS))
    for (want, got), what in zip(zip(runs["plain"], runs["graphed"]), ("batch of 4", "row 0 alone")):
        assert torch.equal(want.sequences, got.sequences), what
        for step, (a, b) in enumerate(zip(want.logits, got.logits)):
            assert_rows_equal(b, a, f"reduce-overhead vs plain, {what}, generated token {step}")
    batched, alone = runs["graphed"]
    assert torch.equal(alone.sequences[0], batched.sequences[0])


def test_moe_default_grouped_mm_is_invariant_or_refused():
    """bf16 on CUDA: HF's grouped_mm path runs histc / cumsum on integers (exact) and
    aten._grouped_mm (M per expert follows the batch). Strict mode must refuse it or make it
    invariant, never compile it silently."""
    from inductor_bi import passes

    torch._dynamo.reset()
    model = build_model("qwen3_moe", experts_implementation="grouped_mm")
    compiled = torch.compile(model, backend="batch_invariant", dynamic=True, fullgraph=True)
    ids, mask = _batch()

    def logits(rows):
        return compiled(input_ids=ids[rows].clone(), attention_mask=mask[rows].clone()).logits

    with torch.no_grad():
        try:
            full = logits(list(range(BATCH)))
        except Exception as err:  # refused: must be the strict guard
            assert "BatchInvarianceError" in f"{err}", err
            assert not any(p.__module__.endswith("passes.moe") for p in passes.PASSES)
            return
        for row in (0, 6):
            assert_rows_equal(full[row : row + 1], logits([row]), f"grouped_mm MoE: row {row} vs alone")


def test_llama_trains_under_strict_mode_with_the_same_gradients_every_run():
    """A training step (labels -> loss inside the graph, loss.backward()) compiles under strict
    mode (the embedding gradient summed in a fixed order, launched by Inductor) and gives the
    same gradient bits on a second run, and the same as the custom ops' launches."""
    torch._dynamo.reset()
    model = build_model("llama").train()
    ids = torch.randint(1, VOCAB, (4, 48), generator=torch.Generator().manual_seed(4)).cuda()
    launched = torch.compile(model.forward, backend="batch_invariant", dynamic=True, options={"strict": True})
    dispatched = torch.compile(model.forward, backend="batch_invariant", dynamic=True, options={"strict": True, "inductor_launches": False})

    def gradients(forward):
        model.zero_grad(set_to_none=True)
        forward(input_ids=ids, labels=ids).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    first = gradients(launched)
    for what, grads in (("second run", gradients(launched)), ("custom ops", gradients(dispatched))):
        for name, g in first.items():
            assert torch.equal(grads[name], g), f"{name}: gradient differs ({what})"
