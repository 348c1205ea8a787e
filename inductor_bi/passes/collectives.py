"""Sums across ranks in a fixed order: ``wait_tensor(all_reduce(x, "sum" | "avg", group))`` becomes
an all-gather of every rank's ``x`` and their sum in ascending rank order, accumulated in fp32
(fp64 for fp64) and rounded once.

NCCL picks an all-reduce's algorithm, protocol and channel count from the message size, which
follows the batch, and with them the order in which the ranks' values are added. An all-gather
moves values without adding them, so the order of the sum is the rank order: a function of the
world size only. The gathered partials are W times the message: bandwidth for invariance; the
strict guard refuses any sum across ranks this pass leaves (reduce-scatter, an all-reduce whose
group size is unknown here).
"""

from __future__ import annotations

import contextlib

import torch
import torch.fx
from torch._inductor.pattern_matcher import CallFunction, KeywordArg, Match, PatternMatcherPass, register_graph_pattern
from torch._inductor.virtualized import V

from .._fx import fake_value
from ._rewrite import Rewrite, input_shapes, user_source_line

c10d = torch.ops._c10d_functional
SUMS = ("sum", "avg")


def _group_size(group_name: str) -> int | None:
    """The number of ranks in the process group ``group_name`` of this process, or None."""
    try:
        from torch.distributed.distributed_c10d import _resolve_process_group

        return _resolve_process_group(group_name).size()
    except Exception:  # noqa: BLE001 - no such group here: the all-reduce is left to the guard
        return None


def fixed_order_all_reduce(x: torch.Tensor, op: str, group_name: str, world: int) -> torch.Tensor:
    """Every rank's ``x`` gathered and added in ascending rank order in the accumulation dtype."""
    gathered = c10d.wait_tensor(c10d.all_gather_into_tensor(x.contiguous(), world, group_name))
    parts = gathered.view(world, *x.shape)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    total = parts[0].to(acc_dtype)
    for rank in range(1, world):
        total = total + parts[rank].to(acc_dtype)
    if op == "avg":
        total = total / world
    return total.to(x.dtype)


def _rewritable(match: Match) -> bool:
    reduce = match.nodes[0] if match.nodes[0].target is c10d.all_reduce.default else match.nodes[-1]
    x, op, group_name = reduce.args[:3]
    val = fake_value(x)
    return (
        op in SUMS
        and isinstance(val, torch.Tensor)
        and val.dtype.is_floating_point
        and len(reduce.users) == 1
        and _group_size(group_name) is not None
    )


def rewrite_collective_sums(gm: torch.fx.GraphModule) -> list[Rewrite]:
    nodes = list(gm.graph.find_nodes(op="call_function", target=c10d.all_reduce.default))
    if not nodes:
        return []
    records = {n: _record(n) for n in nodes}
    graph_pass = PatternMatcherPass(pass_name="inductor_bi_collectives")
    rewritten: list[Rewrite] = []

    def replace(match: Match, x, op, group_name):
        reduce = next(n for n in match.nodes if n.target is c10d.all_reduce.default)
        world = _group_size(group_name)
        match.replace_by_example(
            lambda t: fixed_order_all_reduce(t, op, group_name, world), [x], run_functional_passes=False
        )
        record = records[reduce]
        record.details["ranks"] = f"{world}: all-gather, then summed in ascending rank order"
        rewritten.append(record)

    register_graph_pattern(
        CallFunction(c10d.wait_tensor.default, CallFunction(c10d.all_reduce.default, KeywordArg("x"), KeywordArg("op"), KeywordArg("group_name"))),
        pass_dict=graph_pass,
        extra_check=_rewritable,
    )(replace)
    vals = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
    fake_mode = torch._guards.detect_fake_mode(vals)
    with V.set_fake_mode(fake_mode) if fake_mode is not None else contextlib.nullcontext():
        graph_pass.apply(gm.graph)
    gm.graph.lint()
    gm.recompile()
    return rewritten


def _record(node: torch.fx.Node) -> Rewrite:
    val = fake_value(node.args[0])
    acc = "float64" if getattr(val, "dtype", None) == torch.float64 else "float32"
    return Rewrite(
        original=str(node.target),
        replacement="all_gather_into_tensor + a sum in ascending rank order",
        shapes=input_shapes(node),
        dtype=str(getattr(val, "dtype", "?")),
        source=user_source_line(node),
        details={"accumulate": acc, "op": str(node.args[1])},
    )
