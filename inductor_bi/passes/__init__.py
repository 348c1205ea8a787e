"""Graph passes: one per op family, each a function over an aten-level FX graph.

``rewrite_graph`` runs them in order and returns what each rewrote (for ``explain`` and logging).
``OWNED_OPS`` are the aten ops the passes rewrite; the backend keeps Inductor's decompositions
away from them so they reach the passes intact (Inductor would otherwise decompose, e.g., a
batch-1 mm into mul + sum: a different arithmetic for a single row than for a batch).
"""

from __future__ import annotations

import logging

import torch.fx

from ._rewrite import Rewrite
from .collectives import rewrite_collective_sums
from .guard import check_graph
from .index_accumulate import rewrite_gradient_index_puts
from .kv_gather import fold_kv_gathers
from .matmul import MATMUL_OPS, rewrite_matmuls
from .reductions import FUSED_OPS, rewrite_reductions
from .rms_norm import fuse_rms_norms
from .scan import rewrite_scans
from .moe import rewrite_moe_routing

log = logging.getLogger("inductor_bi")

OWNED_OPS = frozenset(MATMUL_OPS) | frozenset(FUSED_OPS)

PASSES = (
    rewrite_matmuls, rewrite_reductions, fuse_rms_norms, fold_kv_gathers, rewrite_moe_routing, rewrite_scans,
    rewrite_gradient_index_puts, rewrite_collective_sums,
)


def rewrite_graph(gm: torch.fx.GraphModule) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    for rewrite_pass in PASSES:
        rewrites.extend(rewrite_pass(gm))
    gm.graph.lint()
    gm.recompile()
    for r in rewrites:
        log.debug("rewrote %s", r)
    return rewrites


__all__ = ["OWNED_OPS", "Rewrite", "check_graph", "rewrite_graph"]
