"""Convolutions lowered to the invariant matmul, forward and backward.

A convolution is a matmul over C_in / groups x prod(kernel) per output element. cuDNN / oneDNN
pick an algorithm (and its reduction order) per shape, so aot_autograd gets decompositions of
``aten.convolution`` and ``aten.convolution_backward`` instead, and every reduction in them is a
matmul the matmul pass turns into ``invariant_matmul`` (K order fixed by K) or a sum the
reductions pass turns into ``invariant_sum``:

* forward: im2col from prod(kernel) STRIDED SLICES of the zero-padded input (never a gather,
  whose backward would be an accumulating index_put), stacked, then ONE mm / addmm (bmm /
  baddbmm over groups) with K = C_in / groups x prod(kernel) and one row per output position.
  Kernel == stride (ViT patch embeddings, 1x1 convs) is a reshape of the input instead.
* input gradient: one mm gives every position's columns (K = C_out / groups), then col2im adds
  the prod(kernel) contributions into the padded input, one strided slice at a time in kernel
  order (pointwise adds in a fixed order, in fp32 for 16-bit dtypes).
* weight gradient: one mm with K = batch x output positions (it sums over the batch by
  definition, like a linear's); bias gradient: a sum over batch and positions.
* transposed convolution: its forward is a convolution's input gradient, its input gradient a
  convolution, its weight gradient a convolution's weight gradient with the roles swapped.

Complex and integer convolutions are not decomposed: they stay ``aten.convolution``, which the
strict guard rejects (complex) or keeps (integer: exact); ``F.conv*`` of complex tensors never
gets here, aten splits it into real convolutions first. im2col materializes prod(kernel) copies
of the input: memory, not order. The gradient of ``padding_mode="replicate"`` (atomics in aten's
CUDA kernel) is decomposed here too: ``replication_pad_backward``.
"""

from __future__ import annotations

import itertools
import math

import torch

from .._fx import static_int
from ._rewrite import Rewrite, input_shapes, user_source_line

aten = torch.ops.aten

# The ops whose decompositions below replace cuDNN / oneDNN (and Inductor's own convolution_backward).
CONVOLUTION_OPS = (aten.convolution.default, aten.convolution_backward.default, aten._convolution.default)


def _lowered(*tensors) -> bool:
    return all(t is None or t.dtype.is_floating_point for t in tensors)


def _spatial(t: torch.Tensor) -> list:
    return list(t.shape[2:])


def _memory_format(*tensors) -> torch.memory_format:
    """The layout eager gives a convolution's output (as the meta kernel of its backward picks it)."""
    for fmt in (torch.channels_last, torch.channels_last_3d):
        if any(t.dim() in (4, 5) and torch._prims_common.suggest_memory_format(t) == fmt for t in tensors):
            return fmt
    return torch.contiguous_format


