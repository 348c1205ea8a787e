"""Rewrite floating-point reductions into fixed-order custom ops.

Inductor's own reduction code picks block sizes, persistent vs looped form and split reductions
from the number of rows, so a row's reduction order would follow its batch. Every float sum,
mean, var/var_mean, softmax, log_softmax and layer norm goes to a kernel that reduces one row per
program in an order fixed by the reduced extent. The rest builds on these: RMSNorm (hand-written
or F.rms_norm) decomposes to pow / mean / rsqrt; cross-entropy and nll_loss to log_softmax plus
gather and sum / mean; logsumexp, std and vector norms to amax / sum / var; their backward
graphs to sums. Exact reductions (max, min, argmax, integer sums...) are kept: see guard.py.
"""

from __future__ import annotations

import math
import operator

import torch

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import reduction_table
from ._observe import reported_device
from .._fx import fake_value, static_int
from ._rewrite import Rewrite, input_shapes, replace_node, user_source_line

aten = torch.ops.aten
bi = torch.ops.inductor_bi


def _sum(x, dim=None, keepdim=False, *, dtype=None):
    return bi.invariant_sum.default, (x, list(dim) if dim else None, keepdim, dtype)


def _sum_all(x, *, dtype=None):
    return bi.invariant_sum.default, (x, None, False, dtype)


def _mean(x, dim=None, keepdim=False, *, dtype=None):
    return bi.invariant_mean.default, (x, list(dim) if dim else None, keepdim, dtype)


def _mean_all(x, *, dtype=None):
    return bi.invariant_mean.default, (x, None, False, dtype)


def _var_mean(x, dim=None, *, correction=None, keepdim=False):
    return bi.invariant_var_mean.default, (x, list(dim) if dim else None, 1.0 if correction is None else float(correction), keepdim)


def _softmax(x, dim, half_to_float):
    return bi.invariant_softmax.default, (x, dim, half_to_float)


def _log_softmax(x, dim, half_to_float):
    return bi.invariant_log_softmax.default, (x, dim, half_to_float)


def _layer_norm(x, normalized_shape, weight, bias, eps):
    return bi.invariant_layer_norm.default, (x, list(normalized_shape), weight, bias, float(eps))


# aten op -> (custom op, its arguments)
REDUCTION_OPS = {
    aten.sum.dim_IntList: _sum,
    aten.sum.default: _sum_all,
    aten.mean.dim: _mean,
    aten.mean.default: _mean_all,
    aten.var_mean.correction: _var_mean,
    aten.var.correction: _var_mean,  # var = var_mean(...)[0]
    aten._softmax.default: _softmax,
    aten._log_softmax.default: _log_softmax,
    aten.native_layer_norm.default: _layer_norm,
}

# Kept whole by the backend (out of Inductor's decomposition table) so the fused kernel serves
# them; their backward ops still decompose into sums, which this pass rewrites too.
FUSED_OPS = {aten._softmax.default, aten._log_softmax.default, aten.native_layer_norm.default}


# Sums / means that may read the tensor a square was computed from instead of the squares
# (RMSNorm's mean(x.float().pow(2))): the squares never go to memory, and the kernel squares in the
# accumulator dtype exactly as the pow would have (widening bf16 / fp16 to fp32 is exact).
SQUARE_FOLDABLE = {aten.sum.dim_IntList, aten.sum.default, aten.mean.dim, aten.mean.default}
_ACC_DTYPES = (torch.float32, torch.float64)


def _squared_source(node: torch.fx.Node) -> torch.fx.Node | None:
    """``y`` when ``node`` reduces ``y * y`` (or ``y ** 2``) computed in fp32 / fp64 and used by
    nothing else, with ``y`` possibly a widening cast (then what it widens); else None."""
    sq = node.args[0]
    if node.target not in SQUARE_FOLDABLE or node.kwargs.get("dtype") is not None or len(sq.users) != 1:
        return None
    if sq.target is aten.pow.Tensor_Scalar and sq.args[1] == 2:
        y = sq.args[0]
    elif sq.target is aten.mul.Tensor and sq.args[0] is sq.args[1]:
        y = sq.args[0]
    else:
        return None
    acc = getattr(sq.meta.get("val"), "dtype", None)
    if not isinstance(y, torch.fx.Node) or acc not in _ACC_DTYPES:
        return None
    if y.target is torch.ops.prims.convert_element_type.default and y.args[1] == acc:
        y = y.args[0]
    y_val = y.meta.get("val")
    if not isinstance(y_val, torch.Tensor) or y_val.dtype not in reduction_table.SUPPORTED_DTYPES or y_val.dtype.itemsize > acc.itemsize:
        return None  # e.g. float8 widened to fp32: the squares stay as they were
    return y


