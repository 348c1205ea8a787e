"""Rewrite the ops of mixture-of-experts routing into invariant or exact forms.

What Hugging Face's default MoE experts path ("grouped_mm", transformers 5.x) leaves in the aten
graph, and what this pass does with each op:

| op | as aten runs it | here |
| --- | --- | --- |
| ``aten._grouped_mm`` (bf16 weights), ``transformers::grouped_mm_fallback`` (other dtypes) | one GEMM per expert with M = its token count: the row's bits follow the batch | ``inductor_bi::invariant_grouped_mm`` (one grouped launch with invariant_matmul's arithmetic; offsets read on the device) |
| ``aten.histc`` over float32 / float64 (tokens per expert, CPU / MPS) | float counts (partial histograms / atomics) | ``inductor_bi::exact_histc`` (aten's bins, int64 counts) |
| ``aten.cumsum(x_float, dtype=int)`` (group offsets) | torch casts x to the integer dtype, then scans | the same, spelled out: convert, then an integer cumsum (exact; the guard accepts it) |

topk, sort (expert order; ties may order differently in another batch, which only permutes rows
inside a group: each row's bits do not depend on its place), index / index_put without
accumulate, and integer histc are exact and left as they are. Anything of these families in
another form (a grouped matmul with bias or another output dtype, bf16 histc, a float cumsum) is
left unchanged for the strict guard to judge.
"""

from __future__ import annotations

import torch
import torch.fx

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels.matmul_table import SUPPORTED_DTYPES as MATMUL_DTYPES
from ..kernels.moe_table import HISTC_DTYPES
from ._rewrite import Rewrite, node_rewrite, replace_node

aten = torch.ops.aten
prims = torch.ops.prims

TRANSFORMERS_GROUPED_MM = "transformers.grouped_mm_fallback.default"
_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)


def _val(arg):
    return arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None


def _grouped_mm_args(node: torch.fx.Node):
    """(a, b, offs) when the call is the [S, K] x [G, K, N] ragged form the kernel serves."""
    if node.target is aten._grouped_mm.default:
        names = ("self", "mat2", "offs", "bias", "out_dtype")
        bound = dict(zip(names, node.args))
        bound.update(node.kwargs)
        if bound.get("bias") is not None:
            return None
        a, b, offs = bound["self"], bound["mat2"], bound.get("offs")
        out_dtype = bound.get("out_dtype")
    elif str(node.target) == TRANSFORMERS_GROUPED_MM:
        names = ("input", "weight", "offs")
        bound = dict(zip(names, node.args))
        bound.update(node.kwargs)
        a, b, offs, out_dtype = bound["input"], bound["weight"], bound["offs"], None
    else:
        return None
    va, vb = _val(a), _val(b)
    if offs is None or va is None or vb is None or va.dim() != 2 or vb.dim() != 3:
        return None
    if va.dtype != vb.dtype or va.dtype not in MATMUL_DTYPES or out_dtype not in (None, va.dtype):
        return None
    return a, b, offs


def rewrite_moe_routing(gm: torch.fx.GraphModule) -> list[Rewrite]:
    rewrites = []
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue

        grouped = _grouped_mm_args(node)
        if grouped is not None:
            a, b, offs = grouped
            record = node_rewrite(
                node, "inductor_bi.invariant_grouped_mm.default", _val(a).dtype, {"kernel": "one grouped launch, invariant_matmul's arithmetic per row"}
            )
            replace_node(node, torch.ops.inductor_bi.invariant_grouped_mm.default, (a, b, offs))
            rewrites.append(record)
            continue

        if node.target is aten.histc.default:
            bound = dict(zip(("self", "bins", "min", "max"), node.args))
            bound.update(node.kwargs)
            x = _val(bound["self"])
            if x is None or x.dtype not in HISTC_DTYPES:
                continue  # integer histc is exact; bf16 / fp16 stay for the guard
            record = node_rewrite(node, "inductor_bi.exact_histc.default", x.dtype, {"count": "int64"})
            args = (bound["self"], int(bound.get("bins", 100)), float(bound.get("min", 0)), float(bound.get("max", 0)))
            replace_node(node, torch.ops.inductor_bi.exact_histc.default, args)
            rewrites.append(record)
            continue

        if node.target is aten.cumsum.default and node.kwargs.get("dtype") in _INTEGER_DTYPES:
            src = node.args[0]
            x = _val(src)
            if x is None or not x.dtype.is_floating_point:
                continue
            dtype = node.kwargs["dtype"]
            with graph.inserting_before(node):
                cast = graph.call_function(prims.convert_element_type.default, (src, dtype))
            cast.meta = {k: v for k, v in node.meta.items() if k != "val"}
            cast.meta["val"] = x.to(dtype)
            record = node_rewrite(node, "aten.cumsum.default (integer)", x.dtype, {"cast_first_to": str(dtype)})
            dim = node.args[1] if len(node.args) > 1 else node.kwargs["dim"]
            replace_node(node, aten.cumsum.default, (cast, dim), {"dtype": dtype})  # int32 would widen to int64
            rewrites.append(record)
    return rewrites