def _positions_major(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, C, *S) -> (groups, N * prod(S), C / groups): one row per batch element and position."""
    n, c, spatial = t.shape[0], t.shape[1], _spatial(t)
    t = t.reshape(n, groups, c // groups, *spatial)
    return t.permute(1, 0, *range(3, 3 + len(spatial)), 2).reshape(groups, n * math.prod(spatial), c // groups)


def _channels_back(t: torch.Tensor, n, spatial: list) -> torch.Tensor:
    """(groups, N * prod(S), C / groups) -> (N, C, *S), the inverse of ``_positions_major`` (a view
    with channels innermost in memory, as channels_last)."""
    g, d, c = t.shape[0], len(spatial), t.shape[-1]
    t = t.reshape(g, n, *spatial, c)
    return t.permute(1, 0, d + 2, *range(2, 2 + d)).reshape(n, g * c, *spatial)


def _out_sizes(spatial, kernel, stride, padding, dilation) -> list:
    return [(s + 2 * p - dl * (k - 1) - 1) // st + 1 for s, k, st, p, dl in zip(spatial, kernel, stride, padding, dilation)]


def _is_patch(kernel, stride, padding, dilation) -> bool:
    """Non-overlapping windows that tile the input (kernel == stride, no padding or dilation):
    im2col is a reshape. Covers 1x1 convolutions and ViT-style patch embeddings."""
    return list(kernel) == list(stride) and not any(padding) and all(dl == 1 for dl in dilation)


def _pad(x: torch.Tensor, padding) -> torch.Tensor:
    if not any(padding):
        return x
    return aten.constant_pad_nd(x, [p for p in reversed(padding) for _ in range(2)], 0.0)


def _window(t: torch.Tensor, offset, out_sizes, stride, dilation) -> torch.Tensor:
    """The strided slice of ``t`` that kernel offset ``offset`` reads for every output position."""
    for i, (k, o, st, dl) in enumerate(zip(offset, out_sizes, stride, dilation)):
        start = k * dl
        t = aten.slice(t, 2 + i, start, start + (o - 1) * st + 1, st)
    return t


def _im2col(x: torch.Tensor, kernel, stride, padding, dilation, groups: int, out=None) -> tuple[torch.Tensor, list]:
    """(groups, N * prod(out), C / groups * prod(kernel)) columns, K laid out as the weight's
    (channel, kernel offsets) flattening; and the output's spatial sizes ``out`` (by default
    every position a window fits)."""
    n, c, d = x.shape[0], x.shape[1], x.dim() - 2
    out = out or _out_sizes(_spatial(x), kernel, stride, padding, dilation)
    if _is_patch(kernel, stride, padding, dilation):
        x = _window(x, [0] * d, [o * k for o, k in zip(out, kernel)], [1] * d, [1] * d)  # drop the rows no window reads
        x = x.reshape(n, groups, c // groups, *[v for o, k in zip(out, kernel) for v in (o, k)])
        # (N, g, C/g, O1, K1, O2, K2, ...) -> (g, N, O1, O2, ..., C/g, K1, K2, ...)
        order = [1, 0, *range(3, 3 + 2 * d, 2), 2, *range(4, 4 + 2 * d, 2)]
        return x.permute(order).reshape(groups, n * math.prod(out), c // groups * math.prod(kernel)), out
    x = _pad(x, padding)
    windows = [_window(x, k, out, stride, dilation) for k in itertools.product(*map(range, kernel))]
    cols = aten.stack(windows, 2)  # (N, C, prod(kernel), *out)
    cols = cols.reshape(n, groups, c // groups * math.prod(kernel), *out)
    return cols.permute(1, 0, *range(3, 3 + d), 2).reshape(groups, n * math.prod(out), cols.shape[2]), out


def _matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b (+ bias) over groups: one mm / addmm for a single group (so the matmul pass sees the
    linear layer's op), one bmm / baddbmm otherwise."""
    if a.shape[0] == 1:
        a2, b2 = a[0], b[0]
        out = aten.mm(a2, b2) if bias is None else aten.addmm(bias.reshape(1, -1), a2, b2)
        return out.unsqueeze(0)
    return aten.bmm(a, b) if bias is None else aten.baddbmm(bias.reshape(a.shape[0], 1, -1), a, b)


