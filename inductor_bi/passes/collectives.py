"""Sums across ranks in a fixed order. A row-parallel matmul summed across ranks,
``wait_tensor(all_reduce(invariant_matmul(a, b), "sum"))`` with each rank's K a whole number of
the kernel's fixed K chunks, becomes ``inductor_bi::chunk_ordered_all_reduce_matmul``: every
rank's unrounded chunk partials gathered and added in ascending chunk order, the order of the
unsplit matmul, so its bits are the same at every number of ranks. Any other
``wait_tensor(all_reduce(x, "sum" | "avg", group))`` becomes ``inductor_bi::fixed_order_all_reduce``
(every rank's ``x`` gathered and added in ascending rank order), and
``wait_tensor(reduce_scatter_tensor(x, ...))`` ``inductor_bi::fixed_order_reduce_scatter`` (every
rank's block of this rank's shard, added in ascending rank order; kernels/collectives.py).
The strict guard refuses any sum across ranks this pass leaves (a coalesced or legacy form, a
group this process does not know).
"""

from __future__ import annotations

import torch
import torch.fx

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from .._fx import fake_value, static_int
from ..kernels import matmul_table
from ..kernels.collectives_table import SUMS
from ._rewrite import Rewrite, input_shapes, replace_node, user_source_line

c10d = torch.ops._c10d_functional
aten = torch.ops.aten
_MATMUL = torch.ops.inductor_bi.invariant_matmul.default
_VIEWS = (aten.view.default, aten._unsafe_view.default, aten.reshape.default)


def _group_size(group_name: str) -> int | None:
    """The number of ranks in the process group ``group_name`` of this process, or None."""
    try:
        from torch.distributed.distributed_c10d import _resolve_process_group

        return _resolve_process_group(group_name).size()
    except Exception:  # noqa: BLE001 - no such group here: the all-reduce is left to the guard
        return None


# functional collective -> (fixed-order op, the arguments after ``x`` it keeps, what the ranks do)
_FIXED_ORDER = {
    c10d.all_reduce.default: (
        torch.ops.inductor_bi.fixed_order_all_reduce.default, slice(1, 3), "all-gathered, then added in ascending rank order"),
    c10d.reduce_scatter_tensor.default: (
        torch.ops.inductor_bi.fixed_order_reduce_scatter.default, slice(1, 4),
        "this rank's shard from every rank (all-to-all), added in ascending rank order"),
}


def _row_parallel_matmuls(x: torch.fx.Node) -> list[torch.fx.Node] | None:
    """The ``invariant_matmul(a, b)`` nodes whose outputs ``x`` is, through views and additions
    used by nothing else (a layer may add several row-parallel partials before one all-reduce), if
    each one's partials can be merged in the unsplit matmul's order: 2-D, unscaled, no bias, a static
    K of whole fixed K chunks. The sum across ranks of the terms' sum is then the sum of each
    term's own sum across ranks, added as the one-device graph adds them. Else None."""
    while x.op == "call_function" and x.target in _VIEWS and len(x.users) == 1:
        x = x.args[0]
    if x.op == "call_function" and x.target is aten.add.Tensor and len(x.users) == 1 and x.kwargs.get("alpha", 1) == 1:
        terms = [t for arg in x.args[:2] for t in (_row_parallel_matmuls(arg) if isinstance(arg, torch.fx.Node) else None) or [None]]
        return None if None in terms or len(set(terms)) != len(terms) else terms
    if x.op != "call_function" or x.target is not _MATMUL or len(x.users) != 1:
        return None
    a, b, bias, _beta, alpha = x.args
    av, bv = fake_value(a), fake_value(b)
    if bias is not None or alpha != 1.0 or av is None or bv is None or av.dim() != 2 or bv.dim() != 2:
        return None
    if av.dtype not in matmul_table.MATMUL_CUDA or av.dtype.is_complex:
        return None
    k = static_int(av.shape[-1])
    cfg = matmul_table.matmul_config(av.dtype, av.device, interpreted=av.device.type != "cuda")
    # every rank's chunks are the unsplit K's chunks only if the slice is whole chunks of the
    # pinned size (a shorter K would shrink its chunk: matmul_k_chunk)
    if k is None or k % cfg.k_chunk:
        return None
    return [x]


def _chunk_ordered(node: torch.fx.Node, wait: torch.fx.Node, matmuls: list[torch.fx.Node], world: int, gm) -> Rewrite:
    dtype = fake_value(matmuls[0].args[0]).dtype
    record = Rewrite(
        original=f"{node.target} of {len(matmuls)} {_MATMUL}",
        replacement=str(torch.ops.inductor_bi.chunk_ordered_all_reduce_matmul.default),
        shapes=[shape for m in matmuls for shape in input_shapes(m)[:2]],
        dtype=str(dtype),
        source=user_source_line(node),
        details={
            "op": "sum",
            "ranks": f"{world}: every rank's K chunk partials gathered, added in ascending chunk order "
            "(the unsplit matmul's order: the same bits at every number of ranks)",
            "accumulate": "float64" if dtype == torch.float64 else "float32",
        },
    )
    for matmul in matmuls:
        replace_node(matmul, torch.ops.inductor_bi.chunk_ordered_all_reduce_matmul.default, (*matmul.args[:2], node.args[2]))
    wait.replace_all_uses_with(node.args[0])
    gm.graph.erase_node(wait)
    gm.graph.erase_node(node)
    return record


def rewrite_collective_sums(gm: torch.fx.GraphModule) -> list[Rewrite]:
    rewrites = []
    for collective, (fixed_order, kept, how) in _FIXED_ORDER.items():
        for node in list(gm.graph.find_nodes(op="call_function", target=collective)):
            x, op, group_name = node.args[0], node.args[1], node.args[-1]
            val = fake_value(x)
            (wait, *others) = list(node.users) or [None]
            if (
                op not in SUMS
                or not (isinstance(val, torch.Tensor) and val.dtype.is_floating_point)
                or others
                or wait is None
                or wait.target is not c10d.wait_tensor.default
            ):
                continue
            world = _group_size(group_name)
            if world is None:
                continue
            matmuls = _row_parallel_matmuls(x) if collective is c10d.all_reduce.default and op == "sum" else None
            if matmuls:
                rewrites.append(_chunk_ordered(node, wait, matmuls, world, gm))
                continue
            record = Rewrite(
                original=str(node.target),
                replacement=str(fixed_order),
                shapes=input_shapes(node),
                dtype=str(val.dtype),
                source=user_source_line(node),
                details={
                    "op": op,
                    "ranks": f"{world}: {how}",
                    "accumulate": "float64" if val.dtype == torch.float64 else "float32",
                },
            )
            replace_node(wait, fixed_order, (x, *node.args[kept]))
            gm.graph.erase_node(node)
            rewrites.append(record)
    return rewrites
