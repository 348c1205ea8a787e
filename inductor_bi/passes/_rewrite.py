"""What a pass records for each node it rewrites, and the one helper that swaps a node."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx


@dataclass
class Rewrite:
    original: str  # the aten op, e.g. "aten.addmm.default"
    replacement: str  # the custom op, e.g. "inductor_bi.invariant_matmul.default"
    shapes: list[tuple]  # input shapes (symbolic sizes print as their symbols)
    dtype: str
    source: str  # the user's source line, from the node's stack trace
    details: dict = field(default_factory=dict)  # kernel config, split size, ...

    def __str__(self) -> str:
        return f"{self.original} -> {self.replacement} {self.shapes} {self.dtype} {self.details} at {self.source}"


def user_source_line(node: torch.fx.Node) -> str:
    """The innermost user frame of the node's stack trace ("file:line in fn\\n    code")."""
    trace = node.meta.get("stack_trace") or ""
    lines = [ln for ln in trace.strip().splitlines() if ln.strip()]
    frames = [i for i, ln in enumerate(lines) if ln.lstrip().startswith("File ")]
    if not frames:
        return "<unknown source line>"
    last = frames[-1]
    return " ".join(ln.strip() for ln in lines[last : last + 2])


def input_shapes(node: torch.fx.Node) -> list[tuple]:
    shapes = []
    for arg in node.all_input_nodes:
        val = arg.meta.get("val")
        if isinstance(val, torch.Tensor):
            shapes.append(tuple(val.shape))
    return shapes


def replace_node(node: torch.fx.Node, target, args: tuple, kwargs: dict | None = None) -> torch.fx.Node:
    """Swap ``node`` for a call to ``target``, keeping its metadata (val, stack trace)."""
    graph = node.graph
    with graph.inserting_before(node):
        new = graph.call_function(target, args, kwargs or {})
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    graph.erase_node(node)
    return new


def fake_value(node):
    """The traced (fake) value of a graph node's output; None for a non-node or an untraced one."""
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def static_int(n) -> int | None:
    """``n`` as an int when it is one (or a SymInt known to be constant); None otherwise.
    ``int(symint)`` would install a guard instead."""
    if isinstance(n, torch.SymInt):
        return n.node.maybe_as_int()
    return n if isinstance(n, int) else None