def _forward(x, weight, bias, stride, padding, dilation, groups, out=None) -> torch.Tensor:
    """y = conv(x, weight) + bias, in eager's output layout (``out``: as in ``_im2col``)."""
    kernel = _spatial(weight)
    cols, out = _im2col(x, kernel, stride, padding, dilation, groups, out)
    w = weight.reshape(groups, weight.shape[0] // groups, -1).transpose(1, 2)  # (g, K, C_out / g)
    y = _channels_back(_matmul(cols, w, bias), x.shape[0], out)
    return y.contiguous(memory_format=_memory_format(x, weight))


def _col2im(grad_out, weight, spatial, stride, padding, dilation, groups, bias=None) -> torch.Tensor:
    """The gradient of conv(x, weight) w.r.t. x of spatial size ``spatial``, given grad_out:
    every position's columns by one matmul, then each kernel offset's contribution added into
    the padded input in kernel order (``bias``, per channel, added last: transposed convs)."""
    n, d = grad_out.shape[0], grad_out.dim() - 2
    kernel, out = _spatial(weight), _spatial(grad_out)
    c_out, c = weight.shape[0], weight.shape[1] * groups
    w = weight.reshape(groups, c_out // groups, -1)  # (g, C_out / g, C / g * prod(kernel))
    cols = _matmul(_positions_major(grad_out, groups), w)  # (g, N * prod(out), C / g * prod(kernel))
    cols = cols.reshape(groups, n, *out, c // groups, *kernel)
    if _is_patch(kernel, stride, padding, dilation):  # windows do not overlap: placing is a reshape
        # (g, N, O1, ..., C/g, K1, ...) -> (N, g, C/g, O1, K1, O2, K2, ...)
        order = [1, 0, d + 2, *[v for i in range(d) for v in (2 + i, d + 3 + i)]]
        gx = cols.permute(order).reshape(n, c, *[o * k for o, k in zip(out, kernel)])
        tail = [s - o * k for s, o, k in zip(spatial, out, kernel)]
        gx = aten.constant_pad_nd(gx, [v for t in reversed(tail) for v in (0, t)], 0.0) if any(tail) else gx
        return gx if bias is None else gx + bias.reshape(-1, *[1] * d)
    # (g, N, O..., C/g, K...) -> (N, g, C/g, K..., O...) -> (N, C, prod(kernel), O...)
    cols = cols.permute(1, 0, d + 2, *range(d + 3, 2 * d + 3), *range(2, d + 2)).reshape(n, c, math.prod(kernel), *out)
    acc = torch.float32 if grad_out.dtype in (torch.float16, torch.bfloat16) else grad_out.dtype
    padded = [s + 2 * p for s, p in zip(spatial, padding)]
    gx = grad_out.new_zeros([n, c, *padded], dtype=acc)
    for i, offset in enumerate(itertools.product(*map(range, kernel))):
        gx = _add_window(gx, cols[:, :, i].to(acc), offset, out, stride, dilation, 0)
    for i, (s, p) in enumerate(zip(spatial, padding)):
        gx = aten.slice(gx, 2 + i, p, p + s) if p else gx
    if bias is not None:
        gx = gx + bias.reshape(-1, *[1] * d).to(acc)
    return gx.to(grad_out.dtype)


def _add_window(buf, contribution, offset, out, stride, dilation, i: int) -> torch.Tensor:
    """buf with ``contribution`` added into the strided slice that kernel offset ``offset`` reads
    (slice_scatter per spatial dim: pointwise, no accumulating index_put)."""
    if i == len(offset):
        return buf + contribution
    start = offset[i] * dilation[i]
    stop = start + (out[i] - 1) * stride[i] + 1
    part = aten.slice(buf, 2 + i, start, stop, stride[i])
    return aten.slice_scatter(buf, _add_window(part, contribution, offset, out, stride, dilation, i + 1), 2 + i, start, stop, stride[i])


def _weight_grad(x, grad_out, weight_shape, stride, padding, dilation, groups) -> torch.Tensor:
    """dL/dweight = grad_out^T @ im2col(x): one matmul whose K is batch x output positions."""
    cols, _ = _im2col(x, list(weight_shape[2:]), stride, padding, dilation, groups, _spatial(grad_out))
    gw = _matmul(_positions_major(grad_out, groups).transpose(1, 2), cols)  # (g, C_out / g, K)
    return gw.reshape(weight_shape)


def _transposed_out_sizes(spatial, kernel, stride, padding, dilation, output_padding) -> list:
    return [
        (s - 1) * st - 2 * p + dl * (k - 1) + op + 1
        for s, k, st, p, dl, op in zip(spatial, kernel, stride, padding, dilation, output_padding)
    ]


def _expand(v, d: int) -> list:
    v = list(v)
    return v * d if len(v) == 1 else v


def convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    """aten.convolution as im2col + invariant matmul (transposed: col2im)."""
    if not _lowered(x, weight, bias) or x.dim() not in (3, 4, 5):
        return NotImplemented  # complex (the strict guard rejects it), integer (exact), unbatched
    d = x.dim() - 2
    stride, padding, dilation, output_padding = (_expand(v, d) for v in (stride, padding, dilation, output_padding))
    if not transposed:
        return _forward(x, weight, bias, stride, padding, dilation, groups)
    out = _transposed_out_sizes(_spatial(x), _spatial(weight), stride, padding, dilation, output_padding)
    y = _col2im(x, weight, out, stride, padding, dilation, groups, bias)
    return y.contiguous(memory_format=_memory_format(x, weight))


def _convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups, *_flags):
    return convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups)


def convolution_backward(grad_out, x, weight, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, output_mask):
    """The gradients of ``convolution``: each a matmul or a sum with a fixed order."""
    if not _lowered(grad_out, x, weight) or x.dim() not in (3, 4, 5):
        return NotImplemented
    d = x.dim() - 2
    stride, padding, dilation = (_expand(v, d) for v in (stride, padding, dilation))
    gx = gw = gb = None
    if transposed:  # y = conv's input gradient of x, so dL/dx = conv(dL/dy) at x's positions
        if output_mask[0]:
            gx = _forward(grad_out, weight, None, stride, padding, dilation, groups, _spatial(x))
        if output_mask[1]:
            gw = _weight_grad(grad_out, x, weight.shape, stride, padding, dilation, groups)
    else:
        if output_mask[0]:
            gx = _col2im(grad_out, weight, _spatial(x), stride, padding, dilation, groups)
        if output_mask[1]:
            gw = _weight_grad(x, grad_out, weight.shape, stride, padding, dilation, groups)
    if output_mask[2]:
        gb = aten.sum(grad_out, [0, *range(2, grad_out.dim())])
    return gx, gw, gb


def replication_pad_backward(grad_out, x, padding):
    """The gradient of padding_mode="replicate" (F.pad(..., mode="replicate")): aten's CUDA kernel
    adds the edge copies' gradients with atomics. Here each padded copy's gradient is added to
    its edge in a fixed order (left copies, then right ones, last dim first), pointwise, in fp32
    for 16-bit dtypes."""
    if not grad_out.dtype.is_floating_point or any(p < 0 for p in padding):
        return NotImplemented  # a negative pad crops: left to aten, which the strict guard rejects
    acc = torch.float32 if grad_out.dtype in (torch.float16, torch.bfloat16) else grad_out.dtype
    g = grad_out.to(acc)
    for i in range(len(padding) // 2):
        dim, left, right = x.dim() - 1 - i, padding[2 * i], padding[2 * i + 1]
        size = x.shape[dim]
        edges = [(j, 0) for j in range(left)] + [(left + size + j, size - 1) for j in range(right)]
        inner = aten.slice(g, dim, left, left + size)
        for copy, edge in edges:
            total = aten.slice(inner, dim, edge, edge + 1) + aten.slice(g, dim, copy, copy + 1)
            inner = aten.slice_scatter(inner, total, dim, edge, edge + 1)
        g = inner
    return g.to(grad_out.dtype)


_MATMULS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
_REPLICATION_PAD_BACKWARD = {aten.replication_pad1d_backward.default, aten.replication_pad2d_backward.default, aten.replication_pad3d_backward.default}


def lowered_convolutions(gm: torch.fx.GraphModule) -> list[Rewrite]:
    """What the decompositions above made of each convolution (and replicate-padding gradient)
    in an aten graph, from the nodes they traced (``original_aten``), for ``explain``; run before
    the matmul pass, which then rewrites each matmul listed here."""
    lowered = {str(op) for op in (*CONVOLUTION_OPS, *_REPLICATION_PAD_BACKWARD)}
    groups: dict = {}
    for node in gm.graph.nodes:
        op = str(node.meta.get("original_aten"))  # by name: a deep-copied graph holds copies of the op
        if node.op == "call_function" and op in lowered:
            groups.setdefault((op, node.meta.get("seq_nr"), node.meta.get("stack_trace")), []).append(node)
    records = []
    for (op, _, _), nodes in groups.items():
        targets = [n.target for n in nodes]
        matmuls = [n for n in nodes if n.target in _MATMULS]
        parts, details = [], {}
        if aten.cat.default in targets or aten.stack.default in targets:
            windows = max(len(n.args[0]) for n in nodes if n.target in (aten.cat.default, aten.stack.default))
            parts.append("im2col")
            details["im2col"] = f"{windows} strided slices of the padded input"
        if matmuls:
            parts.append("invariant_matmul")
            details["K"] = "; ".join(str(_k(n)) for n in matmuls)
        adds = targets.count(aten.slice_scatter.default)
        if adds and "replication_pad" in op:
            parts.append("edge adds")
            details["order"] = "each padded copy added to its edge in a fixed order, pointwise"
        elif adds:
            parts.append("col2im")
            details["col2im"] = "each kernel offset's columns added into the input in kernel order, pointwise"
        if aten.sum.dim_IntList in targets:
            parts.append("invariant_sum")
            details["invariant_sum"] = "the bias gradient"
        if not parts:
            continue  # views the partitioner moved to the other graph
        if op == str(aten.convolution.default) and matmuls and "im2col" not in parts and "col2im" not in parts:
            details["im2col"] = "a reshape (kernel == stride: windows tile the input)"
        first = matmuls[0] if matmuls else nodes[0]
        val = first.meta.get("val")
        records.append(
            Rewrite(
                original=op,
                replacement=" + ".join(parts),
                shapes=input_shapes(first),
                dtype=str(val.dtype) if isinstance(val, torch.Tensor) else "?",
                source=next((user_source_line(n) for n in nodes if n.meta.get("stack_trace")), user_source_line(first)),
                details=details,
            )
        )
    return records


def _k(matmul: torch.fx.Node):
    """The reduced extent of a matmul node (its first operand's last dim)."""
    a = matmul.args[1] if matmul.target in (aten.addmm.default, aten.baddbmm.default) else matmul.args[0]
    k = a.meta["val"].shape[-1]
    return static_int(k) if static_int(k) is not None else k


# Added to the backend's decomposition table (backend.decompositions).
DECOMPOSITIONS = {
    aten.convolution.default: convolution,
    aten._convolution.default: _convolution,
    aten.convolution_backward.default: convolution_backward,
    aten.replication_pad1d_backward.default: replication_pad_backward,
    aten.replication_pad2d_backward.default: replication_pad_backward,
    aten.replication_pad3d_backward.default: replication_pad_backward,
}
