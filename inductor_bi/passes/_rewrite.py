"""What a pass records for each node it rewrites, and the one helper that swaps a node."""

from __future__ import annotations

import re
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
    """Where the node comes from in the user's code: the innermost user frame of its stack trace
    ('File "x.py", line 3, in f code'). A node with none takes the stack trace of a node of the
    same graph traced from the same forward op (same ``seq_nr``: a decomposition's or the
    backward's other nodes). Without any user frame -- an op inside a torch module that
    nn.Sequential calls has none -- the module it was traced from ("module `0` (Conv2d) ...")."""
    source = source_from_meta(node.meta, module=False)
    seq_nr = node.meta.get("seq_nr")
    if source is None and seq_nr is not None and node.graph is not None:
        for other in node.graph.nodes:
            if other is not node and other.meta.get("seq_nr") == seq_nr:
                source = source_from_meta(other.meta, module=False)
                if source is not None:
                    break
    return source or source_from_meta(node.meta)


def source_from_meta(meta: dict, module: bool = True) -> str | None:
    """``user_source_line`` of one node's meta (a graph node's, or ``fx.traceback``'s current
    meta during tracing); with ``module=False``, None when its stack trace has no user frame."""
    trace = meta.get("stack_trace") or ""
    lines = [ln for ln in trace.strip().splitlines() if ln.strip()]
    frames = [i for i, ln in enumerate(lines) if ln.lstrip().startswith("File ")]
    if frames:
        last = frames[-1]
        return " ".join(ln.strip() for ln in lines[last : last + 2])
    if not module:
        return None
    module = module_from_meta(meta)
    if module is not None:
        return f"{module}: no line of your code in its stack trace"
    return "<unknown source line>"


def user_module(node: torch.fx.Node) -> str | None:
    """The innermost nn.Module the node was traced from, e.g. "module `encoder.0.norm`
    (BatchNorm2d)" or "the compiled Linear module"; None for a node traced outside any module."""
    return module_from_meta(node.meta)


def module_from_meta(meta: dict) -> str | None:
    # forward and Dynamo graphs record nn_module_stack; backward graphs the forward op's
    stack = meta.get("nn_module_stack") or meta.get("fwd_nn_module_stack")
    if not stack:
        return None
    path, cls = list(stack.values())[-1]
    name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1].strip("'>")
    # Dynamo names a submodule by its source: "L['self'].layers[0]._modules['norm']"
    path = re.sub(r"\._modules\['([^']*)'\]", r".\1", re.sub(r"^L\['[^']*'\]\.?", "", str(path)))
    return f"module `{path}` ({name})" if path else f"the compiled {name} module"


def input_shapes(node: torch.fx.Node) -> list[tuple]:
    shapes = []
    for arg in node.all_input_nodes:
        val = arg.meta.get("val")
        if isinstance(val, torch.Tensor):
            shapes.append(tuple(val.shape))
    return shapes


def node_rewrite(node: torch.fx.Node, replacement: str, dtype, details: dict | None = None) -> Rewrite:
    """The record of ``node`` rewritten into ``replacement``: its op, input shapes and user source line."""
    return Rewrite(
        original=str(node.target),
        replacement=replacement,
        shapes=input_shapes(node),
        dtype=str(dtype),
        source=user_source_line(node),
        details=details or {},
    )


def replace_node(node: torch.fx.Node, target, args: tuple, kwargs: dict | None = None) -> torch.fx.Node:
    """Swap ``node`` for a call to ``target``, keeping its metadata (val, stack trace)."""
    graph = node.graph
    with graph.inserting_before(node):
        new = graph.call_function(target, args, kwargs or {})
    # not the old op's eager input values: Inductor matches them against the new op's schema
    new.meta = {key: value for key, value in node.meta.items() if key != "eager_input_vals"}
    node.replace_all_uses_with(new)
    graph.erase_node(node)
    return new
