"""What every family's lowering shares: a rewritten op's implementation, run on the graph's fake
tensors inside ``launched_by_inductor``, records its kernel launches (``wrap_triton``) in place
of the op; and the checks a node must pass for that (CUDA operands; sizes that set constexprs
known at compile time)."""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.fx
import torch.utils._pytree as pytree

from ..kernels._launch import launched_by_inductor
from .._fx import fake_value, static_int


class Lowering(NamedTuple):
    """How one custom op is launched by Inductor: its kernels' host implementation (the custom
    op's, called with the op's arguments) and which of its nodes can be traced."""

    implementation: Callable
    traceable: Callable[[torch.fx.Node], bool]


def traced_launches(implementation: Callable) -> Callable:
    """``implementation`` as a function of flat arguments whose kernel launches are recorded."""

    def traced(*flat, spec):
        args, kwargs = pytree.tree_unflatten(list(flat), spec)
        with launched_by_inductor():
            return implementation(*args, **kwargs)

    return traced


def on_cuda(node: torch.fx.Node, *tensor_args: int, dtypes=None) -> bool:
    """The node's tensor arguments at ``tensor_args`` (None allowed) are CUDA tensors (of
    ``dtypes`` when given)."""
    for i in tensor_args:
        if i >= len(node.args) or node.args[i] is None:
            continue
        v = fake_value(node.args[i])
        if not isinstance(v, torch.Tensor) or v.device.type != "cuda" or (dtypes is not None and v.dtype not in dtypes):
            return False
    return True


def static_sizes(value: torch.Tensor, dims) -> bool:
    """The sizes of ``value`` at ``dims`` are known at compile time (they set constexprs)."""
    return all(static_int(value.shape[d]) is not None for d in dims)
