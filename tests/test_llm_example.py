"""examples/llm.py on CPU: a served prompt's logits do not depend on its batch, the sampler's
log-probs are the trainer's, and assert_batch_invariant passes / names the diverging layer.

Tiny model, small workload: the backend's kernels run in Triton's interpreter here. The model is
made undecided at each of the target's generated tokens (plant_near_ties, as the CPU demo does),
so that a logit's last bit decides the token: under the backend the completions still agree;
under stock torch.compile they differ on this CPU (measured: the same split in every run; a CPU
with other BLAS kernels may move other bits).
"""

import math

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._dynamo.utils import counters

from inductor_bi.onpolicy import assert_on_policy, sampler_trainer_mismatch
from inductor_bi.testing import (
    ModuleDivergence,
    assert_batch_invariant,
    batch_sizes,
    find_first_diverging_module,
    row_positions,
    sub_batches,
)
from tests._support import load_example, load_model_file


llm = load_example("llm")
llama = load_model_file()  # examples/model.py

# Three submissions of one 12-token prompt (prefilled in chunks of up to 5) among three companions.
WORKLOAD = llm.Workload(runs=3, requests=3, target_prompt_len=12, prompt_len=(3, 8), max_new_tokens=(2, 4), target_new_tokens=3, seed=3)
ENGINE = llm.EngineConfig(max_tokens_per_step=12, max_prefill_chunk=5, seed=3)


def target_prompt(workload):
    return next(r.prompt for r in workload.build(llama.ModelArgs().vocab_size, llama.ModelArgs().max_batch) if r.is_target)


@pytest.fixture(scope="module")
def model():
    m = llama.build_model(llama.ModelArgs(), "cpu", torch.float32, seed=0)
    llm.plant_near_ties(m, target_prompt(WORKLOAD), WORKLOAD.target_new_tokens)
    return m


def test_near_ties_sit_on_the_decision_boundary_and_move_nothing_else():
    """Every point of both branches of the first 3 generated tokens: the top two logits are less
    than one ulp apart in exact arithmetic, the higher id ahead (argmax gives an exact tie to the
    lower id); every other logit there, and every weight but the runner-up rows, is unchanged."""
    m = llama.build_model(llama.ModelArgs(), "cpu", torch.float32, seed=0)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    prompt = target_prompt(WORKLOAD)
    ties = llm.plant_near_ties(m, prompt, 3)
    assert sorted(len(t.generated) for t in ties) == [0, 1, 1, 2, 2, 2, 2]  # both branches of each
    assert {k for k, v in m.state_dict().items() if not torch.equal(v, before[k])} == {"lm_head.weight"}
    exact = m.double()
    hidden = []
    exact.lm_head.register_forward_hook(lambda _m, inputs, _out: hidden.append(inputs[0][0, -1]))
    for tie in ties:
        with torch.no_grad():
            exact(torch.tensor([prompt + tie.generated]))
        h = hidden.pop()
        now, then = exact.lm_head.weight @ h, before["lm_head.weight"].double() @ h
        lo, hi = tie.tokens
        assert set(now.topk(2).indices.tolist()) == {lo, hi}
        assert 0.0 < tie.margin_ulps < 1.0 and (now[hi] - now[lo]).item() == pytest.approx(tie.margin_ulps * tie.ulp, rel=1e-9)
        assert tie.margin_before > 1e4 * tie.ulp  # untouched, this model is far from undecided
        # The runner-up's logit moved; the rows moved for the other points left every other logit
        # here as it was, up to their rounding to fp32 (under an ulp).
        moved = torch.nonzero((now - then).abs() > 1e-6).flatten().tolist()
        assert len(moved) == 1 and moved[0] in (lo, hi), moved
        assert (now - then).abs().index_fill(0, torch.tensor(moved), 0).max() < tie.ulp


@pytest.fixture(scope="module")
def compiled(model):
    torch._dynamo.reset()
    return llm.compile_model("batch_invariant", model)


@pytest.fixture(scope="module")
def served(model, compiled):
    requests, engine = llm.serve(compiled, model, WORKLOAD, ENGINE, "cpu")
    return requests, engine


def test_served_prompt_has_one_completion_and_identical_logits(served):
    requests, engine = served
    runs = llm.compare_target_runs(requests)
    # The experiment is not vacuous: the runs were batched differently, prefill mixed with decode.
    assert runs["distinct_batch_histories"] == WORKLOAD.runs
    assert engine.stats["mixed_steps"] > 0
    assert len(set(engine.stats["step_sizes"])) > 2
    assert all(len(r.prefill_chunks) > 1 for r in requests if r.is_target)  # chunked prefill
    assert runs["unique_completions"] == 1  # with a near-tie at every generated token
    assert runs["logits_differing_runs"] == 0, runs["first_differing_step_per_run"]


