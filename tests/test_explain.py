"""inductor_bi.explain and its CLI: what the backend rewrites, keeps and rejects, without running
any kernel; and the ``inductor_bi`` logger showing rewrites during a normal compile."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import inductor_bi
from inductor_bi.__main__ import main as cli_main
from inductor_bi.kernels import attention as attention_kernels
from inductor_bi.kernels import attention_table, knobs, matmul_table, reduction_table
from inductor_bi.kernels import matmul as matmul_kernels
from inductor_bi.kernels import reduction as reduction_kernels
from inductor_bi.passes.guard import EXACT_REDUCTIONS

explain_module = sys.modules["inductor_bi.explain"]  # the name inductor_bi.explain is the function
REPO = Path(__file__).resolve().parents[1]


class Small(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        h = self.norm(self.lin(x))
        p = torch.softmax(h, dim=-1)
        return p.argmax(dim=-1), p.index_add(-1, torch.arange(p.shape[-1]), p)


def small_model_factory():
    """The CLI's factory for ``Small`` (python -m inductor_bi explain tests/test_explain.py:...)."""
    return Small(), (torch.randn(4, 16),)


class Attention(nn.Module):
    def __init__(self, d=32, heads=2, dropout=0.0):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.heads, self.dropout = heads, dropout

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout)


