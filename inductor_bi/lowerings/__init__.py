"""Launches Inductor makes itself: each rewritten op whose kernels can be traced is replaced,
in the aten graph Inductor is about to compile, by the kernel launches its implementation makes
(``wrap_triton``), so Inductor's generated code launches them as it launches its own kernels:
no Python custom-op dispatch per call, and CUDA-graph friendly.

The launches are the same kernels with the same pinned constexprs as the custom op's; only the
host-side choices that set parallelism (split-K or not, tall or short tiles, KV splits run in
parallel or in one program) are made once, from the traced sizes' hints, instead of per call:
they never change the bits (each kernel family's contract), and they install no guard, so one
compiled graph still serves every batch size. CUDA only: the CPU (Triton's interpreter) keeps
the custom ops. One module per op family, each with its ``LOWERINGS`` table.
"""

from __future__ import annotations

import contextlib

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch._inductor.pattern_matcher import CallFunctionVarArgs, Match, PatternMatcherPass, register_graph_pattern
from torch._inductor.virtualized import V

from . import attention, index_accumulate, matmul, matmul_template, moe, reductions, scan
from ._launches import Lowering, traced_launches

LOWERINGS: dict = {}
for _family in (matmul, attention, reductions, scan, moe, index_accumulate):
    LOWERINGS.update(_family.LOWERINGS)


def _pattern_pass() -> PatternMatcherPass:
    graph_pass = PatternMatcherPass(pass_name="inductor_bi_launches")
    for op, lowering in LOWERINGS.items():

        def replace(match: Match, *args, lowering: Lowering = lowering, **kwargs):
            flat, spec = pytree.tree_flatten((args, kwargs))
            body = traced_launches(lowering.implementation)
            match.replace_by_example(lambda *xs: body(*xs, spec=spec), flat, run_functional_passes=False)

        register_graph_pattern(
            CallFunctionVarArgs(op), pass_dict=graph_pass, extra_check=lambda m, t=lowering.traceable: t(m.nodes[0])
        )(replace)
    return graph_pass


def _count(gm: torch.fx.GraphModule) -> int:
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target in LOWERINGS and matmul_template.TEMPLATE not in n.meta)


def _mark_templates(gm: torch.fx.GraphModule) -> None:
    """Mark the matmuls Inductor's template takes (lowerings/matmul_template.py)."""
    matmul_template.register()
    for node in gm.graph.find_nodes(op="call_function", target=matmul_template.OP):
        plan = matmul_template.template_plan(node)
        if plan is not None:
            node.meta[matmul_template.TEMPLATE] = plan


def launch_from_inductor(gm: torch.fx.GraphModule) -> int:
    """Replace every traceable rewritten op in ``gm`` by its kernel launches or mark it for the
    matmul template; how many were."""
    before = _count(gm)
    if not before:
        return 0
    _mark_templates(gm)
    vals = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
    fake_mode = torch._guards.detect_fake_mode(vals)
    # the replacements are traced in the graph's own fake mode: its sizes' symbols, no real tensors
    with V.set_fake_mode(fake_mode) if fake_mode is not None else contextlib.nullcontext():
        _pattern_pass().apply(gm.graph)
    gm.graph.lint()
    gm.recompile()
    return before - _count(gm)
