"""Our rewrite's identity in torch.compile's caches.

The backend rewrites each aten graph inside Inductor's ``inner_compile``, after AOTAutograd has
computed its cache key from the unrewritten graph and Inductor's config. Without more, that key
says nothing about our passes, so a cached compilation made by another inductor_bi version, or
with other ``kernels.configs`` values, would be served as if it were ours (seen on an H200: a
model copy compiled with a graph knob on ran the knob-off code). Inductor puts the ``uuid()`` of
its custom graph passes into both its FX graph key and AOTAutograd's key, so the backend installs
``RewriteIdentity`` as ``post_grad_custom_post_pass``: its uuid hashes this package's source and
the values of ``kernels.configs``; when run, it runs the pass the user had set there, if any.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
from typing import Any

import torch
import torch._inductor.config as inductor_config
from torch._inductor.custom_graph_pass import CustomGraphPass

from .kernels import configs

_PACKAGE = pathlib.Path(__file__).parent


@functools.lru_cache(maxsize=None)
def source_digest() -> str:
    """sha256 of every .py file of the package (an edited pass is another rewrite)."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        h.update(path.relative_to(_PACKAGE).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def configs_digest() -> str:
    """sha256 of the current values of ``kernels.configs``' constants (passes read some of them
    when rewriting, e.g. the graph knobs; ``configs.overridden`` changes them in-process)."""
    values = sorted((name, repr(value)) for name, value in vars(configs).items() if name.isupper())
    return hashlib.sha256(repr(values).encode()).hexdigest()


class RewriteIdentity(CustomGraphPass):
    """A post-grad pass that changes nothing of ours; it exists for its ``uuid``."""

    def __init__(self, user_pass: Any, options: Any):
        self.user_pass = user_pass
        if user_pass is not None and not isinstance(user_pass, CustomGraphPass):
            # A plain callable has no identity Inductor can hash, so Inductor skips its caches
            # for it; an empty uuid keeps it that way (Inductor checks ``not p.uuid()``).
            self._uuid = ""
        else:
            user_uuid = str(user_pass.uuid()) if user_pass is not None else "none"
            parts = [source_digest(), configs_digest(), repr(options), user_uuid]
            self._uuid = hashlib.sha256("|".join(parts).encode()).hexdigest()

    def __call__(self, graph: torch.fx.Graph) -> None:
        if self.user_pass is not None:
            self.user_pass(graph)

    def uuid(self) -> str:
        return self._uuid


def identity_patch(options: Any) -> dict[str, Any]:
    """The config entry that puts our rewrite into the cache keys."""
    user_pass = inductor_config.post_grad_custom_post_pass
    if isinstance(user_pass, RewriteIdentity):  # a nested compile under our own patch
        user_pass = user_pass.user_pass
    return {"post_grad_custom_post_pass": RewriteIdentity(user_pass, options)}
