"""Our rewrite's identity in torch.compile's caches.

The backend rewrites each aten graph in Inductor's post-grad hooks (hooks.py), after AOTAutograd
and Inductor have computed their cache keys from the unrewritten graph and Inductor's config.
Without more, those keys say nothing about our passes, so a cached compilation made by another
inductor_bi version, or with other values in the kernel tables (``kernels.knobs.TABLES``), would
be served as if it were ours (seen on an H200: a model copy compiled with a graph knob on ran the
knob-off code). Inductor puts the ``uuid()`` of its custom graph passes into both its FX graph key
and AOTAutograd's key: our hooks are ``RewriteIdentity`` passes whose uuid hashes this package's
source, the kernel tables' constants and the options; each also runs the pass the user had set in
its slot, if any.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
from typing import Any

import torch
import torch._inductor.config as inductor_config
from torch._inductor.custom_graph_pass import CustomGraphPass

from .kernels import knobs

_PACKAGE = pathlib.Path(__file__).parent


@functools.lru_cache(maxsize=None)
def source_digest() -> str:
    """sha256 of every .py file of the package (an edited pass is another rewrite)."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        h.update(path.relative_to(_PACKAGE).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def tables_digest() -> str:
    """sha256 of the current values of the kernel tables' constants (passes read some of them
    when rewriting, e.g. the graph knobs; ``knobs.overridden`` changes them in-process)."""
    values = sorted((table.__name__, name, repr(value)) for table in knobs.TABLES for name, value in vars(table).items() if name.isupper())
    return hashlib.sha256(repr(values).encode()).hexdigest()


class RewriteIdentity(CustomGraphPass):
    """A post-grad pass with our identity as its ``uuid``; it runs the user's pass of its slot
    (subclasses in hooks.py add ours)."""

    def __init__(self, user_pass: Any, options: Any):
        self.user_pass = user_pass
        self.options = options
        if user_pass is not None and not isinstance(user_pass, CustomGraphPass):
            # A plain callable has no identity Inductor can hash, so Inductor skips its caches
            # for it; an empty uuid keeps it that way (Inductor checks ``not p.uuid()``).
            self._uuid = ""
        else:
            user_uuid = str(user_pass.uuid()) if user_pass is not None else "none"
            parts = [type(self).__name__, source_digest(), tables_digest(), repr(options), user_uuid]
            self._uuid = hashlib.sha256("|".join(parts).encode()).hexdigest()

    def __call__(self, graph: torch.fx.Graph) -> None:
        if self.user_pass is not None:
            self.user_pass(graph)

    def uuid(self) -> str:
        return self._uuid


def unwrapped(user_pass: Any) -> Any:
    """The user's own pass in a slot our patch may already fill (a nested compile)."""
    while isinstance(user_pass, RewriteIdentity):
        user_pass = user_pass.user_pass
    return user_pass
