"""Rewrite the matmul family (mm, addmm, bmm, baddbmm) into ``inductor_bi::invariant_matmul``.

aten.linear / aten.matmul are CompositeImplicit: by the time the graph is aten-level they are
mm / addmm / bmm plus views, so these four ops are every matmul. Complex matmuls go to the same
kernel as one real matmul of their parts (``kernels/matmul.py``). Integer matmuls are exact (integer
addition is associative, wrap-around included) and stay on aten; a matmul eager PyTorch refuses for
its dtype (bool) fails at trace time with eager's reason (``DECOMPOSITIONS``). Any other matmul left
(another dtype, complex alpha / beta) is the strict guard's to refuse.
"""

from __future__ import annotations

import torch

import functools

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import _device, matmul_table
from ..kernels.matmul_table import COMPLEX_DTYPES, SUPPORTED_DTYPES
from ._observe import reported_device
from .._fx import static_int
from ._rewrite import Rewrite, input_shapes, replace_node, source_from_meta, user_source_line

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


@functools.lru_cache(maxsize=None)
def _eager_refusal(op, operands: tuple, device: torch.device) -> str | None:
    """What eager PyTorch raises for ``op`` on operands of these (rank, dtype) on ``device``, or
    None when it runs: asked of eager itself, on 1-element tensors outside any tracing mode."""
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        tensors = [torch.zeros([1] * rank, dtype=dtype, device=device) for rank, dtype in operands]
        try:
            op(*tensors)
        except RuntimeError as e:  # NotImplementedError included
            return str(e).splitlines()[0]
    return None


def _fail_as_eager_does(op):
    """A decomposition of a matmul op that only ever fails: for a dtype eager has no kernel for
    (bool), it raises eager's reason at trace time, where Inductor would crash on the graph with
    an unrelated message; for any other dtype it returns NotImplemented (the op stays whole)."""

    def decomposition(*args, **kwargs):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors or any(t.dtype.is_floating_point or t.dtype.is_complex for t in tensors):
            return NotImplemented
        reason = _eager_refusal(op, tuple((t.dim(), t.dtype) for t in tensors), tensors[0].device)
        if reason is None:
            return NotImplemented  # integer matmuls: exact, compiled as eager runs them
        where = source_from_meta(torch.fx.traceback.get_current_meta() or {})
        where = "" if where == "<unknown source line>" else f" at {where}"
        dtypes = sorted({str(t.dtype) for t in tensors})
        raise RuntimeError(
            f"{op} of {', '.join(dtypes)} tensors{where}: eager PyTorch has no such matmul either "
            f"({reason}). Cast the operands to an integer dtype (exact, compiled as is) or to a "
            "floating dtype (rewritten to the invariant matmul)."
        )

    return decomposition


# For aot_autograd's decomposition table (backend.decompositions): the matmul ops stay whole.
DECOMPOSITIONS = {op: _fail_as_eager_does(op) for op in MATMUL_OPS}


def rewritable(node: torch.fx.Node) -> bool:
    """A matmul node the invariant kernel takes: a supported floating or complex dtype, real
    alpha / beta (the kernel's epilogue scales in the real accumulator dtype)."""
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor) or val.dtype not in SUPPORTED_DTYPES + COMPLEX_DTYPES:
        return False
    scalars = [node.kwargs.get(k) for k in ("alpha", "beta")]
    return not any(isinstance(x, complex) for x in scalars)


def rewrite_matmuls(gm: torch.fx.GraphModule) -> list[Rewrite]:
    rewrites = []
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in MATMUL_OPS or not rewritable(node):
            continue  # integer: exact, kept; anything else: the strict guard's
        val = node.meta["val"]
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


def _config_details(val: torch.Tensor, k) -> dict:
    """The pinned config the kernel will use and how K falls into its fixed chunks (the unit of
    split-K), for the reported device (``_observe.reported_device``)."""
    dtype = val.dtype.to_real()
    if dtype not in matmul_table.MATMUL_CUDA:
        return {}
    device = reported_device(val.device)
    cfg = matmul_table.matmul_config(dtype, device, interpreted=device.type != "cuda")
    details = {
        "kernel": "invariant_matmul",
        "tile": f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k}",
        "k_chunk": cfg.k_chunk,
        "warps": cfg.num_warps,
        "stages": cfg.num_stages,
    }
    if val.dtype.is_complex:
        details["complex"] = f"one {dtype} matmul [Re a | Im a] @ [[Re b, Im b], [-Im b, Re b]] = [Re | Im]: K' = 2K"
        k = 2 * k
    tall = matmul_table.MATMUL_CUDA_TALL.get(dtype) if device.type == "cuda" else None
    if tall is not None:  # a launch shape over the same arithmetic, for outputs that fill the GPU
        details["tall_tile"] = f"{tall.block_m}x{tall.block_n}x{tall.block_k}, {tall.num_warps} warps, {tall.num_stages} stages (Hopper)"
    k = static_int(k)
    # a static K on CUDA: Inductor launches the kernels itself (lowerings/matmul.py), no TMA, merge launch
    launched = device.type == "cuda" and k is not None and not val.dtype.is_complex
    if device.type == "cuda" and dtype in _device.TMA_DTYPES and not launched:
        details["fetch"] = "TMA on Hopper where the layout allows, else pointer loads"
    if k is None:
        details["K"] = ("K' = 2K, " if val.dtype.is_complex else "") + "symbolic: chunks of k_chunk"
    else:
        chunk = matmul_table.matmul_k_chunk(cfg, k)
        details["K"] = ("K' = " if val.dtype.is_complex else "") + f"{k} = {-(-k // chunk)} chunk(s) of {chunk}"
    if device.type == "cuda" and (k is None or k > chunk):
        merged_by = "the last chunk program of each tile" if matmul_table.MATMUL_MERGE_IN_LAST_PROGRAM and not launched else "a merge launch"
        details["split_k"] = f"below {matmul_table.MATMUL_SPLIT_K_MAX_TILES} output tiles: one program per chunk, merged in ascending order by {merged_by}"
    if launched:
        details["launch"] = (
            "by Inductor's generated code, pointer loads: an unscaled 2-D matmul whose output fills the GPU "
            "without split-K as Inductor's template, the ops after it fused (lowerings/matmul_template.py); "
            "else its traced launches, split-K chosen once from the traced sizes' hints (lowerings/matmul.py)"
        )
    return details
