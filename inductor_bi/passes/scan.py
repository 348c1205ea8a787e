"""Rewrite floating-point scans (cumsum, cumprod, logcumsumexp) into fixed-order custom ops.

A scan along a row combines that row's elements only; what makes a stock scan batch-variant is
its order: Inductor scans in blocks it picks from the shape (the row count included), aten's GPU
scans likewise. ``inductor_bi::invariant_cumsum`` / ``invariant_cumprod`` /
``invariant_logcumsumexp`` (kernels/scan.py) scan one row per program in pinned blocks, so a
row's bits are fixed by its own elements, the dtype and pinned constants.

A float product (``prod``) is a cumprod's last element: it runs on the same scan kernel (with a
leading 1 where the length can be 0, so an empty product is 1), instead of a reduction whose order
Inductor picks.

Kept on aten: scans whose result is an integer (``cumsum`` of ints / bools, or with an integer
``dtype=``): integer addition and multiplication are exact in any order. Left for the strict
guard: complex scans and float dtypes the kernel does not serve. Backward graphs need nothing
more: aten's formulas for these ops are reversed scans (rev, scan, rev), an integer cumsum and a
sum, which this pass and the reductions pass rewrite like any other.
"""

from __future__ import annotations

import torch
import torch.fx

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import scan_table
from ._observe import reported_device
from .._fx import fake_value, static_int
from ._rewrite import Rewrite, input_shapes, replace_node, user_source_line

aten = torch.ops.aten
bi = torch.ops.inductor_bi

SCAN_OPS = {
    aten.cumsum.default: bi.invariant_cumsum.default,
    aten.cumprod.default: bi.invariant_cumprod.default,
    aten.logcumsumexp.default: bi.invariant_logcumsumexp.default,
}
_TAKES_DTYPE = {aten.cumsum.default, aten.cumprod.default}


def _bound(node: torch.fx.Node) -> tuple:
    """(x, dim, dtype) of a scan call, positional or keyword."""
    names = ("self", "dim", "dtype")
    bound = dict(zip(names, node.args))
    bound.update(node.kwargs)
    return bound["self"], bound["dim"], bound.get("dtype")


PRODUCT_OPS = (aten.prod.dim_int, aten.prod.default)


def _bound_product(node: torch.fx.Node) -> tuple:
    """(x, dim, keepdim, dtype) of a prod call; dim None for the product of every element."""
    names = ("self", "dim", "keepdim", "dtype") if node.target is aten.prod.dim_int else ("self", "dtype")
    bound = dict(zip(names, node.args))
    bound.update(node.kwargs)
    return bound["self"], bound.get("dim"), bound.get("keepdim", False), bound.get("dtype")


def _rewrite_product(gm: torch.fx.GraphModule, node: torch.fx.Node) -> Rewrite | None:
    x_node, dim, keepdim, dtype = _bound_product(node)
    x, out = fake_value(x_node), fake_value(node)
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or x.is_complex():
        return None
    if out.dtype not in scan_table.SUPPORTED_DTYPES:
        return None  # an integer product is exact on aten
    record = Rewrite(
        original=str(node.target),
        replacement=f"{bi.invariant_cumprod.default} (last element)",
        shapes=input_shapes(node),
        dtype=str(x.dtype) + (f" -> {out.dtype}" if out.dtype != x.dtype else ""),
        source=user_source_line(node),
        details=_config_details(x, dim, out.dtype) if dim is not None and x.dim() else {"kernel": "one row per program"},
    )
    graph = gm.graph
    with graph.inserting_before(node):
        if dim is None or x.dim() == 0:  # every element: one row
            rows, axis, rank = graph.call_function(aten.reshape.default, (x_node, [-1])), 0, 1
            length = static_int(x.numel())
        else:
            rows, axis, rank = x_node, dim % x.dim(), x.dim()
            length = static_int(x.shape[axis])
        if length is None or length == 0:
            pad = [0, 0] * (rank - 1 - axis) + [1, 0]  # one leading 1 along the axis
            rows = graph.call_function(aten.constant_pad_nd.default, (rows, pad, 1.0))
        scanned = graph.call_function(bi.invariant_cumprod.default, (rows, axis, dtype))
        last = graph.call_function(aten.select.int, (scanned, axis, -1))
    if dim is not None and keepdim and x.dim():
        replace_node(node, aten.unsqueeze.default, (last, axis))
    else:
        last.meta = dict(node.meta)
        node.replace_all_uses_with(last)
        graph.erase_node(node)
    return record


def rewrite_scans(gm: torch.fx.GraphModule) -> list[Rewrite]:
    rewrites = []
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in PRODUCT_OPS:
            record = _rewrite_product(gm, node)
            if record is not None:
                rewrites.append(record)
            continue
        if node.op != "call_function" or node.target not in SCAN_OPS:
            continue
        x_node, dim, dtype = _bound(node)
        x, out = fake_value(x_node), fake_value(node)
        if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or x.is_complex():
            continue  # complex: left for the guard
        if out.dtype not in scan_table.SUPPORTED_DTYPES:
            continue  # an integer result is exact on aten; another float dtype is left for the guard
        target = SCAN_OPS[node.target]
        record = Rewrite(
            original=str(node.target),
            replacement=str(target),
            shapes=input_shapes(node),
            dtype=str(x.dtype) + (f" -> {out.dtype}" if out.dtype != x.dtype else ""),
            source=user_source_line(node),
            details=_config_details(x, dim, out.dtype),
        )
        args = (x_node, dim, dtype) if node.target in _TAKES_DTYPE else (x_node, dim)
        replace_node(node, target, args)
        rewrites.append(record)
    return rewrites


def _config_details(x: torch.Tensor, dim: int, out_dtype: torch.dtype) -> dict:
    """The pinned launch for this scan, for the reported device (``_observe.reported_device``).
    Never guards on a symbolic length."""
    length = static_int(x.shape[dim]) if x.dim() else 1
    device = reported_device(x.device)
    return {
        "kernel": "one row per program",
        "L": length if length is not None else "symbolic",
        "block": scan_table.scan_block(device),
        "warps": scan_table.SCAN_WARPS,
        "acc": "float64" if out_dtype == torch.float64 else "float32",
    }
