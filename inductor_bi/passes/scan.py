"""Rewrite floating-point scans (cumsum, cumprod, logcumsumexp) into fixed-order custom ops.

A scan along a row combines that row's elements only; what makes a stock scan batch-variant is
its order: Inductor scans in blocks it picks from the shape (the row count included), aten's GPU
scans likewise. ``inductor_bi::invariant_cumsum`` / ``invariant_cumprod`` /
``invariant_logcumsumexp`` (kernels/scan.py) scan one row per program in pinned blocks, so a
row's bits are fixed by its own elements, the dtype and pinned constants.

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
from ..kernels import scan as scan_kernel
from ._rewrite import Rewrite, fake_value, input_shapes, replace_node, static_int, user_source_line

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


def rewrite_scans(gm: torch.fx.GraphModule) -> list[Rewrite]:
    rewrites = []
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in SCAN_OPS:
            continue
        x_node, dim, dtype = _bound(node)
        x, out = fake_value(x_node), fake_value(node)
        if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or x.is_complex():
            continue  # complex: left for the guard
        if out.dtype not in scan_kernel.SUPPORTED_DTYPES:
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


def _config_details(x: torch.Tensor, dim: int, out_dtype: torch.dtype, device: torch.device | None = None) -> dict:
    """The pinned launch for this scan; ``device`` overrides the traced one (``explain`` traces on
    the CPU and reports CUDA's). Never guards on a symbolic length."""
    length = static_int(x.shape[dim]) if x.dim() else 1
    device = device or x.device
    return {
        "kernel": "one row per program",
        "L": length if length is not None else "symbolic",
        "block": scan_kernel.scan_block(device),
        "warps": scan_kernel.SCAN_WARPS,
        "acc": "float64" if out_dtype == torch.float64 else "float32",
    }
