"""Facts about a traced FX graph's values that the graph passes and the lowerings both read,
without guarding on a symbolic size."""

from __future__ import annotations

import torch
import torch.fx


def fake_value(node):
    """The traced (fake) value of a graph node's output; None for a non-node or an untraced one."""
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def static_int(n) -> int | None:
    """``n`` as an int when it is one (or a SymInt known to be constant); None otherwise.
    ``int(symint)`` would install a guard instead."""
    if isinstance(n, torch.SymInt):
        return n.node.maybe_as_int()
    return n if isinstance(n, int) else None
