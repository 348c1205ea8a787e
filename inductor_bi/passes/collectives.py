"""Sums across ranks in a fixed order: ``wait_tensor(all_reduce(x, "sum" | "avg", group))`` becomes
``inductor_bi::fixed_order_all_reduce`` (every rank's ``x`` gathered and added in ascending rank
order), ``wait_tensor(reduce_scatter_tensor(x, ...))`` ``inductor_bi::fixed_order_reduce_scatter``
(every rank's block of this rank's shard, added in ascending rank order; kernels/collectives.py).
The strict guard refuses any sum across ranks this pass leaves (a coalesced or legacy form, a
group this process does not know).
"""

from __future__ import annotations

import torch
import torch.fx

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from .._fx import fake_value
from ..kernels.collectives_table import SUMS
from ._rewrite import Rewrite, input_shapes, replace_node, user_source_line

c10d = torch.ops._c10d_functional


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
