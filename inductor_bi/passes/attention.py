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
from ..kernels import _device, attention_table
from ._observe import reported_device
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


def dropout_value(arg) -> float | None:
    """``dropout_p`` as known when compiling: a Python number, or the value Dynamo traced with
    (under dynamic=True a float argument or module attribute reaches the graph as a 0-dim tensor
    and ``.item()``, a SymFloat with that value as its hint). Reading it guards on whether it is
    zero, so the compiled graph never serves a call with the other kind. None: known only at run
    time (an unbacked value read from a tensor's data)."""
    if isinstance(arg, torch.fx.Node):
        arg = arg.meta.get("example_value", arg.meta.get("val"))
    if isinstance(arg, (bool, int, float)):
        return float(arg)
    if isinstance(arg, (torch.SymFloat, torch.SymInt)):
        hint = arg.node.hint
        if hint is None:
            return None
        return 0.0 if bool(arg == 0) else float(hint)
    return None


def math_attention(q, k, v, attn_mask, is_causal, scale, enable_gqa):
    """SDPA by aten's math path: q k^T, softmax, p v, each a matmul / softmax that the aten passes
    rewrite to an invariant kernel (float64, which the attention kernel has no tiles for). A bool
    mask becomes 0 / -inf first, as SDPA does before picking a backend."""
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(~attn_mask, float("-inf"))
    out, _ = torch.ops.aten._scaled_dot_product_attention_math.default(
        q, k, v, attn_mask, 0.0, is_causal, None, scale=scale, enable_gqa=enable_gqa
    )
    return out


MATH_PATH_DTYPES = (torch.float64,)


def rewrite_attention_calls(gm: torch.fx.GraphModule) -> tuple[list[Rewrite], list[Violation]]:
    """Returns (rewrites, refusals): a refusal is an SDPA call that cannot be made invariant
    (dropout), for the strict guard to raise or warn about."""
    rewrites, refusals = [], []
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in SDPA_TARGETS:
            continue
        a = _bound_args(node)
        source = user_source_line(node)
        val = node.meta.get("example_value")
        dtype = str(val.dtype) if isinstance(val, torch.Tensor) else "?"
        shapes = [_shape(a["query"]), _shape(a["key"]), _shape(a["value"])]
        dropout = dropout_value(a["dropout_p"])
        if dropout != 0.0:
            if dropout is None:
                why = (
                    "dropout_p is known only at run time (read from a tensor), so it cannot be checked to be 0 here: "
                    "pass it as a Python float (0.0 for no dropout)"
                )
            else:
                why = (
                    f"dropout_p={dropout}: random dropout masks cannot be batch-invariant; "
                    "pass dropout_p=0.0 (model.eval(), or an attention dropout of 0 in the model's config)"
                )
            refusals.append(Violation(op="F.scaled_dot_product_attention", why=why, shapes=shapes, dtype=dtype, source=source))
            continue
        args = (a["query"], a["key"], a["value"], a["attn_mask"], bool(a["is_causal"]), a["scale"], bool(a["enable_gqa"]))
        if isinstance(val, torch.Tensor) and val.dtype in MATH_PATH_DTYPES:
            replace_node(node, math_attention, args)
            rewrites.append(
                Rewrite(
                    original="F.scaled_dot_product_attention",
                    replacement=f"aten._scaled_dot_product_attention_math ({val.dtype})".replace("torch.", ""),
                    shapes=shapes,
                    dtype=dtype,
                    source=source,
                    details={"kernel": "q k^T, softmax and p v, each rewritten by the aten passes (invariant_matmul, invariant_softmax)"},
                )
            )
            continue
        if isinstance(val, torch.Tensor) and val.dtype not in attention_table.SUPPORTED_DTYPES:
            continue  # no kernel for it: aten's SDPA stays, and the strict guard names it
        replace_node(node, torch.ops.inductor_bi.fixed_split_attention.default, args)
        rewrites.append(
            Rewrite(
                original="F.scaled_dot_product_attention",
                replacement="inductor_bi.fixed_split_attention.default",
                shapes=shapes,
                dtype=dtype,
                source=source,
                details=_config_details(val),
            )
        )
    if rewrites:
        gm.graph.lint()
        gm.recompile()
    return rewrites, refusals


def _config_details(val) -> dict:
    """The pinned config the kernel will use, for the reported device (``_observe.reported_device``)."""
    if not isinstance(val, torch.Tensor):
        return {"kernel": "fixed_split_attention"}
    device = reported_device(val.device)
    cfg = attention_table.attention_config(val.shape[-1], val.dtype, interpreted=device.type != "cuda")
    details = {
        "kernel": "fixed_split_attention",
        "tile": f"{cfg.block_m}x{cfg.block_n}",
        "kv_split": cfg.kv_split,
        "gqa_packed": attention_table.attention_pack_rule(cfg),
        "row_sum": "p times a ones matrix on the MMA unit",
        "warps": cfg.num_warps,
        "stages": cfg.num_stages,
    }
    if device.type == "cuda":
        merged_by = "the last split program of each tile" if attention_table.ATTENTION_MERGE_IN_LAST_PROGRAM else "a merge launch"
        details["split_kv"] = f"below {attention_table.ATTENTION_SPLIT_MAX_PROGRAMS} programs: one program per split, merged in ascending order by {merged_by}"
        if attention_table.ATTENTION_SPLIT_STAGES is not None:
            details["split_stages"] = attention_table.attention_stages(cfg, split=True)
        if attention_table.ATTENTION_ONE_WAVE_STAGES is not None:
            details["one_wave_stages"] = f"{attention_table.ATTENTION_ONE_WAVE_STAGES} for sequential launches of at most one program per SM"
        if val.dtype in _device.TMA_DTYPES:
            fetched = "Q (unpacked), K / V" if attention_table.ATTENTION_Q_BY_TMA else "K / V"
            details["fetch"] = f"{fetched} by TMA on Hopper where the layout allows, else pointer loads"
        details["launch"] = "by Inductor's generated code without a float mask and with static head dims (lowerings/attention.py): splits merged by a merge launch, K / V by pointer loads; otherwise the custom op, as above"
    return details
