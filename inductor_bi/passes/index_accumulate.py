"""Rewrite the accumulating index puts of gradients into fixed-order sums.

An embedding's gradient (and that of any ``weight[ids]`` gather) adds each token's gradient row
into its weight row: aten runs it as an accumulating put (``_unsafe_masked_index_put_accumulate``
from Inductor's ``embedding_dense_backward`` decomposition, ``index_put`` / ``_unsafe_index_put``
with ``accumulate=True``, ``embedding_dense_backward`` when it was not decomposed), which adds
with atomics on the GPU: the order, so the bits, follow timing. This pass replaces each by
``inductor_bi::fixed_order_index_put_accumulate`` (``fixed_order_embedding_dense_backward``),
which sums a destination's contributions in ascending source position (kernels/index_accumulate.py).

| op (in a backward graph) | condition | here |
| --- | --- | --- |
| ``_unsafe_masked_index_put_accumulate(dest, mask, indices, values)`` | indices: integer tensors on dest's leading dims | ``fixed_order_index_put_accumulate(dest, indices, values, mask)`` |
| ``index_put`` / ``_unsafe_index_put(dest, indices, values, accumulate=True)`` | the same | ``fixed_order_index_put_accumulate(dest, indices, values)`` |
| ``embedding_dense_backward(grad, indices, num_weights, padding_idx, scale)`` | | ``fixed_order_embedding_dense_backward`` (the same arguments) |
| ``scatter_add(dest, dim, index, src)`` (a gather's gradient) | int64 index | ``fixed_order_scatter_add`` (the same arguments) |

Only gradients. A node is rewritten when aot_autograd traced it while computing the gradient
(``partitioner_tag == "is_backward"``, set on every node autograd's backward formulas emit into
the joint graph; forward nodes the partitioner recomputes in the backward keep "is_forward").
A weight gradient sums over the batch by definition, as a linear's does; what batch invariance
asks of it is a fixed order that a row's contributions keep whatever else is in the batch, and
ascending token position gives that (a row whose loss is not counted contributes zeros, which
change no bit). A forward scatter (``index_add``, ``index_put(accumulate=True)`` in a model's
forward or inference graph) adds rows into destinations that the index values pick: what shares
a destination, and so which other rows' values a row's output is summed with, is the model's own
semantics, not a gradient's; it stays refused by the strict guard, as do index shapes this pass
does not serve (``None`` in the indices, e.g. an upsampling's gradient over its spatial dims;
boolean masks as indices; the in-place ``index_put_``; complex or integer dtypes, integer ones
exact anyway).
"""

from __future__ import annotations

import torch
import torch.fx

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels.index_accumulate_table import INDEX_DTYPES, SUPPORTED_DTYPES
from .._fx import fake_value
from ._rewrite import Rewrite, node_rewrite, replace_node

aten = torch.ops.aten

FIXED_ORDER_PUT = "inductor_bi.fixed_order_index_put_accumulate.default"
FIXED_ORDER_EMBEDDING_BACKWARD = "inductor_bi.fixed_order_embedding_dense_backward.default"
FIXED_ORDER_SCATTER_ADD = "inductor_bi.fixed_order_scatter_add.default"
_ORDER = "each destination's contributions summed in ascending source position, fp32 accumulator (fp64 for float64)"


def traced_by_autograd_backward(node: torch.fx.Node) -> bool:
    """aot_autograd traced ``node`` inside the backward pass (a gradient formula's op). A node
    without the partitioner's tag counts when autograd's pre-hook marked it (older tracing)."""
    tag = node.meta.get("partitioner_tag")
    if tag is not None:
        return tag == "is_backward"
    return bool(node.meta.get("autograd_backward"))


def _leading_indices(dest, indices) -> bool:
    """indices are integer tensors (no None, no bool mask), one per leading dim of dest."""
    if not isinstance(indices, (list, tuple)) or not indices or len(indices) > dest.dim():
        return False
    for index in indices:
        val = fake_value(index)
        if val is None or val.dtype not in INDEX_DTYPES:
            return False
    return True


def _put_args(node: torch.fx.Node):
    """(dest, indices, values, mask) of an accumulating put this pass serves; None otherwise."""
    if node.target is aten._unsafe_masked_index_put_accumulate.default:
        bound = dict(zip(("self", "mask", "indices", "values"), node.args))
        bound.update(node.kwargs)
        mask = bound["mask"]
        if fake_value(mask) is None or fake_value(mask).dtype != torch.bool:
            return None
    elif node.target in (aten.index_put.default, aten._unsafe_index_put.default):
        bound = dict(zip(("self", "indices", "values", "accumulate"), node.args))
        bound.update(node.kwargs)
        if not bound.get("accumulate", False):
            return None  # a plain put writes, it does not add: nothing to order
        mask = None
    else:
        return None
    dest, values, indices = fake_value(bound["self"]), fake_value(bound["values"]), bound["indices"]
    if dest is None or values is None or dest.dtype not in SUPPORTED_DTYPES or values.dtype != dest.dtype:
        return None
    if not _leading_indices(dest, indices):
        return None
    return bound["self"], list(indices), bound["values"], mask


def rewrite_gradient_index_puts(gm: torch.fx.GraphModule) -> list[Rewrite]:
    """Every accumulating put of a gradient this pass serves -> its fixed-order custom op."""
    rewrites = []
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or not traced_by_autograd_backward(node):
            continue
        put = _put_args(node)
        if put is not None:
            dest, indices, values, mask = put
            rewrites.append(node_rewrite(node, FIXED_ORDER_PUT, fake_value(dest).dtype, {"order": _ORDER}))
            replace_node(node, torch.ops.inductor_bi.fixed_order_index_put_accumulate.default, (dest, indices, values, mask))
            continue
        if node.target is aten.embedding_dense_backward.default:
            names = ("grad_output", "indices", "num_weights", "padding_idx", "scale_grad_by_freq")
            bound = dict(zip(names, node.args))
            bound.update(node.kwargs)
            grad, index = fake_value(bound["grad_output"]), fake_value(bound["indices"])
            if grad is None or index is None or grad.dtype not in SUPPORTED_DTYPES or index.dtype not in INDEX_DTYPES:
                continue
            rewrites.append(node_rewrite(node, FIXED_ORDER_EMBEDDING_BACKWARD, grad.dtype, {"order": _ORDER}))
            replace_node(node, torch.ops.inductor_bi.fixed_order_embedding_dense_backward.default, tuple(bound[n] for n in names))
            continue
        if node.target is aten.scatter_add.default:
            bound = dict(zip(("self", "dim", "index", "src"), node.args))
            bound.update(node.kwargs)
            dest, index, src = (fake_value(bound[n]) for n in ("self", "index", "src"))
            if dest is None or index is None or src is None or dest.dtype not in SUPPORTED_DTYPES or src.dtype != dest.dtype:
                continue
            if index.dtype != torch.int64:
                continue
            rewrites.append(node_rewrite(node, FIXED_ORDER_SCATTER_ADD, dest.dtype, {"order": _ORDER}))
            replace_node(node, torch.ops.inductor_bi.fixed_order_scatter_add.default, tuple(bound[n] for n in ("self", "dim", "index", "src")))
    return rewrites