def test_sampler_logprobs_equal_trainer_logprobs(served, compiled):
    requests, _ = served
    report = llm.check_onpolicy(compiled, requests, "cpu")  # batches of 4, shuffled
    assert report.on_policy, report
    assert report.num_tokens == sum(r.max_new_tokens for r in requests)


def test_onpolicy_report_names_the_first_differing_token(served, compiled):
    """Two sequences in one trainer batch (batched unlike the check above); one log-prob one ulp
    off: exactly that token is reported, every other one is bitwise equal."""
    requests, _ = served
    seqs = [torch.tensor(r.sequence) for r in requests[:2]]
    logprobs = [torch.stack(r.logprobs).clone() for r in requests[:2]]
    logprobs[1][2] = torch.nextafter(logprobs[1][2], torch.tensor(-math.inf))  # one ulp off
    report = sampler_trainer_mismatch(compiled.forward, seqs, logprobs, logprobs_fn=compiled.logprobs)
    assert (report.num_differing, report.num_tokens) == (1, sum(len(lp) for lp in logprobs))
    first = report.first_difference
    assert (first.sequence, first.position) == (1, len(seqs[1]) - len(logprobs[1]) + 2)
    assert first.token == int(seqs[1][first.position]) and not report.on_policy
    with pytest.raises(AssertionError, match="off-policy: 1 of"):
        assert_on_policy(compiled.forward, seqs, logprobs, logprobs_fn=compiled.logprobs)


def test_assert_batch_invariant_passes_on_compiled_model(compiled):
    tokens = torch.randint(0, 256, (3, 8))
    assert_batch_invariant(compiled.forward, tokens)  # every row alone, and in sub-batches of 2


@given(data=st.data())
@settings(max_examples=2)
def test_any_sub_batch_row_equals_full_batch_row(compiled, data):
    batch = data.draw(batch_sizes(2, 5), label="batch")
    tokens = torch.randint(0, 256, (batch, 8))
    rows = data.draw(sub_batches(batch), label="sub-batch rows")
    with torch.no_grad():
        full, sub = compiled.forward(tokens), compiled.forward(tokens[rows.start : rows.stop])
    row = data.draw(row_positions(len(rows)), label="row in sub-batch")
    assert torch.equal(full[rows.start + row], sub[row])


class BatchStatsRMSNorm(nn.Module):
    """A deliberate bug: the statistics are taken over the whole batch, not per row."""

    def __init__(self, norm):
        super().__init__()
        self.weight, self.eps = norm.weight, norm.eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean((0, -1), keepdim=True) + self.eps) * self.weight


def test_assert_batch_invariant_names_the_first_diverging_layer():
    model = llama.build_model(llama.ModelArgs(), "cpu", torch.float32, seed=0)
    model.layers[0].input_layernorm = BatchStatsRMSNorm(model.layers[0].input_layernorm)
    tokens = torch.randint(0, 256, (3, 8))
    with pytest.raises(AssertionError) as err:
        assert_batch_invariant(model, tokens)
    message = str(err.value)
    assert "row 0 of a batch of 3 differs" in message
    assert "first diverging submodule: 'layers.0.input_layernorm' (BatchStatsRMSNorm)" in message
    assert "the 1 module outputs before it were equal" in message  # embed_tokens


def test_diverging_layer_is_found_through_a_compiled_module():
    """The hooks must fire inside a torch.compile'd module (a fresh compile with the same
    backend: here Dynamo's eager backend, to keep the test fast)."""
    model = llama.build_model(llama.ModelArgs(n_layers=1), "cpu", torch.float32, seed=0)
    model.layers[0].input_layernorm = BatchStatsRMSNorm(model.layers[0].input_layernorm)
    compiled = torch.compile(model, backend="eager", dynamic=True)
    tokens = torch.randint(0, 256, (2, 6))
    with torch.no_grad():
        compiled(tokens)  # compiled and cached without hooks first, as in a user's test
    found = find_first_diverging_module(compiled, (tokens,), range(0, 1), 0)
    assert isinstance(found, ModuleDivergence), found
    assert found.name == "layers.0.input_layernorm"


