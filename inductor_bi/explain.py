"""``inductor_bi.explain(model, *inputs)``: what ``backend="batch_invariant"`` does to a model,
without compiling it with Inductor and without computing anything.

It runs the backend itself (``backend.compile_graph``: the attention pre-pass on the Dynamo graph,
aot_autograd with the backend's decompositions under the backend's Inductor config patch, which
installs our post-grad hooks) with one change: Inductor's compile of each aten graph (forward,
backward, inference) is replaced by a call of the two post-grad hooks the backend installed, then
a fake run instead of code generation. An observer (``passes/_observe.py``) records what the
backend's own code tells it at each stage:

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
import torch._inductor.config as inductor_settings
import torch.fx
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
from torch.utils import _pytree as pytree

from . import backend, inductor_config
from .options import Options
from .passes import Rewrite
from .passes._observe import Observer, observing
from .passes._rewrite import input_shapes, user_source_line
from .passes.convolution import lowered_convolutions
from .passes.guard import Violation, _dtype, classify, error_message


def _speed_knobs() -> list[tuple[str, Any, str]]:
    """inductor_bi's own speed knobs, (name, value, what it chooses): how fast, never whether
    invariant. The one place explain reads them (``_SPEED_KNOBS_FROM`` names where they live)."""
    from .kernels import knobs

    return knobs.speed_knobs()


_SPEED_KNOBS_FROM = "inductor_bi/kernels/knobs.py"

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
    speed_knobs: list[tuple[str, Any, str]] = field(default_factory=_speed_knobs)  # inductor_bi's own
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
        return _relative(_render(self, markdown=False), root)

    def to_markdown(self, root: str | None = None) -> str:
        """``root``: paths under it are written relative to it (for committed docs)."""
        return _relative(_render(self, markdown=True), root)

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
    recorder = _Recorder(mode, options, fake=run_graphs == "fake")
    recorder.config_device = config_device
    torch._dynamo.reset()
    try:
        with _capture_config(), observing(recorder):
            compiled = torch.compile(model, backend=recorder.backend, dynamic=dynamic, mode=mode)
            out = compiled(*example_inputs, **model_kwargs)
            if not recorder.has_backward():
                _run_backward(out, model, example_inputs, model_kwargs)
    finally:
        torch._dynamo.reset()
    if not recorder.graphs:
        raise RuntimeError("inductor_bi.explain: Dynamo captured no graph (nothing to compile in this call?)")
    devices = sorted({str(t.device) for t in pytree.tree_leaves((example_inputs, model_kwargs)) if isinstance(t, torch.Tensor)})
    pinned = inductor_config.pinned_config()
    return ExplainReport(
        title=_title(model),
        graphs=sorted(recorder.graphs, key=lambda g: (g.index, _KINDS.index(g.kind))),
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


class _Recorder(Observer):
    """The backend (``backend.compile_graph``) with Inductor's compile of each aten graph replaced
    by our two post-grad hooks, observed: one ``GraphReport`` per graph from what the backend's
    stages tell it."""

    def __init__(self, mode: str | None, options: dict | None, fake: bool):
        self.mode, self.options = mode, options
        self.fake_mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else None
        self.graphs: list[GraphReport] = []
        self._pending: list[GraphReport] | None = None  # graphs of the backend call under way
        self._index = 0  # the Dynamo graph under way
        self._aten: tuple[int, str] | None = None  # (index, kind) of the aten graph under way
        self._graph: GraphReport | None = None  # the graph the stages are telling about
        self._gm: torch.fx.GraphModule | None = None
        self._lowered: list[Rewrite] = []

    def has_backward(self) -> bool:
        return any(g.kind == "backward" for g in self.graphs)

    def backend(self, gm: torch.fx.GraphModule, example_inputs):
        # Dynamo may call a backend more than once for one graph (restarting its analysis);
        # only graphs whose compile returns are reported.
        self._pending = []
        try:
            inner = functools.partial(self._inner_compile, index=self._index)
            compiled = backend.compile_graph(gm, example_inputs, self.mode, self.options, inner_compile=inner)
            self.graphs.extend(self._pending)
        finally:
            self._pending = None
        self._index += 1
        return compiled

    def _inner_compile(self, gm: torch.fx.GraphModule, example_inputs, *, index: int, **kwargs):
        """Inductor's compile_fx_inner runs its post-grad passes (ours in its two custom hooks)
        and generates code; here only the hooks the backend's config patch installed run."""
        kind = "backward" if kwargs.get("is_backward") else "inference" if kwargs.get("is_inference") else "forward"
        with unset_fake_temporarily():
            runnable = copy.deepcopy(gm)  # the graph as aot_autograd made it, to run (fake or eager)
        self._aten = (index, kind)
        try:
            for hook in (inductor_settings.post_grad_custom_pre_pass, inductor_settings.post_grad_custom_post_pass):
                hook(gm.graph)
        finally:
            self._aten = None
        return self._runner(runnable)

    def _runner(self, gm: torch.fx.GraphModule):
        fake_mode = self.fake_mode

        def run(args):
            with fake_mode if fake_mode is not None else contextlib.nullcontext():
                return gm(*args)

        run._boxed_call = True  # aot_autograd's calling convention: one list of arguments
        return run

    # What the backend's stages tell (Observer)

    def graph_in(self, gm: torch.fx.GraphModule, stage: str) -> None:
        index, kind = self._aten if stage == "aten" else (self._index, "dynamo")
        # what the decompositions made of each convolution, read before the matmul pass rewrites it
        self._lowered = lowered_convolutions(gm) if stage == "aten" else []
        self._gm, self._graph = gm, GraphReport(index, kind, _readable(gm), _readable(gm))
        # A backward compiled at the first .backward() arrives after its backend call returned.
        (self._pending if self._pending is not None else self.graphs).append(self._graph)

    def rewritten(self, gm: torch.fx.GraphModule, rewrites: list[Rewrite]) -> None:
        self._graph.after = _readable(gm)
        self._graph.rewrites = self._lowered + rewrites

    def guarded(self, violations: list[Violation]) -> bool:
        g = self._graph
        g.violations = violations
        g.guard_error = error_message(violations) if violations else None
        g.kept = _kept(self._gm) if g.kind != "dynamo" else []
        return True  # reported, not raised


