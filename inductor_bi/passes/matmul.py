"""Rewrite the matmul family (mm, addmm, bmm, baddbmm) into ``inductor_bi::invariant_matmul``.

aten.linear / aten.matmul are CompositeImplicit: by the time the graph is aten-level they are
mm / addmm / bmm plus views, so these four ops are every matmul. Integer matmuls are exact (integer
addition is associative, wrap-around included) and stay on aten.
"""

from __future__ import annotations

import torch

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import configs
from ._rewrite import Rewrite, input_shapes, replace_node, static_int, user_source_line

aten = torch.ops.aten


def _mm(a, b):
    return a, b, None, 1.0, 1.0


def _addmm(bias, a, b, *, beta=1, alpha=1):
    return a, b, bias, float(beta), float(alpha)


# aten op -> its arguments as invariant_matmul's (a, b, bias, beta, alpha)
MATMUL_OPS = {
    aten.mm.default: _mm,
    aten.bmm.default: _mm,
    aten.addmm.default: _addmm,
    aten.baddbmm.default: _addmm,
}


def rewrite_matmuls(gm: torch.fx.GraphModule) -> list[Rewrite]:
    rewrites = []
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in MATMUL_OPS:
            continue
        val = node.meta.get("val")
        if val is None or not val.dtype.is_floating_point:
            continue  # integer matmul: exact, kept
        args = MATMUL_OPS[node.target](*node.args, **node.kwargs)
        record = Rewrite(
            original=str(node.target),
            replacement="inductor_bi.invariant_matmul.default",
            shapes=input_shapes(node),
            dtype=str(val.dtype),
            source=user_source_line(node),
            details=_config_details(val, args[1].meta["val"].shape[-2]),
        )
        replace_node(node, torch.ops.inductor_bi.invariant_matmul.default, args)
        rewrites.append(record)
    return rewrites


def _config_details(val: torch.Tensor, k, device: torch.device | None = None) -> dict:
    """The pinned config the kernel will use and how K falls into its fixed chunks (the unit of
    split-K); ``device`` overrides the traced one (``explain`` traces on the CPU and reports the
    CUDA configs)."""
    if val.dtype not in configs.MATMUL_CUDA:
        return {}
    device = device or val.device
    cfg = configs.matmul_config(val.dtype, device, interpreted=device.type != "cuda")
    details = {
        "kernel": "invariant_matmul",
        "tile": f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k}",
        "k_chunk": cfg.k_chunk,
        "warps": cfg.num_warps,
        "stages": cfg.num_stages,
    }
    tall = configs.MATMUL_CUDA_TALL.get(val.dtype) if device.type == "cuda" else None
    if tall is not None:  # a launch shape over the same arithmetic, for outputs that fill the GPU
        details["tall_tile"] = f"{tall.block_m}x{tall.block_n}x{tall.block_k}, {tall.num_warps} warps, {tall.num_stages} stages (Hopper)"
    if device.type == "cuda" and val.dtype in configs.TMA_DTYPES and configs.MATMUL_USE_TMA:
        details["fetch"] = "TMA on Hopper where the layout allows, else pointer loads"
    k = static_int(k)
    if k is None:
        details["K"] = "symbolic: chunks of k_chunk"
    else:
        chunk = configs.matmul_k_chunk(cfg, k)
        details["K"] = f"{k} = {-(-k // chunk)} chunk(s) of {chunk}"
    if device.type == "cuda" and (k is None or k > chunk):
        merged_by = "the last chunk program of each tile" if configs.MATMUL_MERGE_IN_LAST_PROGRAM else "a merge launch"
        details["split_k"] = f"below {configs.MATMUL_SPLIT_K_MAX_TILES} output tiles: one program per chunk, merged in ascending order by {merged_by}"
    return details
