"""The ``batch_invariant`` torch.compile backend.

Flow: Dynamo graph -> aot_autograd with Inductor's decompositions (minus those of ops our passes
own) -> for each aten graph (forward, backward, inference), in Inductor's post-grad hooks
(hooks.py): our passes rewrite every reduction into fixed-order ops, the strict guard checks the
final graph, and the ops whose kernels Inductor can launch itself become those launches ->
Inductor compiles the rest under a config patch that switches off every shape- or timing-dependent
choice.
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

import torch
from torch._inductor.compile_fx import compile_fx, compile_fx_inner
from torch._inductor.decomposition import select_decomp_table

from .inductor_config import pinned_config
from .hooks import hooks_patch
from .options import Options
from .passes import OWNED_OPS
from .passes._observe import observer
from .passes.attention import rewrite_attention_calls
from .passes.convolution import DECOMPOSITIONS as CONVOLUTION_DECOMPOSITIONS
from .passes.guard import find_batch_statistics, report
from .passes.matmul import DECOMPOSITIONS as MATMUL_DECOMPOSITIONS

log = logging.getLogger("inductor_bi")


def batch_invariant(gm: torch.fx.GraphModule, example_inputs, mode: str | None = None, options: dict | None = None):
    """Entry point (``torch_dynamo_backends`` group): ``torch.compile(m, backend="batch_invariant")``."""
    return compile_graph(gm, example_inputs, mode, options)


def compile_graph(gm: torch.fx.GraphModule, example_inputs, mode: str | None = None, options: dict | None = None,
                  inner_compile=compile_fx_inner):  # fmt: skip
    """The backend on one Dynamo graph. ``inner_compile``: Inductor's compile of each aten graph
    (``explain`` passes one that runs our post-grad hooks and records instead of compiling)."""
    opts = Options.parse(options)
    obs = observer()
    if obs is not None:
        obs.graph_in(gm, "dynamo")
    attention_rewrites, refusals = rewrite_attention_calls(gm)
    for r in attention_rewrites:
        log.debug("rewrote %s", r)
    if obs is not None:
        obs.rewritten(gm, attention_rewrites)
    # batch norm on batch statistics: only this graph still tells it from instance norm
    report(refusals + find_batch_statistics(gm), opts.strict)
    return compile_fx(
        gm,
        example_inputs,
        inner_compile=inner_compile,
        config_patches=partition_safe(config_patches(mode, opts), example_inputs),
        decompositions=decompositions(),
    )


def partition_safe(patches: dict[str, Any], example_inputs) -> dict[str, Any]:
    """``patches`` with Inductor's graph partition off where it would change a value's dtype: under
    CUDA graphs it moves the graph's CPU scalar inputs to the GPU as ONE concatenated tensor, so
    scalars of different dtypes come back promoted (an int64 cache position as float64: a failed
    index lowering on torch 2.11 with a static cache's ``generate()``). Without the partition
    such a graph runs outside CUDA graphs (a counted skip), with its own dtypes."""
    scalars = {t.dtype for t in example_inputs if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dim() == 0}
    gpu = any(isinstance(t, torch.Tensor) and t.device.type == "cuda" for t in example_inputs)
    if patches.get("triton.cudagraphs") and gpu and len(scalars) > 1:
        return {**patches, "graph_partition": False}
    return patches


def config_patches(mode: str | None, options: Options | None = None) -> dict[str, Any]:
    """Inductor's options for ``mode`` (e.g. CUDA graphs for "reduce-overhead"), then our pins,
    then our passes in Inductor's post-grad hooks (``hooks``; their identity is in the compile
    caches' keys, ``cache_identity``)."""
    from_mode = dict(torch._inductor.list_mode_options(mode)) if mode else {}
    pinned = pinned_config()
    overridden = sorted(k for k, v in from_mode.items() if k in pinned and pinned[k] != v)
    if overridden:
        warnings.warn(
            f"batch_invariant backend: mode={mode!r} asks for {overridden}, which would pick kernels "
            "per shape by timing; they stay off (batch invariance needs pinned configs)",
            stacklevel=3,
        )
    return {**from_mode, **pinned, **hooks_patch(options or Options())}


@functools.lru_cache(maxsize=None)
def _decompositions_cached() -> tuple:
    table = {op: fn for op, fn in select_decomp_table().items() if op not in OWNED_OPS}
    table.update(CONVOLUTION_DECOMPOSITIONS)  # im2col + invariant matmul instead of cuDNN / oneDNN
    table.update(MATMUL_DECOMPOSITIONS)  # matmuls stay whole; a bool one fails as eager's does
    return tuple(table.items())


class _DecompositionTable(dict):
    """Pickled by reference. torch >= 2.13 hashes a caller's decomposition table into Inductor's
    FX graph cache key, and hundreds of its functions cannot be pickled: every compilation would
    bypass the cache. The table is Inductor's own minus ``OWNED_OPS``, plus the convolutions'
    (``passes/convolution.py``), a function of the torch version and of our source, both already
    in the key (``cache_identity``)."""

    def __reduce__(self):
        return (decompositions, ())


def decompositions() -> dict:
    """Inductor's decomposition table without the ops our passes rewrite, with convolutions
    lowered to im2col + matmul."""
    return _DecompositionTable(_decompositions_cached())


BACKEND_NAME = "batch_invariant"


def register_backend_name() -> None:
    """Make ``backend="batch_invariant"`` work when the package is imported without being
    installed (e.g. from a source tree on PYTHONPATH). When installed, Dynamo finds it through
    the ``torch_dynamo_backends`` entry point, and registering here too would clash."""
    from importlib.metadata import entry_points

    from torch._dynamo.backends import registry

    if BACKEND_NAME in entry_points(group="torch_dynamo_backends").names:
        return
    if BACKEND_NAME not in registry._COMPILER_FNS:
        registry.register_backend(batch_invariant, name=BACKEND_NAME)
