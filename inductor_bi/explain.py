"""``inductor_bi.explain(model, *inputs)``: what ``backend="batch_invariant"`` does to a model,
without compiling it with Inductor and without computing anything.

It runs the backend's own pipeline -- the attention pre-pass on the Dynamo graph, aot_autograd
with the backend's decompositions under the backend's Inductor config patch, then the passes on
every aten graph (forward, backward, inference) -- through a capturing backend whose inner
compile records instead of compiling:

* every node rewritten: the aten op, the custom op it became, its pinned tile config and split
  size, input shapes, dtype and the user's source line (the passes' own ``Rewrite`` records);
* every reduction kept as is, with the guard's reason it is exact (``guard.classify``);
* every op the strict guard rejects, and the message strict mode raises (reported, not raised);
* the Inductor knobs pinned, with reasons, and those this torch lacks;
* a unified diff of each graph before / after the rewrite.

Nothing is computed: each captured graph runs on fake tensors (shapes only), so no Triton kernel
and no GPU work runs. Tile configs are reported for ``device`` ("cuda" by default: what users
run), whatever device the model was traced on. Like ``torch._dynamo.explain``, it resets
Dynamo's caches before and after (compiled functions recompile on their next call).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx
from torch._inductor.compile_fx import compile_fx
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
from torch.utils import _pytree as pytree

from . import inductor_config
from .kernels import knobs
from .backend import config_patches, decompositions
from .errors import BatchInvarianceError
from .options import Options
from .passes import Rewrite, attention as attention_pass, matmul as matmul_pass, reductions as reductions_pass
from .passes import scan as scan_pass
from .passes import rewrite_graph
from .passes._rewrite import input_shapes, user_source_line
from .passes.attention import rewrite_attention_calls
from .passes.convolution import lowered_convolutions
from .passes.guard import Violation, classify, find_batch_statistics, find_violations, report

# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


@dataclass
class KeptReduction:
    """A reduction left to Inductor because its result does not depend on the order."""

    op: str
    why: str
    shapes: list
    dtype: str
    source: str


@dataclass
class GraphReport:
    """One graph as the backend sees it. ``kind``: "dynamo" (the graph before aot_autograd, where
    the attention pre-pass runs), "forward", "backward" or "inference" (aten graphs)."""

    index: int  # the Dynamo graph (one per graph break)
    kind: str
    before: str  # the graph's readable code before our passes
    after: str  # ... and after
    rewrites: list[Rewrite] = field(default_factory=list)
    kept: list[KeptReduction] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    guard_error: str | None = None  # what strict mode raises for this graph

    @property
    def name(self) -> str:
        return f"graph {self.index} {self.kind}"

    @property
    def diff(self) -> str:
        """Unified diff of the readable graph code, before -> after the rewrite ("" if equal)."""
        stage = "Dynamo graph" if self.kind == "dynamo" else f"aten {self.kind} graph"
        lines = difflib.unified_diff(
            self.before.splitlines(),
            self.after.splitlines(),
            fromfile=f"{self.name}: {stage} as Inductor would get it",
            tofile=f"{self.name}: after inductor_bi's passes",
            lineterm="",
        )
        return "\n".join(lines)


@dataclass
class ExplainReport:
    title: str
    graphs: list[GraphReport]
    config_device: str  # the device whose tile configs are reported
    traced_on: str  # the devices of the example inputs
    dynamic: bool | None
    strict: bool
    mode: str | None
    pinned_knobs: list[tuple[str, Any, str]]  # (name, value, why), the ones this torch has
    unpinned_knobs: list[str]  # pinned knobs this torch does not have
    speed_knobs: list[tuple[str, Any, str]] = field(default_factory=knobs.speed_knobs)  # inductor_bi's own
    run_graphs: str = "fake"
    torch_version: str = torch.__version__

    @property
    def rewrites(self) -> list[tuple[str, Rewrite]]:
        return [(g.name, r) for g in self.graphs for r in g.rewrites]

    @property
    def kept(self) -> list[tuple[str, KeptReduction]]:
        return [(g.name, k) for g in self.graphs for k in g.kept]

    @property
    def violations(self) -> list[tuple[str, Violation]]:
        return [(g.name, v) for g in self.graphs for v in g.violations]

    @property
    def guard_error(self) -> str | None:
        """The BatchInvarianceError message strict mode raises first (None: it compiles)."""
        return next((g.guard_error for g in self.graphs if g.guard_error), None)

    def to_text(self, root: str | None = None) -> str:
        return _relative(_TextRenderer(self).render(), root)

    def to_markdown(self, root: str | None = None) -> str:
        """``root``: paths under it are written relative to it (for committed docs)."""
        return _relative(_MarkdownRenderer(self).render(), root)

    def __str__(self) -> str:
        return self.to_text()


# ---------------------------------------------------------------------------------------------
# explain()
# ---------------------------------------------------------------------------------------------


def explain(
    model: Callable,
    *example_inputs,
    device: str | torch.device | None = "cuda",
    dynamic: bool | None = True,
    mode: str | None = None,
    options: dict | None = None,
    run_graphs: str = "fake",
    **model_kwargs,
) -> ExplainReport:
    """Report what ``torch.compile(model, backend="batch_invariant", dynamic=dynamic, mode=mode,
    options=options)`` does to ``model`` called as ``model(*example_inputs, **model_kwargs)``.

    ``device``: whose pinned tile configs to report ("cuda" by default; None: the traced device).
    ``run_graphs``: "fake" (default) runs each captured graph on fake tensors, so nothing is
    computed; "eager" runs the un-rewritten aten graphs on the real inputs (aten kernels, no
    Triton), for models whose Python between graph breaks needs real values (``.item()``...).
    Graphs are captured under the caller's grad mode: wrap the call in ``torch.no_grad()`` for
    the inference graph; with grad enabled and inputs or parameters requiring grad, the forward
    and backward graphs are reported.
    """
    if run_graphs not in ("fake", "eager"):
        raise ValueError(f"run_graphs must be 'fake' or 'eager', not {run_graphs!r}")
    opts = Options.parse(options)
    config_device = torch.device(device) if device is not None else None
    capture = _Capture(config_device, fake=run_graphs == "fake")
    torch._dynamo.reset()
    try:
        with _capture_config(), _configs_reported_for(config_device):
            compiled = torch.compile(model, backend=capture.backend, dynamic=dynamic, mode=mode)
            out = compiled(*example_inputs, **model_kwargs)
            if not capture.has_backward():
                _run_backward(out, model, example_inputs, model_kwargs)
    finally:
        torch._dynamo.reset()
    if not capture.graphs:
        raise RuntimeError("inductor_bi.explain: Dynamo captured no graph (nothing to compile in this call?)")
    devices = sorted({str(t.device) for t in pytree.tree_leaves((example_inputs, model_kwargs)) if isinstance(t, torch.Tensor)})
    pinned = inductor_config.pinned_config()
    return ExplainReport(
        title=_title(model),
        graphs=sorted(capture.graphs, key=lambda g: (g.index, _KINDS.index(g.kind))),
        config_device=str(config_device) if config_device is not None else "the traced device",
        traced_on=", ".join(devices) or "no tensor input",
        dynamic=dynamic,
        strict=opts.strict,
        mode=mode,
        pinned_knobs=[(name, value, why) for name, (value, why) in inductor_config.PINNED.items() if name in pinned],
        unpinned_knobs=inductor_config.unpinned_knobs(),
        run_graphs=run_graphs,
    )


_KINDS = ("dynamo", "forward", "inference", "backward")


class _Capture:
    """A backend that mirrors ``backend.batch_invariant`` but records instead of compiling."""

    def __init__(self, config_device: torch.device | None, fake: bool):
        self.config_device = config_device
        self.fake_mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else None
        self.graphs: list[GraphReport] = []
        self._pending: list[GraphReport] | None = None  # graphs of the backend call under way
        self._index = 0

    def has_backward(self) -> bool:
        return any(g.kind == "backward" for g in self.graphs)

    def backend(self, gm: torch.fx.GraphModule, example_inputs, mode: str | None = None, options=None):
        # Dynamo may call a backend more than once for one graph (restarting its analysis);
        # only graphs whose compile returns are reported.
        before = _readable(gm)
        rewrites, refusals = rewrite_attention_calls(gm)
        refusals = refusals + find_batch_statistics(gm)  # as the backend: before aot_autograd
        self._pending = [
            GraphReport(self._index, "dynamo", before, _readable(gm), rewrites, [], refusals, _guard_message(refusals))
        ]
        try:
            compiled = compile_fx(
                gm,
                example_inputs,
                inner_compile=functools.partial(self._inner_compile, index=self._index),
                # every graph compiled for real: one served from a compile cache is never rewritten
                config_patches={**config_patches(mode), "force_disable_caches": True},
                decompositions=decompositions(),
            )
            self.graphs.extend(self._pending)
        finally:
            self._pending = None
        self._index += 1
        return compiled

    def _inner_compile(self, gm: torch.fx.GraphModule, example_inputs, *, index: int, **kwargs):
        kind = "backward" if kwargs.get("is_backward") else "inference" if kwargs.get("is_inference") else "forward"
        with unset_fake_temporarily():
            runnable = copy.deepcopy(gm)  # the graph as aot_autograd made it, to run (fake or eager)
        before = _readable(gm)
        # convolutions were lowered by the decompositions (im2col + matmul); then the backend's passes
        rewrites = lowered_convolutions(gm) + rewrite_graph(gm)
        violations = find_violations(gm)
        # A backward compiled at the first .backward() arrives after its backend call returned.
        (self._pending if self._pending is not None else self.graphs).append(
            GraphReport(index, kind, before, _readable(gm), rewrites, _kept(gm), violations, _guard_message(violations))
        )
        return self._runner(runnable)

    def _runner(self, gm: torch.fx.GraphModule):
        fake_mode = self.fake_mode

        def run(args):
            with fake_mode if fake_mode is not None else contextlib.nullcontext():
                return gm(*args)

        run._boxed_call = True  # aot_autograd's calling convention: one list of arguments
        return run


def _kept(gm: torch.fx.GraphModule) -> list[KeptReduction]:
    kept = []
    for node in gm.graph.nodes:
        verdict = classify(node)
        if verdict and verdict[0] == "exact":
            kept.append(KeptReduction(str(node.target), verdict[1], input_shapes(node), _dtype(node), user_source_line(node)))
    return kept


def _dtype(node: torch.fx.Node) -> str:
    for arg in node.all_input_nodes:
        val = arg.meta.get("val")
        if isinstance(val, torch.Tensor):
            return str(val.dtype)
    return "?"


def _guard_message(violations: list[Violation]) -> str | None:
    """The message of the BatchInvarianceError strict mode raises (the guard's own wording)."""
    try:
        report(violations, strict=True)
    except BatchInvarianceError as e:
        return str(e)
    return None


def _readable(gm: torch.fx.GraphModule) -> str:
    text = gm.print_readable(print_output=False, include_stride=False, include_device=False, colored=False)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


# torch >= 2.9 can compile the backward graph together with the forward; older torch compiles it
# at the first .backward(), which explain then runs on fake tensors (_run_backward).
_EAGER_BACKWARD = hasattr(torch._functorch.config, "force_non_lazy_backward_lowering")


@contextlib.contextmanager
def _capture_config():
    """Make every graph reach the capture: no AOTAutograd cache hit may skip it, and the
    backward graph is produced with the forward where this torch can."""
    patch = {"enable_autograd_cache": False}
    if _EAGER_BACKWARD:
        patch["force_non_lazy_backward_lowering"] = True
    with torch._functorch.config.patch(patch):
        yield


@contextlib.contextmanager
def _configs_reported_for(device: torch.device | None):
    """Have the passes record the tile configs of ``device`` instead of the traced device's."""
    if device is None:
        yield
        return
    modules = (matmul_pass, reductions_pass, attention_pass, scan_pass)
    originals = [m._config_details for m in modules]
    try:
        for m, original in zip(modules, originals):
            m._config_details = functools.partial(original, device=device)
        yield
    finally:
        for m, original in zip(modules, originals):
            m._config_details = original


def _run_backward(out, model, example_inputs, model_kwargs) -> None:
    """Run the backward (on fake tensors too) when it was not captured with the forward,
    taking gradients with autograd.grad so that no .grad is written."""
    outs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]
    if not outs:
        return
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    leaves = [t for t in params + pytree.tree_leaves((example_inputs, model_kwargs)) if isinstance(t, torch.Tensor) and t.requires_grad]
    if leaves:
        torch.autograd.grad(outs, leaves, [torch.ones_like(t) for t in outs], allow_unused=True)


