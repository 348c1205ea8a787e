"""fixed_split_attention launched by Inductor (kernels/attention.py).

What sets the kernel's constexprs must be static: the head dims (the pinned tile and the KV split
length follow them and the dtype), the head counts (GQA packing), the mask's kind and causality.
The batch, Lq and Lk may be symbolic: Lk reaches the kernel as an argument and through the
number of splits, a grid size and a loop bound, never through a constexpr, so a decode step
against a growing cache (a symbolic Lk under ``dynamic=True``) is launched too.

Inductor compiles the kernels it launches with its own options, FMA contraction allowed (it
takes no per-kernel ``enable_fp_fusion``), where the custom op compiles them with contraction off.
Launched are only the calls whose kernels hold no product feeding an add for the compiler to fuse
(``contraction_changes_nothing``: no float mask), so the option
changes no instruction; a float mask keeps the custom op (tests/test_lowering_attention.py
compiles both ways for sm_90 and compares the float instructions).
"""

from __future__ import annotations

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import attention as attention_kernel
from .._fx import fake_value, static_int
from ._launches import Lowering, on_cuda, static_sizes

_Q, _K, _V, _MASK, _IS_CAUSAL, _SCALE, _ENABLE_GQA, _KV_ROWS = range(8)


def _arg(node: torch.fx.Node, i: int):
    """The op's argument ``i`` (schema order; only ``kv_rows`` has a default)."""
    return node.args[i] if i < len(node.args) else node.kwargs.get("kv_rows")


def _decided(n) -> bool:
    """Whether ``n`` is zero is known at compile time (no guard either way)."""
    return static_int(n) is not None or statically_known_true(n >= 1)


def traceable(node: torch.fx.Node) -> bool:
    """CUDA q / k / v of a kernel dtype; no mask or a bool one (see the module's docstring);
    static head dims and head counts; a scale known at compile time; no size that may be zero
    unless it is known to be (whether there is anything to compute is decided at trace time)."""
    if node.kwargs and set(node.kwargs) - {"kv_rows"}:
        return False
    q, k, v = (fake_value(_arg(node, i)) for i in (_Q, _K, _V))
    if not all(isinstance(x, torch.Tensor) for x in (q, k, v)):
        return False
    if not on_cuda(node, _Q, _K, _V, dtypes=attention_kernel.SUPPORTED_DTYPES):
        return False
    mask_node, kv_rows_node = _arg(node, _MASK), _arg(node, _KV_ROWS)
    mask = fake_value(mask_node)
    if mask_node is not None and not (isinstance(mask, torch.Tensor) and mask.device.type == "cuda"):
        return False
    if not attention_kernel.contraction_changes_nothing(mask):
        return False
    if kv_rows_node is not None:
        rows = fake_value(kv_rows_node)
        if not isinstance(rows, torch.Tensor) or rows.device.type != "cuda" or static_int(k.shape[0]) is None:
            return False
    scale = _arg(node, _SCALE)
    if not (scale is None or isinstance(scale, (int, float))) or not isinstance(_arg(node, _IS_CAUSAL), bool):
        return False
    if not all(static_sizes(x, [-1] if x.dim() < 3 else [-1, -3]) for x in (q, k, v)):
        return False  # head dims and head counts set constexprs
    return all(_decided(n) for x in (q, k, v) for n in x.shape)


def implementation(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False, kv_rows=None):
    """The custom op's call of the kernel (its schema: ``kv_rows`` is positional there)."""
    return attention_kernel.fixed_split_attention(q, k, v, attn_mask, is_causal, scale, enable_gqa, kv_rows=kv_rows)


LOWERINGS = {torch.ops.inductor_bi.fixed_split_attention.default: Lowering(implementation, traceable)}