def _kept(gm: torch.fx.GraphModule) -> list[KeptReduction]:
    kept = []
    for node in gm.graph.nodes:
        verdict = classify(node)
        if verdict and verdict[0] == "exact":
            kept.append(KeptReduction(str(node.target), verdict[1], input_shapes(node), _dtype(node), user_source_line(node)))
    return kept


def _readable(gm: torch.fx.GraphModule) -> str:
    text = gm.print_readable(print_output=False, include_stride=False, include_device=False, colored=False)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


# torch >= 2.9 can compile the backward graph together with the forward; older torch compiles it
# at the first .backward(), which explain then runs on fake tensors (_run_backward).
_EAGER_BACKWARD = hasattr(torch._functorch.config, "force_non_lazy_backward_lowering")


@contextlib.contextmanager
def _capture_config():
    """Make every graph reach the backend: no AOTAutograd cache hit may skip it (Inductor's own
    cache is never asked: ``_Recorder._inner_compile`` stands in for its compile), and the
    backward graph is produced with the forward where this torch can."""
    patch = {"enable_autograd_cache": False}
    if _EAGER_BACKWARD:
        patch["force_non_lazy_backward_lowering"] = True
    with torch._functorch.config.patch(patch):
        yield


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
# Rendering: one list of sections (``_render``), laid out as text or as Markdown
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


def _cell(text: str) -> str:
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return f"`{text}`" if text and text != "-" else text


def _render(rep: ExplainReport, markdown: bool) -> str:
    """The report's sections, in order, laid out by ``_Markdown`` or ``_Text``."""
    out = _Markdown() if markdown else _Text()
    out.header(rep.title, _setting_line(rep))
    out.bullets("Summary", _summary_lines(rep))
    out.table(
        "Rewritten", None, ("graph", "aten op", "becomes", "inputs", "dtype", "pinned config", "source"), {1, 2, 3, 5, 6},
        [(g, r.original, r.replacement, format_shapes(r.shapes), r.dtype, format_config(r), format_source(r.source)) for g, r in rep.rewrites],
        lambda g, op, new, shapes, dtype, config, source: [f"[{g}] {op} -> {new}", f"    inputs {shapes}  {dtype}  {config}", f"    at {source}"],
    )  # fmt: skip
    out.table(
        "Kept (exact in any order)", "Kept as is (exact in any order)", ("graph", "op", "why it is safe", "inputs", "dtype", "source"), {1, 3, 5},
        [(g, k.op, k.why, format_shapes(k.shapes), k.dtype, format_source(k.source)) for g, k in rep.kept],
        lambda g, op, why, shapes, dtype, source: [f"[{g}] {op}: {why}", f"    inputs {shapes}  {dtype}  at {source}"],
    )  # fmt: skip
    out.table(
        "Rejected by the strict guard", None, ("graph", "op", "why", "inputs", "dtype", "source"), {1, 3, 5},
        [(g, v.op, v.why, format_shapes(v.shapes), v.dtype, _violation_source(v)) for g, v in rep.violations],
        lambda g, op, why, shapes, dtype, source: [f"[{g}] {op}: {why}", f"    inputs {shapes}  {dtype}  at {source}"],
        error=rep.guard_error,
    )  # fmt: skip
    out.knobs(
        "Inductor config pinned", "inductor_bi/inductor_config.py", None, ("knob", "value", "why"), rep.pinned_knobs, rep.unpinned_knobs
    )
    out.knobs("inductor_bi speed knobs", _SPEED_KNOBS_FROM, "how fast, never whether", ("knob", "value", "what it chooses"), rep.speed_knobs)
    out.diffs([(g.name, g.diff, _unchanged(g)) for g in rep.graphs])
    return out.render()


