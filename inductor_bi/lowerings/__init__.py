"""Launches Inductor makes itself: each rewritten op whose kernels can be traced is replaced,
in the aten graph Inductor is about to compile, by the kernel launches its implementation makes
(``wrap_triton``), so Inductor's generated code launches them as it launches its own kernels:
no Python custom-op dispatch per call, and CUDA-graph friendly.

The launches are the same kernels with the same pinned constexprs as the custom op's; only the
host-side choices that set parallelism (split-K or not, tall or short tiles) are made once, from
the traced sizes' hints, instead of per call: they never change the bits (kernels/matmul.py's
contract), and they install no guard, so one compiled graph still serves every batch size.
CUDA only: the CPU (Triton's interpreter) keeps the custom ops.
"""

from __future__ import annotations

import contextlib

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch._inductor.virtualized import V
from torch._inductor.pattern_matcher import CallFunctionVarArgs, Match, PatternMatcherPass, register_graph_pattern

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import matmul as matmul_kernel
from ..kernels._launch import launched_by_inductor
from ..passes._rewrite import fake_value, static_int

bi = torch.ops.inductor_bi


def _matmul_traceable(node: torch.fx.Node) -> bool:
    """CUDA operands of a real dtype with a static K (K sets the kernel's constexprs)."""
    a, b = fake_value(node.args[0]), fake_value(node.args[1])
    return (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.device.type == "cuda"
        and a.dtype in matmul_kernel.SUPPORTED_DTYPES
        and static_int(a.shape[-1]) is not None
    )


# custom op -> (its implementation, which nodes it can be traced for)
LAUNCHED = {
    bi.invariant_matmul.default: (matmul_kernel.invariant_matmul, _matmul_traceable),
}


def _launches(implementation):
    def traced(*flat, spec):
        args, kwargs = pytree.tree_unflatten(list(flat), spec)
        with launched_by_inductor():
            return implementation(*args, **kwargs)

    return traced


def _pattern_pass() -> PatternMatcherPass:
    graph_pass = PatternMatcherPass(pass_name="inductor_bi_launches")
    for op, (implementation, traceable) in LAUNCHED.items():

        def replace(match: Match, *args, implementation=implementation, **kwargs):
            flat, spec = pytree.tree_flatten((args, kwargs))
            body = _launches(implementation)
            match.replace_by_example(lambda *xs: body(*xs, spec=spec), flat, run_functional_passes=False)

        register_graph_pattern(
            CallFunctionVarArgs(op), pass_dict=graph_pass, extra_check=lambda m, t=traceable: t(m.nodes[0])
        )(replace)
    return graph_pass


def launch_from_inductor(gm: torch.fx.GraphModule) -> int:
    """Replace every traceable rewritten op in ``gm`` by its kernel launches; how many were."""
    before = sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target in LAUNCHED)
    if not before:
        return 0
    vals = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
    fake_mode = torch._guards.detect_fake_mode(vals)
    # the replacements are traced in the graph's own fake mode: its sizes' symbols, no real tensors
    with V.set_fake_mode(fake_mode) if fake_mode is not None else contextlib.nullcontext():
        _pattern_pass().apply(gm.graph)
    gm.graph.lint()
    gm.recompile()
    after = sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target in LAUNCHED)
    return before - after