def _residual_add(y: torch.fx.Node) -> tuple[torch.fx.Node, torch.fx.Node] | None:
    """``(a, b)`` when ``y`` is ``a + b`` of two tensors of y's own shape and dtype (a residual
    add, as before a transformer's norms) and reduction_table.REDUCTION_FOLD_RESIDUAL_ADD is on; else None."""
    if not reduction_table.REDUCTION_FOLD_RESIDUAL_ADD or y.target is not aten.add.Tensor or y.kwargs or len(y.args) != 2:
        return None
    y_val = fake_value(y)
    if not isinstance(y_val, torch.Tensor) or y_val.dtype not in reduction_table.REDUCTION_FOLD_ADD_DTYPES:
        return None
    for operand in y.args:
        val = fake_value(operand)
        if not isinstance(val, torch.Tensor) or val.dtype != y_val.dtype or val.shape != y_val.shape:
            return None  # a broadcast or a type promotion: not a plain residual add
    return y.args[0], y.args[1]


# std = sqrt(var) (what std / std_mean decompose to) as one op whose kernel takes the square root
# before putting a rescaled row's scale back: std of fp32 values ~1e20..1e37 is finite though their
# variance overflows, and std of values ~1e-30 is not 0 though their variance underflows.
_STD_MEAN = bi.invariant_std_mean


def _sqrt_of_variance(node: torch.fx.Node) -> torch.fx.Node | None:
    """The ``aten.sqrt`` that is the only reader of ``node``'s variance (var, or var_mean's
    first output), i.e. a standard deviation; else None."""
    var = node
    if node.target is aten.var_mean.correction:
        firsts = [u for u in node.users if u.target is operator.getitem and u.args[1] == 0]
        if len(firsts) != 1:
            return None
        (var,) = firsts
    elif node.target is not aten.var.correction:
        return None
    if len(var.users) != 1:
        return None
    (user,) = var.users
    return user if user.target is aten.sqrt.default and not user.kwargs else None


def _replace_with_std(gm: torch.fx.GraphModule, node: torch.fx.Node, sqrt: torch.fx.Node, args: tuple) -> None:
    """var (or var_mean) -> std_mean, whose first output replaces the sqrt."""
    graph = gm.graph
    if node.target is aten.var.correction:
        with graph.inserting_before(node):
            both = graph.call_function(_STD_MEAN.default, args)
            std = graph.call_function(operator.getitem, (both, 0))
        both.meta = {k: v for k, v in node.meta.items() if k != "val"}
        std.meta = dict(sqrt.meta)
        sqrt.replace_all_uses_with(std)
        graph.erase_node(sqrt)
        graph.erase_node(node)
        return
    std = next(u for u in node.users if u.target is operator.getitem and u.args[1] == 0)
    replace_node(node, _STD_MEAN.default, args)
    std.meta = dict(sqrt.meta)
    sqrt.replace_all_uses_with(std)
    graph.erase_node(sqrt)


# Complex sums and means add the real and the imaginary parts separately: over view_as_real(x) (a
# trailing dim of size 2, never reduced) they are real sums / means over the same dims, whose order
# the real kernel fixes; view_as_complex puts the parts back together.
COMPLEX_SUMS = {aten.sum.dim_IntList: bi.invariant_sum.default, aten.sum.default: bi.invariant_sum.default,
                aten.mean.dim: bi.invariant_mean.default, aten.mean.default: bi.invariant_mean.default}  # fmt: skip
_REAL_OF = {torch.complex64: torch.float32, torch.complex128: torch.float64}


