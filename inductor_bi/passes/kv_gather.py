"""Read a KV cache in place: fold ``cache[rows]`` gathers into the attention kernel.

A serving step hands attention each row's own cache slot, ``k_cache[slots, :, :kv_len]``: in the
aten graph an ``index`` (a gather copy of every row's whole K and V, per layer and step) feeding
``fixed_split_attention``. Stock torch.compile pays the same copy before its SDPA call. With
``attention_table.ATTENTION_FOLD_KV_GATHER`` the attention call takes the cache itself and the slots
(``kv_rows``) and each program reads its row's slot: which memory, never which arithmetic, so
the bits are the gathered call's. torch's indexing raises on a slot out of range; the folded
graph asserts the same once per slots tensor (asynchronously, as Inductor's own index checks).
"""

from __future__ import annotations

import torch

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import attention_table
from .._fx import fake_value, static_int
from ._rewrite import Rewrite, input_shapes, user_source_line

aten = torch.ops.aten
bi = torch.ops.inductor_bi


def _gather(node):
    """``(cache, rows)`` when ``node`` is ``cache[rows]`` (one 1-D integer index on dim 0) used only
    by the attention call; else None."""
    if not isinstance(node, torch.fx.Node) or node.target is not aten.index.Tensor or len(node.users) != 1:
        return None
    cache, indices = node.args[0], node.args[1]
    if len(indices) != 1 or not isinstance(indices[0], torch.fx.Node):
        return None
    rows = fake_value(indices[0])
    if not isinstance(rows, torch.Tensor) or rows.dim() != 1 or rows.dtype not in (torch.int32, torch.int64):
        return None
    if not isinstance(fake_value(cache), torch.Tensor) or fake_value(cache).dim() != 4:
        return None
    return cache, indices[0]


def fold_kv_gathers(gm: torch.fx.GraphModule) -> list[Rewrite]:
    if not attention_table.ATTENTION_FOLD_KV_GATHER:
        return []
    graph = gm.graph
    rewrites, checked = [], set()
    for node in list(graph.nodes):
        if node.target is not bi.fixed_split_attention.default or len(node.args) != 7 or node.kwargs:
            continue
        q, k, v = node.args[:3]
        k_gather, v_gather = _gather(k), _gather(v)
        if k_gather is None or v_gather is None or k_gather[1] is not v_gather[1] or fake_value(q).dim() != 4:
            continue
        (k_cache, rows), (v_cache, _) = k_gather, v_gather
        slots = static_int(fake_value(k_cache).shape[0])
        if slots is None or static_int(fake_value(v_cache).shape[0]) != slots:
            continue  # a symbolic cache size: leave the gather (its range check is torch's)
        if rows not in checked:
            checked.add(rows)
            with graph.inserting_before(node):
                ok = graph.call_function(aten.logical_and.default, (
                    graph.call_function(aten.ge.Scalar, (rows, -slots)), graph.call_function(aten.lt.Scalar, (rows, slots))))
                # all() as the min over 0/1: Inductor lowers amin itself (all() it expects decomposed)
                every = graph.call_function(aten.amin.default, (graph.call_function(torch.ops.prims.convert_element_type.default, (ok, torch.int32)), [0]))
                graph.call_function(aten._assert_async.msg, (every, f"inductor_bi: a KV cache slot is out of range [-{slots}, {slots})"))  # fmt: skip
        node.args = (q, k_cache, v_cache, *node.args[3:], rows)
        # Inductor lays a custom op's inputs out as the traced call saw them (eager_input_vals):
        # the call's inputs changed, so say what they are now.
        node.meta["eager_input_vals"] = (tuple(fake_value(a) if isinstance(a, torch.fx.Node) else a for a in node.args), {})
        graph.erase_node(k)
        graph.erase_node(v)
        rewrites.append(Rewrite(
            original="fixed_split_attention of cache[rows]",
            replacement="fixed_split_attention(kv_rows=rows): the cache read in place",
            shapes=input_shapes(node),
            dtype=str(fake_value(q).dtype),
            source=user_source_line(node),
            details={"kv_rows": "each batch row reads its cache slot; no gather copy", "slots": slots},
        ))  # fmt: skip
    return rewrites
