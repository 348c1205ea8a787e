"""Rewrite scaled_dot_product_attention into ``inductor_bi::fixed_split_attention``.

This pass runs on the Dynamo graph, before aot_autograd: there SDPA is still one call
(F.scaled_dot_product_attention), before aten picks a flash / efficient / cuDNN / math variant
whose split-KV count follows batch x heads. The custom op carries its own autograd formula, so
training graphs trace through it. Any aten SDPA variant that still reaches the aten graph is
caught by the strict guard.
"""

from __future__ import annotations

import torch
import torch.fx

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import configs
from ..kernels.attention import SUPPORTED_DTYPES
from ._rewrite import Rewrite, replace_node, user_source_line
from .guard import Violation

SDPA_TARGETS = {torch._C._nn.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention}
SDPA_PARAMS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
SDPA_DEFAULTS = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}


def _bound_args(node: torch.fx.Node) -> dict:
    bound = dict(SDPA_DEFAULTS)
    bound.update(zip(SDPA_PARAMS, node.args))
    bound.update(node.kwargs)
    return bound


def _shape(arg) -> tuple:
    val = arg.meta.get("example_value", arg.meta.get("val")) if isinstance(arg, torch.fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else ()


def rewrite_attention_calls(gm: torch.fx.GraphModule) -> tuple[list[Rewrite], list[Violation]]:
    """Returns (rewrites, refusals): a refusal is an SDPA call that cannot be made invariant
    (dropout), for the strict guard to raise or warn about."""
    rewrites, refusals = [], []
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in SDPA_TARGETS:
            continue
        a = _bound_args(node)
        source = user_source_line(node)
        if isinstance(a["dropout_p"], torch.fx.Node) or a["dropout_p"] != 0.0:
            refusals.append(
                Violation(
                    op="F.scaled_dot_product_attention",
                    why=f"dropout_p={a['dropout_p']}: random dropout masks cannot be batch-invariant",
                    shapes=[_shape(a["query"]), _shape(a["key"]), _shape(a["value"])],
                    dtype="?",
                    source=source,
                )
            )
            continue
        val = node.meta.get("example_value")
        if isinstance(val, torch.Tensor) and val.dtype not in SUPPORTED_DTYPES:
            # fp64 SDPA runs aten's math path (matmuls + softmax), which the aten-level passes
            # rewrite; any fused variant left is caught by the guard.
            continue
        replace_node(
            node,
            torch.ops.inductor_bi.fixed_split_attention.default,
            (a["query"], a["key"], a["value"], a["attn_mask"], bool(a["is_causal"]), a["scale"], bool(a["enable_gqa"])),
        )
        rewrites.append(
            Rewrite(
                original="F.scaled_dot_product_attention",
                replacement="inductor_bi.fixed_split_attention.default",
                shapes=[_shape(a["query"]), _shape(a["key"]), _shape(a["value"])],
                dtype=str(val.dtype) if isinstance(val, torch.Tensor) else "?",
                source=source,
                details=_config_details(val),
            )
        )
    if rewrites:
        gm.graph.lint()
        gm.recompile()
    return rewrites, refusals


def _config_details(val, device: torch.device | None = None) -> dict:
    """The pinned config the kernel will use; ``device`` overrides the traced one (``explain``
    traces on the CPU and reports the CUDA configs)."""
    if not isinstance(val, torch.Tensor):
        return {"kernel": "fixed_split_attention"}
    device = device or val.device
    cfg = configs.attention_config(val.shape[-1], val.dtype, interpreted=device.type != "cuda")
    details = {
        "kernel": "fixed_split_attention",
        "tile": f"{cfg.block_m}x{cfg.block_n}",
        "kv_split": cfg.kv_split,
        "gqa_packed": configs.attention_pack_rule(cfg),
        "row_sum": "p times a ones matrix on the MMA unit" if configs.ATTENTION_ROW_SUM_BY_MMA else "order-free (exact in any order)",
        "warps": cfg.num_warps,
        "stages": cfg.num_stages,
    }
    if device.type == "cuda":
        merged_by = "the last split program of each tile" if configs.ATTENTION_MERGE_IN_LAST_PROGRAM else "a merge launch"
        details["split_kv"] = f"below {configs.ATTENTION_SPLIT_MAX_PROGRAMS} programs: one program per split, merged in ascending order by {merged_by}"
        if configs.ATTENTION_SPLIT_STAGES is not None:
            details["split_stages"] = configs.attention_stages(cfg, split=True)
        if configs.ATTENTION_ONE_WAVE_STAGES is not None:
            details["one_wave_stages"] = f"{configs.ATTENTION_ONE_WAVE_STAGES} for sequential launches of at most one program per SM"
        if configs.ATTENTION_USE_TMA and val.dtype in configs.TMA_DTYPES:
            fetched = "Q (unpacked), K / V" if configs.ATTENTION_Q_BY_TMA else "K / V"
            details["fetch"] = f"{fetched} by TMA on Hopper where the layout allows, else pointer loads"
    return details