def _title(model) -> str:
    if isinstance(model, torch.nn.Module):
        return type(model).__name__
    return getattr(model, "__qualname__", None) or type(model).__name__


def _relative(text: str, root: str | None) -> str:
    if not root:
        return text
    root = root.rstrip("/") + "/"
    return text.replace(root, "")


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

_SOURCE = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<fn>\S+)\s*(?P<code>.*)')


def format_source(source: str) -> str:
    """'File "x.py", line 3, in f  code' -> 'x.py:3 (f): code'."""
    m = _SOURCE.match(source)
    if not m:
        return source
    code = m["code"].strip()
    return f"{m['path']}:{m['line']} ({m['fn']})" + (f": {code}" if code else "")


def _violation_source(v: Violation) -> str:
    """The source line, and the module the op was traced from when the line does not say it."""
    source = format_source(v.source)
    return f"{source}, in {v.module}" if v.module and v.module not in v.source else source


def format_shapes(shapes: list) -> str:
    return ", ".join("[" + ", ".join(str(d) for d in s) + "]" for s in shapes) or "-"


def format_config(rewrite: Rewrite) -> str:
    details = dict(rewrite.details)
    kernel = details.pop("kernel", None)
    parts = [] if kernel is None or kernel in rewrite.replacement else [str(kernel)]
    parts += [f"{k}={v}" for k, v in details.items()]
    return ", ".join(parts) or "-"


