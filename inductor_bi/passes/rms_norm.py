"""Fuse a hand-written RMSNorm into one row kernel (after ``rewrite_reductions`` folded its squares).

HF-style models write RMSNorm as pointwise ops around one mean:

    c = h.float(); n = c * rsqrt(mean(c ** 2, -1, keepdim=True) + eps); out = weight * n.to(dtype)

The reductions pass already sends the mean to a fixed-order row kernel; what is left are two
extern boundaries Inductor cannot fuse across, so the residual add before the norm (h = x + r),
the row kernel and the normalize run as three launches where stock Inductor runs one. With
``reduction_table.REDUCTION_FUSE_RMS_NORM`` this pass replaces the chain from the mean to the weight
multiply by ``invariant_rms_norm_rows``, which runs the same ops per element in one program per row
(and, when the mean had a folded residual add, also stores h for the residual stream). Any other
shape of graph (a chain node used twice, a broadcast weight, a different op) is left as it was.
"""

from __future__ import annotations

import operator

import torch

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import reduction_table
from .._fx import fake_value
from ._rewrite import Rewrite, input_shapes, user_source_line

aten = torch.ops.aten
prims = torch.ops.prims
bi = torch.ops.inductor_bi

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _only_user(node: torch.fx.Node, target) -> torch.fx.Node | None:
    """The single user of ``node`` when it calls ``target``; else None."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    return user if user.target is target else None


def _other(node: torch.fx.Node, operand: torch.fx.Node):
    """The other argument of a binary ``node`` called with ``operand``."""
    a, b = node.args[:2]
    return b if a is operand else a if b is operand else None


def _is_host_scalar(node) -> bool:
    """Whether ``node`` computes a 0-dim floating-point tensor on the CPU (read on the host)."""
    value = fake_value(node) if isinstance(node, torch.fx.Node) else None
    return isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype.is_floating_point and value.device.type == "cpu"


def _match(mean: torch.fx.Node):
    """The nodes of one RMSNorm from its folded mean, or None when the graph is anything else."""
    source = mean.args[0]
    addend = mean.args[5] if len(mean.args) > 5 else None
    if len(mean.args) < 5 or mean.args[2] is not True or mean.args[3] != torch.float32 or mean.args[4] is not True:
        return None
    if fake_value(source).dtype not in _DTYPES or mean.args[1] not in ([-1], [fake_value(source).dim() - 1]):
        return None
    add_eps = _only_user(mean, aten.add.Tensor)
    if add_eps is None or add_eps.kwargs:
        return None
    eps = _other(add_eps, mean)
    # The kernel takes eps as an argument: a Python number, or a 0-dim CPU tensor read on the host
    # (Dynamo's unspecialized float). An eps tensor on the GPU (a buffer) stays unfused.
    if not (isinstance(eps, (int, float)) and not isinstance(eps, bool)) and not _is_host_scalar(eps):
        return None
    rsqrt = _only_user(add_eps, aten.rsqrt.default)
    normalize = rsqrt and _only_user(rsqrt, aten.mul.Tensor)
    if normalize is None:
        return None
    # h as the normalize reads it: the norm's input widened to fp32 (or the fp32 input itself).
    # With a folded residual add the mean reads (x, r) and h is the add node the graph kept.
    h = source
    if addend is not None:
        adds = [u for u in source.users if u.target is aten.add.Tensor and not u.kwargs and set(u.args[:2]) == {source, addend}]
        if len(adds) != 1:
            return None
        (h,) = adds
    widened = _other(normalize, rsqrt)
    is_widened_h = isinstance(widened, torch.fx.Node) and widened.target is prims.convert_element_type.default and widened.args == (h, torch.float32)
    if widened is not h and not is_widened_h:
        return None
    if fake_value(normalize).dtype != torch.float32 or fake_value(normalize).shape != fake_value(h).shape:
        return None
    chain, normalized_dtype, weight = [mean, add_eps, rsqrt, normalize], None, None
    cast = _only_user(normalize, prims.convert_element_type.default)
    if cast is not None and cast.args[1] in _DTYPES:
        chain.append(cast)
        normalized_dtype = cast.args[1]
    scale = _only_user(chain[-1], aten.mul.Tensor)
    if scale is not None and not scale.kwargs:
        w = _other(scale, chain[-1])
        w_val = fake_value(w)
        if isinstance(w_val, torch.Tensor) and w_val.dtype in _DTYPES and tuple(w_val.shape) == (fake_value(h).shape[-1],) and fake_value(scale).shape == fake_value(h).shape:
            chain.append(scale)
            weight = w
    return source, addend, h, eps, widened, weight, normalized_dtype, chain


def _host_eps(eps: torch.fx.Node) -> torch.fx.Node:
    """The 0-dim CPU tensor the kernel reads eps from. Dynamo passes an unspecialized float eps
    as a float64 CPU tensor and the graph widens it to fp32 before the add: a CPU op, for which
    Inductor compiles C++ even in a GPU model (on an H200, llama-1b's compile spent 15 s on 13 C++
    builds and 22 s on a CPU ISA probe; stock fuses the scalar into its GPU kernels). The op reads ``float(eps_tensor.float())`` on the host, the same fp32
    value, so it takes the conversion's source and the CPU op is left unused."""
    if eps.target is prims.convert_element_type.default and eps.args[1] in (torch.float32, torch.float64) and _is_host_scalar(eps.args[0]):
        return eps.args[0]
    return eps