def test_cache_read_in_place_and_fused_norms_give_the_same_step(model, graphs):
    """The graph knobs ATTENTION_FOLD_KV_GATHER, REDUCTION_FOLD_RESIDUAL_ADD and REDUCTION_FUSE_RMS_NORM
    on (a second compilation of a copy of the model): the serving step's logits are bitwise the
    knob-off step's, the gathers and norms are gone from the graph, and a cache slot out of range
    raises as torch's indexing would."""
    import copy
    import functools

    from inductor_bi.backend import batch_invariant
    from inductor_bi.kernels import knobs

    models = [copy.deepcopy(model), copy.deepcopy(model)]
    for m in models:
        m.setup_kv_cache()
    steps = [torch.compile(m.step, backend=functools.partial(batch_invariant), dynamic=True) for m in models]
    args = llama.ModelArgs()
    b = 3
    call = (torch.randint(0, args.vocab_size, (b,)), torch.arange(b) % args.max_batch, torch.full((b,), 6), 9)
    graph_knobs = dict(ATTENTION_FOLD_KV_GATHER=True, REDUCTION_FOLD_RESIDUAL_ADD=True, REDUCTION_FUSE_RMS_NORM=True)
    with torch.no_grad():
        with knobs.overridden(**{name: False for name in graph_knobs}):
            plain = steps[0](*call)
        with knobs.overridden(**graph_knobs):
            folded = steps[1](*call)
            with pytest.raises(RuntimeError, match="KV cache slot is out of range|index out of bounds"):
                steps[1](call[0], torch.tensor([0, 1, args.max_batch]), *call[2:])
    assert torch.equal(folded, plain)
    folded_rewrites = [r.original for r in graphs[1][1]]
    layers = len(models[1].layers)
    assert folded_rewrites.count("fixed_split_attention of cache[rows]") == layers
    assert sum(r.startswith("RMSNorm") for r in folded_rewrites) == 2 * layers + 1  # two a layer, and the final norm
    assert not [r for r in [r.original for r in graphs[0][1]] if "cache[rows]" in r or r.startswith("RMSNorm")]


# Arguments of our ops that may be a 0-dim CPU tensor while the rest of the call is on the GPU:
# the op reads them on the host. Any other tensor argument is handed to a kernel as a pointer.
HOST_READ_ARGUMENTS = {"eps_tensor"}


def test_host_scalars_reach_our_ops_only_where_read_on_the_host(model, graphs):
    """Under dynamic=True Dynamo passes a float it does not specialize (a model's eps) as a 0-dim
    CPU tensor. On a GPU, such a tensor handed to a Triton kernel as a pointer fails at launch;
    on the CPU, where these tests run, it would not, so the graph is checked instead: in the
    serving step, every 0-dim tensor argument of an inductor_bi op is one the op reads on the
    host (the fused RMSNorm's eps crashed on the H200 before it was)."""
    import copy
    import functools

    from inductor_bi.backend import batch_invariant

    m = copy.deepcopy(model)
    m.setup_kv_cache()
    step = torch.compile(m.step, backend=functools.partial(batch_invariant), dynamic=True)
    args = llama.ModelArgs()
    b = 3
    with torch.no_grad():
        step(torch.randint(0, args.vocab_size, (b,)), torch.arange(b) % args.max_batch, torch.full((b,), 6), 9)
    checked = 0
    for gm, _rewrites in graphs:
        for node in gm.graph.nodes:
            if node.op != "call_function" or not str(node.target).startswith("inductor_bi."):
                continue
            schema = node.target._schema
            bound = dict(zip((a.name for a in schema.arguments), node.args)) | dict(node.kwargs)
            for name, value in bound.items():
                val = value.meta.get("val") if isinstance(value, torch.fx.Node) else None
                if isinstance(val, torch.Tensor) and val.dim() == 0:
                    assert name in HOST_READ_ARGUMENTS, f"{node.target} gets a 0-dim tensor as {name!r}"
                    checked += 1
    assert checked > 0, "the step no longer passes eps as a tensor: the check checks nothing"


def test_one_compilation_serves_every_batch_size(model):
    """The speed issue's "one compilation for all batch sizes": compiled with dynamic=True, the
    first prefill and decode step with more than one row compile their graphs and every later
    batch size (and prompt / KV length) reuses them: nothing the backend rewrites guards on the
    batch. (A batch of 1 is Dynamo's own 0/1 specialization, stock torch.compile's as well.)"""
    torch._dynamo.reset()
    model.setup_kv_cache()
    prefill = torch.compile(model, backend="batch_invariant", dynamic=True)
    step = torch.compile(model.step, backend="batch_invariant", dynamic=True)

    def run(batch, length):
        prefill(torch.randint(0, 256, (batch, length)))
        step(torch.randint(0, 256, (batch,)), torch.arange(batch), torch.full((batch,), length), length + 1)

    counters.clear()
    with torch.no_grad():
        run(2, 8)
        graphs = counters["stats"]["unique_graphs"]
        for batch, length in [(5, 11), (3, 6)]:
            run(batch, length)
    assert graphs == 2 and counters["stats"]["unique_graphs"] == graphs, dict(counters["stats"])


def test_stock_compile_serves_the_same_prompt_differently(model):
    """The other side of the demo (last in this file: it resets Dynamo): stock torch.compile on
    the same workload and near-ties gives the submissions differing logits, and so differing
    completions. On the CPU, a matmul of 1-3 rows takes another BLAS path (another summation
    order) than one of 4 or more, and the engine's steps range over both."""
    torch._dynamo.reset()
    requests, _ = llm.serve(llm.compile_model("stock", model), model, WORKLOAD, ENGINE, "cpu")
    runs = llm.compare_target_runs(requests)
    assert runs["logits_differing_runs"] > 0, runs
    assert runs["unique_completions"] > 1, runs