def _summary_lines(rep: ExplainReport) -> list[str]:
    families: dict[str, int] = {}
    for _, r in rep.rewrites:
        families[r.replacement] = families.get(r.replacement, 0) + 1
    by_op = ", ".join(f"{n} x {op}" for op, n in sorted(families.items()))
    lines = [
        f"{len(rep.rewrites)} op(s) rewritten" + (f" ({by_op})" if by_op else ""),
        f"{len(rep.kept)} reduction(s) kept as Inductor compiles them: exact in any order",
        f"{len(rep.violations)} op(s) the strict guard rejects",
    ]
    if rep.guard_error is None:
        lines.append("strict mode: compiles (nothing to reject)")
    else:
        first = next(g for g in rep.graphs if g.guard_error)
        when = " (at the first .backward(), when that graph compiles)" if first.kind == "backward" else ""
        verdict = "raises BatchInvarianceError" if rep.strict else "warns (strict=False) and compiles those ops as Inductor would: NOT invariant"
        lines.append(f"strict={rep.strict}: torch.compile {verdict}{when}; first at {first.name}")
    return lines


def _unchanged(g: GraphReport) -> str:
    if g.kind == "dynamo":
        return "Unchanged: no F.scaled_dot_product_attention call for the attention pre-pass."
    return "Unchanged: nothing to rewrite."