def _rewrite_complex_sum(gm: torch.fx.GraphModule, node: torch.fx.Node, x: torch.Tensor) -> Rewrite | None:
    """A complex sum / mean -> view_as_real -> the invariant real one over the same dims ->
    view_as_complex; None (left to the guard) where the parts are no real tensor the kernel takes."""
    dtype = node.kwargs.get("dtype")
    dims = node.args[1] if node.target in (aten.sum.dim_IntList, aten.mean.dim) and len(node.args) > 1 else None
    keepdim = bool(node.args[2]) if len(node.args) > 2 else bool(node.kwargs.get("keepdim", False))
    real = _REAL_OF.get(dtype if dtype is not None else x.dtype)
    if real is None or x.dtype not in _REAL_OF or x.dim() == 0 or real not in reduction_table.SUPPORTED_DTYPES:
        return None
    # aten reads no dims (or an empty list) as all of them; the parts' trailing dim is never reduced
    dims = sorted(d % x.dim() for d in dims) if dims else list(range(x.dim()))
    graph = gm.graph
    with graph.inserting_before(node):
        parts = graph.call_function(aten.view_as_real.default, (node.args[0],))
        parts.meta = {k: v for k, v in node.meta.items() if k != "val"}
        parts.meta["val"] = torch.view_as_real(x)
        reduced = graph.call_function(COMPLEX_SUMS[node.target], (parts, dims, keepdim, None if dtype is None else real))
        reduced.meta = {k: v for k, v in node.meta.items() if k != "val"}
        reduced.meta["val"] = torch.view_as_real(node.meta["val"])
    record = Rewrite(
        original=str(node.target),
        replacement=f"view_as_real -> {COMPLEX_SUMS[node.target]} -> view_as_complex",
        shapes=input_shapes(node),
        dtype=str(x.dtype),
        source=user_source_line(node),
        details={**_config_details(parts.meta["val"], reduced), "complex": "the real and imaginary parts summed as one real tensor"},
    )
    replace_node(node, aten.view_as_complex.default, (reduced,))
    return record


def rewrite_reductions(gm: torch.fx.GraphModule) -> list[Rewrite]:
    rewrites = []
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in REDUCTION_OPS:
            continue
        x = node.args[0].meta.get("val")
        if isinstance(x, torch.Tensor) and x.dtype.is_complex and node.target in COMPLEX_SUMS:
            record = _rewrite_complex_sum(gm, node, x)
            rewrites.extend([record] if record is not None else [])
            continue
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            continue  # integer / bool reductions are exact; complex var / softmax... are the guard's
        target, args = REDUCTION_OPS[node.target](*node.args, **node.kwargs)
        sqrt = _sqrt_of_variance(node)
        if sqrt is not None:
            rewrites.append(Rewrite(
                original=f"{node.target} then sqrt",
                replacement=str(_STD_MEAN.default),
                shapes=input_shapes(node),
                dtype=str(x.dtype),
                source=user_source_line(sqrt),
                details=_config_details(x, node),
            ))  # fmt: skip
            _replace_with_std(gm, node, sqrt, args)
            continue
        squared = _squared_source(node)
        residual = _residual_add(squared) if squared is not None else None
        if squared is not None:
            squares = node.args[0]
            args = (squared, *args[1:3], x.dtype, True)
            if residual is not None:  # the kernel adds the two itself: the sum need not be stored first
                args = (residual[0], *args[1:], residual[1])
        record = Rewrite(
            original=str(node.target) + (" of x*x" if squared is not None else "") + (" of x = a + b" if residual is not None else ""),
            replacement=str(target),
            shapes=input_shapes(node),
            dtype=str(x.dtype),
            source=user_source_line(node),
            details=_config_details(x, node),
        )
        if node.target is aten.var.correction:
            with gm.graph.inserting_before(node):
                both = gm.graph.call_function(target, args)
            both.meta = {k: v for k, v in node.meta.items() if k != "val"}
            replace_node(node, operator.getitem, (both, 0))
        else:
            replace_node(node, target, args)
        if squared is not None and not squares.users:
            widened = squares.args[0]
            gm.graph.erase_node(squares)
            if widened is not squared and not widened.users:
                gm.graph.erase_node(widened)
        rewrites.append(record)
    return rewrites


def _config_details(x: torch.Tensor, node: torch.fx.Node) -> dict:
    """The pinned config the kernel will use for this row extent, for the reported device
    (``_observe.reported_device``). Never guards on a symbolic
    extent: a guard here would specialize the compiled graph to one batch size."""
    r = static_int(_reduced_extent(x, node))
    if r is None:
        return {"kernel": "one row per program", "block_r": "f(R) (R symbolic)"}
    cfg = reduction_table.reduction_config(r, x.dtype, reported_device(x.device))
    return {"kernel": "one row per program", "R": r, "block_r": cfg.block_r, "warps": cfg.num_warps}


def _reduced_extent(x: torch.Tensor, node: torch.fx.Node):
    """R, the number of elements reduced into one output (an int or a SymInt), or None."""
    if node.target in (aten._softmax.default, aten._log_softmax.default):
        return x.shape[node.args[1]]
    if node.target is aten.native_layer_norm.default:
        # normalized_shape may hold graph nodes (SymInts under dynamic=True): x's trailing sizes.
        n = len(node.args[1])
        return math.prod(x.shape[x.dim() - n :])
    out = node.meta.get("val")
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.Tensor):
        return None
    return x.numel() // torch.sym_max(out.numel(), 1)