@pytest.fixture
def no_kernel_runs(monkeypatch):
    """Any Triton kernel launch (compiled or interpreted) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("explain launched a kernel")

    for module in (matmul_kernels, reduction_kernels, attention_kernels):
        monkeypatch.setattr(module, "launch", refuse)


def by_replacement(report, replacement):
    return [r for _, r in report.rewrites if r.replacement == f"inductor_bi.{replacement}.default"]


@pytest.fixture(scope="module")
def small_report():
    with torch.no_grad():
        return inductor_bi.explain(Small(), torch.randn(4, 16))


def test_lists_matmul_norm_softmax_rewrites_with_cuda_configs_and_source_lines(small_report):
    (mm,) = by_replacement(small_report, "invariant_matmul")
    assert mm.original == "aten.addmm.default"
    cuda = matmul_table.MATMUL_CUDA[torch.float32]
    assert mm.details["tile"] == f"{cuda.block_m}x{cuda.block_n}x{cuda.block_k}"
    assert mm.details["k_chunk"] == cuda.k_chunk
    (ln,) = by_replacement(small_report, "invariant_layer_norm")
    (sm,) = by_replacement(small_report, "invariant_softmax")
    assert ln.details["R"] == sm.details["R"] == 16
    assert ln.details["block_r"] == reduction_table.reduction_config(16, torch.float32, torch.device("cuda")).block_r
    for r in (mm, ln):
        assert "test_explain.py" in r.source and "h = self.norm(self.lin(x))" in r.source
    assert "p = torch.softmax(h, dim=-1)" in sm.source
    assert mm.dtype == "torch.float32" and mm.shapes[1][-1] == 16


def test_keeps_exact_reductions_with_their_reason(small_report):
    kept = {k.op: k for _, k in small_report.kept}
    assert kept["aten.argmax.default"].why == EXACT_REDUCTIONS["argmax"]
    assert "p.argmax(dim=-1)" in kept["aten.argmax.default"].source


def test_reports_index_add_as_a_violation_and_the_strict_error_without_raising(small_report):
    ((graph, v),) = small_report.violations
    assert v.op == "aten.index_put.default" and "atomics" in v.why
    assert graph == "graph 0 inference"
    assert "aten.index_put.default" in small_report.guard_error
    assert "p.index_add(-1" in small_report.guard_error


def test_renders_text_and_markdown_with_a_unified_diff(small_report):
    text, md = small_report.to_text(), small_report.to_markdown()
    for out in (text, md):
        assert "inductor_bi.invariant_matmul.default" in out and "aten.index_put.default" in out
        assert "split_reductions" in out  # the pinned knobs
        assert "-        addmm" in out and "+        invariant_matmul_default" in out
    assert "```diff" in md and "| `split_reductions` | `False` |" in md
    relative = small_report.to_text(root=str(REPO))
    assert "tests/test_explain.py:" in relative and str(REPO) + "/" not in relative


def test_reports_every_speed_knob_with_its_value(small_report):
    """The speed knobs of the kernel tables (kernels/knobs.py) are in both
    renderings with the values the run used."""
    text, md = small_report.to_text(), small_report.to_markdown()
    assert [name for name, _, _ in small_report.speed_knobs] == list(knobs.SPEED_KNOBS)
    for name, value, _ in small_report.speed_knobs:
        assert value == getattr(knobs.owner(name), name)
        assert f"| `{name}` | `{value!r}` |" in md
        assert name in text


def test_nothing_runs_and_the_model_is_untouched(no_kernel_runs):
    model = Small()
    model.register_buffer("calls", torch.zeros(()))
    original = model.forward

    def forward_counting(x):
        model.calls.add_(1)
        return original(x)

    model.forward = forward_counting
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = inductor_bi.explain(model, torch.randn(4, 16))  # grad enabled: forward + backward
    assert {g.kind for g in report.graphs} >= {"forward", "backward"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_training_reports_the_backward_graph():
    report = inductor_bi.explain(nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)), torch.randn(3, 8))
    backward = next(g for g in report.graphs if g.kind == "backward")
    assert {r.replacement for r in backward.rewrites} >= {"inductor_bi.invariant_matmul.default", "inductor_bi.invariant_sum.default"}
    assert "+" in backward.diff and "invariant_matmul" in backward.diff


def test_backward_is_captured_where_torch_compiles_it_lazily(monkeypatch):
    monkeypatch.setattr(explain_module, "_EAGER_BACKWARD", False)
    report = inductor_bi.explain(nn.Linear(8, 4), torch.randn(3, 8), dynamic=False)  # no SymInt: lazy
    assert [g.name for g in report.graphs] == ["graph 0 dynamo", "graph 0 forward", "graph 0 backward"]
    backward = report.graphs[-1]
    assert [r.original for r in backward.rewrites] == ["aten.mm.default", "aten.sum.dim_IntList"]


def test_attention_prepass_is_reported_with_the_cuda_kv_split():
    with torch.no_grad():
        report = inductor_bi.explain(Attention(), torch.randn(2, 8, 32, dtype=torch.bfloat16))
    (attn,) = by_replacement(report, "fixed_split_attention")
    assert attn.original == "F.scaled_dot_product_attention"
    assert attn.details["kv_split"] == attention_table.attention_config(16, torch.bfloat16, interpreted=False).kv_split
    dynamo = next(g for g in report.graphs if g.kind == "dynamo")
    assert "+" in dynamo.diff and "fixed_split_attention" in dynamo.diff


def test_attention_dropout_is_a_reported_refusal():
    with torch.no_grad():
        report = inductor_bi.explain(Attention(dropout=0.1), torch.randn(2, 8, 32))
    dynamo = next(g for g in report.graphs if g.kind == "dynamo")
    assert dynamo.violations and "dropout_p=0.1" in dynamo.violations[0].why
    assert "F.scaled_dot_product_attention" in report.guard_error


def test_traced_device_configs_and_graph_breaks():
    def f(x):
        y = x @ x.t()
        print("graph break")  # noqa: T201 -- splits the function into two Dynamo graphs
        return y.sum(-1)

    with torch.no_grad():
        report = inductor_bi.explain(f, torch.randn(4, 8), device=None, run_graphs="eager")
    assert [g.name for g in report.graphs] == ["graph 0 dynamo", "graph 0 inference", "graph 1 dynamo", "graph 1 inference"]
    (mm,) = by_replacement(report, "invariant_matmul")
    interp = matmul_table.MATMUL_INTERPRETER
    assert mm.details["tile"] == f"{interp.block_m}x{interp.block_n}x{interp.block_k}"


def test_rewrites_are_logged_once_by_the_passes_during_a_normal_compile(caplog):
    caplog.set_level(logging.DEBUG, logger="inductor_bi")
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b: a @ b, backend="batch_invariant")
    compiled(torch.randn(3, 5), torch.randn(5, 2))
    torch._dynamo.reset()
    logged = [r.getMessage() for r in caplog.records if r.name == "inductor_bi"]
    assert any(m.startswith("rewrote aten.mm.default -> inductor_bi.invariant_matmul.default") for m in logged), logged
    # explain reuses the passes (and their logging) rather than logging on its own
    caplog.clear()
    with torch.no_grad():
        report = inductor_bi.explain(Small(), torch.randn(4, 16))
    logged = [r.getMessage() for r in caplog.records if r.name == "inductor_bi"]
    assert len([m for m in logged if m.startswith("rewrote ")]) == len(report.rewrites)


def test_cli_prints_the_report():
    factory = f"{Path(__file__).relative_to(REPO)}:small_model_factory"
    run = subprocess.run(
        [sys.executable, "-m", "inductor_bi", "explain", factory, "--no-grad"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "inductor_bi.explain: Small" in run.stdout
    assert "aten.addmm.default -> inductor_bi.invariant_matmul.default" in run.stdout
    assert "aten.index_put.default" in run.stdout and "tests/test_explain.py:" in run.stdout


def test_cli_writes_markdown(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "report.md"
    assert cli_main(["explain", "tests/test_explain.py:small_model_factory", "--no-grad", "--markdown", "-o", str(out)]) == 0
    md = out.read_text()
    assert md.startswith("# `inductor_bi.explain`: Small") and "```diff" in md


def test_cli_rejects_a_bad_factory_spec():
    with pytest.raises(SystemExit):
        cli_main(["explain", "no_colon_here"])