def _setting_line(rep: ExplainReport) -> str:
    ran = (
        "with fake tensors: nothing computed, no kernel run"
        if rep.run_graphs == "fake"
        else "running the un-rewritten aten graphs eagerly (no Triton kernel)"
    )
    return (
        f"traced on {rep.traced_on} {ran}; tile configs for {rep.config_device}; "
        f"dynamic={rep.dynamic}, mode={rep.mode}, strict={rep.strict}; torch {rep.torch_version}"
    )


class _TextRenderer:
    def __init__(self, rep: ExplainReport):
        self.rep = rep

    def render(self) -> str:
        rep, out = self.rep, []
        out += [f"inductor_bi.explain: {rep.title}", _setting_line(rep), ""]
        out += ["Summary"] + [f"  {line}" for line in _summary_lines(rep)] + [""]
        out.append("Rewritten")
        for graph, r in rep.rewrites:
            out.append(f"  [{graph}] {r.original} -> {r.replacement}")
            out.append(f"      inputs {format_shapes(r.shapes)}  {r.dtype}  {format_config(r)}")
            out.append(f"      at {format_source(r.source)}")
        if not rep.rewrites:
            out.append("  (none)")
        out += ["", "Kept (exact in any order)"]
        for graph, k in rep.kept:
            out.append(f"  [{graph}] {k.op}: {k.why}")
            out.append(f"      inputs {format_shapes(k.shapes)}  {k.dtype}  at {format_source(k.source)}")
        if not rep.kept:
            out.append("  (none)")
        out += ["", "Rejected by the strict guard"]
        for graph, v in rep.violations:
            out.append(f"  [{graph}] {v.op}: {v.why}")
            out.append(f"      inputs {format_shapes(v.shapes)}  {v.dtype}  at {_violation_source(v)}")
        if rep.guard_error:
            out += ["", "  strict mode's error:"] + [f"    {line}" for line in rep.guard_error.splitlines()]
        if not rep.violations:
            out.append("  (none)")
        out += ["", "Inductor config pinned (inductor_bi/inductor_config.py)"]
        width = max((len(n) for n, _, _ in rep.pinned_knobs), default=0)
        out += [f"  {name:{width}s} = {value!r:5s}  {why}" for name, value, why in rep.pinned_knobs]
        if rep.unpinned_knobs:
            out.append(f"  not in this torch (nothing to pin): {', '.join(rep.unpinned_knobs)}")
        out += ["", "inductor_bi speed knobs (inductor_bi/kernels/knobs.py: how fast, never whether invariant)"]
        width = max((len(n) for n, _, _ in rep.speed_knobs), default=0)
        out += [f"  {name:{width}s} = {value!r:5s}  {what}" for name, value, what in rep.speed_knobs]
        for g in rep.graphs:
            diff = g.diff
            out += ["", f"Graph diff: {g.name}"] + ([diff] if diff else [f"  {_unchanged(g)}"])
        return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return f"`{text}`" if text and text != "-" else text