def fuse_rms_norms(gm: torch.fx.GraphModule) -> list[Rewrite]:
    if not reduction_table.REDUCTION_FUSE_RMS_NORM:
        return []
    graph = gm.graph
    rewrites = []
    for mean in list(graph.nodes):
        if mean.target is not bi.invariant_mean.default:
            continue
        match = _match(mean)
        if match is None:
            continue
        source, addend, h, eps, widened, weight, normalized_dtype, chain = match
        order = {node: i for i, node in enumerate(graph.nodes)}
        at = chain[1]  # the kernel runs where the graph adds eps: every input is defined by then
        if isinstance(weight, torch.fx.Node) and order[weight] > order[at]:
            continue
        last = chain[-1]
        with graph.inserting_before(at):
            eps_number, eps_tensor = (0.0, _host_eps(eps)) if isinstance(eps, torch.fx.Node) else (float(eps), None)
            fused = graph.call_function(bi.invariant_rms_norm_rows.default, (source, eps_number, weight, normalized_dtype, fake_value(last).dtype, addend, eps_tensor))
            out = graph.call_function(operator.getitem, (fused, 0))
            stored_h = graph.call_function(operator.getitem, (fused, 1)) if addend is not None else None
        fused.meta = {k: v for k, v in last.meta.items() if k not in ("val", "eager_input_vals")}  # a new call: no traced inputs
        out.meta = dict(last.meta)
        rewrites.append(Rewrite(
            original="RMSNorm: mean of x*x, rsqrt, normalize" + (", weight" if weight is not None else "") + (" (after x = a + b)" if addend is not None else ""),
            replacement=str(bi.invariant_rms_norm_rows.default),
            shapes=input_shapes(mean),
            dtype=str(fake_value(source).dtype),
            source=user_source_line(mean),
            details={"kernel": "one row per program: the sum of squares, then the normalize", "R": fake_value(source).shape[-1]},
        ))  # fmt: skip
        last.replace_all_uses_with(out)
        for node in reversed(chain):
            graph.erase_node(node)
        if eps_tensor is not None and eps_tensor is not eps and not eps.users:
            graph.erase_node(eps)  # the CPU conversion _host_eps went around
        if widened is not h and not widened.users:
            graph.erase_node(widened)
        # The residual stream reads the h the kernel stored, unless something needs h before it.
        if stored_h is not None:
            stored_h.meta = dict(h.meta)
            if all(order[user] > order[at] for user in h.users):
                h.replace_all_uses_with(stored_h)
                graph.erase_node(h)
    return rewrites
