"""The backend's graph passes as Inductor's own post-grad hooks.

Inductor calls ``post_grad_custom_pre_pass`` on each aten graph (forward, backward, inference)
before its own post-grad pattern passes, and ``post_grad_custom_post_pass`` after them, just
before lowering:

  pre   the user's pre pass, if any -> passes/ rewrite every reduction into fixed-order ops
  post  the user's post pass, if any -> the strict guard on the final graph (nothing Inductor or
        a user pass added escapes it) -> lowerings/ replace the rewritten ops whose kernels can
        be traced by those kernels' launches, which Inductor's generated code then makes itself

Each tells the observer of the compile, if any (passes/_observe.py: ``explain``), what it did.
Both are ``RewriteIdentity`` passes, so the compile caches know our rewrite (cache_identity.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch._inductor.config as inductor_config

from .cache_identity import RewriteIdentity, unwrapped
from .lowerings import launch_from_inductor
from .passes import check_graph, rewrite_graph
from .passes._observe import observer


class RewriteToInvariantOps(RewriteIdentity):
    """post_grad_custom_pre_pass: the user's pre pass, then our rewrite of what it left."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        super().__call__(graph)
        gm, obs = graph.owning_module, observer()
        if obs is not None:
            obs.graph_in(gm, "aten")
        rewrites = rewrite_graph(gm)
        if obs is not None:
            obs.rewritten(gm, rewrites)


class GuardThenLaunch(RewriteIdentity):
    """post_grad_custom_post_pass: the user's post pass, the strict guard, Inductor launches."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        super().__call__(graph)
        gm = graph.owning_module
        check_graph(gm, self.options.strict)
        if self.options.inductor_launches:
            launch_from_inductor(gm)


def hooks_patch(options: Any) -> dict[str, Any]:
    """The config entries that install our passes (keeping the user's in their slots)."""
    return {
        "post_grad_custom_pre_pass": RewriteToInvariantOps(unwrapped(inductor_config.post_grad_custom_pre_pass), options),
        "post_grad_custom_post_pass": GuardThenLaunch(unwrapped(inductor_config.post_grad_custom_post_pass), options),
        # our passes run among the post-grad passes: they must run
        "use_post_grad_passes": True,
    }