class _MarkdownRenderer:
    def __init__(self, rep: ExplainReport):
        self.rep = rep

    def render(self) -> str:
        rep, out = self.rep, []
        out += [f"# `inductor_bi.explain`: {rep.title}", "", _setting_line(rep) + ".", ""]
        out += ["## Summary", ""] + [f"- {line}" for line in _summary_lines(rep)] + [""]
        out += ["## Rewritten", ""]
        if rep.rewrites:
            out += ["| graph | aten op | becomes | inputs | dtype | pinned config | source |", "| --- | --- | --- | --- | --- | --- | --- |"]
            for graph, r in rep.rewrites:
                out.append(
                    f"| {graph} | {_cell(r.original)} | {_cell(r.replacement)} | {_cell(format_shapes(r.shapes))} "
                    f"| {r.dtype} | {_cell(format_config(r))} | {_cell(format_source(r.source))} |"
                )
        else:
            out.append("None.")
        out += ["", "## Kept as is (exact in any order)", ""]
        if rep.kept:
            out += ["| graph | op | why it is safe | inputs | dtype | source |", "| --- | --- | --- | --- | --- | --- |"]
            for graph, k in rep.kept:
                out.append(
                    f"| {graph} | {_cell(k.op)} | {k.why} | {_cell(format_shapes(k.shapes))} | {k.dtype} | {_cell(format_source(k.source))} |"
                )
        else:
            out.append("None.")
        out += ["", "## Rejected by the strict guard", ""]
        if rep.violations:
            out += ["| graph | op | why | inputs | dtype | source |", "| --- | --- | --- | --- | --- | --- |"]
            for graph, v in rep.violations:
                out.append(
                    f"| {graph} | {_cell(v.op)} | {v.why} | {_cell(format_shapes(v.shapes))} | {v.dtype} | {_cell(_violation_source(v))} |"
                )
            out += ["", "Strict mode's error:", "", "```text", rep.guard_error or "", "```"]
        else:
            out.append("None.")
        out += ["", "## Inductor config pinned", "", "From `inductor_bi/inductor_config.py`.", ""]
        out += ["| knob | value | why |", "| --- | --- | --- |"]
        out += [f"| `{name}` | `{value!r}` | {why} |" for name, value, why in rep.pinned_knobs]
        if rep.unpinned_knobs:
            out += ["", "Not in this torch (nothing to pin): " + ", ".join(f"`{k}`" for k in rep.unpinned_knobs) + "."]
        out += ["", "## inductor_bi speed knobs", "", "From `inductor_bi/kernels/knobs.py`: how fast, never whether a row is invariant.", ""]
        out += ["| knob | value | what it chooses |", "| --- | --- | --- |"]
        out += [f"| `{name}` | `{value!r}` | {what} |" for name, value, what in rep.speed_knobs]
        out += ["", "## Graph diffs", ""]
        for g in rep.graphs:
            out += [f"### {g.name}", ""]
            diff = g.diff
            out += ["```diff", diff, "```"] if diff else [_unchanged(g)]
            out.append("")
        return "\n".join(out).rstrip("\n") + "\n"


__all__ = ["ExplainReport", "GraphReport", "KeptReduction", "explain"]
