"""Graph-in / graph-out helpers for the per-pass tests: an aten graph traced on fake tensors, and
what it calls (nothing here runs a kernel)."""

from __future__ import annotations

import torch
from torch.fx.experimental.proxy_tensor import make_fx

import inductor_bi  # noqa: F401  (registers torch.ops.inductor_bi)

aten = torch.ops.aten
bi = torch.ops.inductor_bi


def aten_graph(fn, *inputs) -> torch.fx.GraphModule:
    """``fn``'s aten graph, traced on fake tensors (each node's meta["val"] as Inductor's has it)."""
    return make_fx(fn, tracing_mode="fake")(*inputs)


def targets(gm: torch.fx.GraphModule) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def calls(gm: torch.fx.GraphModule, target) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is target]


def dynamo_graph(fn, *inputs) -> torch.fx.GraphModule:
    """``fn`` traced at the torch level as Dynamo hands a backend its graph (torch functions, each
    node's meta["example_value"] a fake tensor): the attention pre-pass's input."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    gm = torch.fx.symbolic_trace(fn)
    mode = FakeTensorMode()
    fakes = [mode.from_tensor(t) for t in inputs]

    class _Record(torch.fx.Interpreter):
        def run_node(self, node):
            out = super().run_node(node)
            node.meta["example_value"] = out
            return out

    with mode:
        _Record(gm).run(*fakes)
    return gm