class _Text:
    """Each section: its heading, then its lines indented; sections apart by a blank line."""

    def __init__(self):
        self.lines: list[str] = []

    def header(self, title: str, setting: str) -> None:
        self.lines += [f"inductor_bi.explain: {title}", setting]

    def bullets(self, heading: str, lines: list[str]) -> None:
        self.lines += ["", heading] + [f"  {line}" for line in lines]

    def table(self, heading, _md_heading, _columns, _code, rows, item, error=None) -> None:
        self.lines += ["", heading] + [f"  {line}" for row in rows for line in item(*row)]
        if error:
            self.lines += ["", "  strict mode's error:"] + [f"    {line}" for line in error.splitlines()]
        if not rows:
            self.lines.append("  (none)")

    def knobs(self, heading, source, what, _columns, knobs, missing=()) -> None:
        self.lines += ["", f"{heading} ({source}" + (f": {what} invariant)" if what else ")")]
        width = max((len(n) for n, _, _ in knobs), default=0)
        self.lines += [f"  {name:{width}s} = {value!r:5s}  {why}" for name, value, why in knobs]
        if missing:
            self.lines.append(f"  not in this torch (nothing to pin): {', '.join(missing)}")

    def diffs(self, graphs) -> None:
        for name, diff, unchanged in graphs:
            self.lines += ["", f"Graph diff: {name}"] + ([diff] if diff else [f"  {unchanged}"])

    def render(self) -> str:
        return "\n".join(self.lines) + "\n"


class _Markdown:
    """Each section: "## heading", then blocks (tables, paragraphs) each followed by a blank line."""

    def __init__(self):
        self.lines: list[str] = []

    def header(self, title: str, setting: str) -> None:
        self.lines += [f"# `inductor_bi.explain`: {title}", "", setting + ".", ""]

    def bullets(self, heading: str, lines: list[str]) -> None:
        self.lines += [f"## {heading}", ""] + [f"- {line}" for line in lines] + [""]

    def table(self, heading, md_heading, columns, code, rows, _item, error=None) -> None:
        self.lines += [f"## {md_heading or heading}", ""]
        if not rows:
            self.lines += ["None.", ""]
            return
        cells = [[_cell(v) if i in code else str(v) for i, v in enumerate(row)] for row in rows]
        self._grid(columns, cells)
        if error is not None:
            self.lines += ["Strict mode's error:", "", "```text", error, "```", ""]

    def knobs(self, heading, source, what, columns, knobs, missing=()) -> None:
        intro = f"From `{source}`" + (f": {what} a row is invariant." if what else ".")
        self.lines += [f"## {heading}", "", intro, ""]
        self._grid(columns, [[f"`{name}`", f"`{value!r}`", why] for name, value, why in knobs])
        if missing:
            self.lines += ["Not in this torch (nothing to pin): " + ", ".join(f"`{k}`" for k in missing) + ".", ""]

    def diffs(self, graphs) -> None:
        self.lines += ["## Graph diffs", ""]
        for name, diff, unchanged in graphs:
            self.lines += [f"### {name}", ""] + (["```diff", diff, "```"] if diff else [unchanged]) + [""]

    def _grid(self, columns, rows) -> None:
        self.lines += ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
        self.lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]

    def render(self) -> str:
        return "\n".join(self.lines).rstrip("\n") + "\n"


__all__ = ["ExplainReport", "GraphReport", "KeptReduction", "explain"]
