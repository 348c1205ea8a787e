"""The strict guard: after the rewrites, no floating-point reduction may be left to chance.

It walks the final aten graph. Any floating-point reduction the passes did not rewrite, and any
op whose accumulation order is not fixed (scatter/index accumulation, scans, atomics, cuDNN
convolutions...), is a violation: ``BatchInvarianceError`` names the op, its shapes and the user's
source line. ``options={"strict": False}`` turns the error into a warning (that op is then compiled
as Inductor would, without the invariance guarantee).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.fx

from ..errors import BatchInvarianceError
from ._rewrite import input_shapes, user_source_line

aten = torch.ops.aten

# Reductions whose result is exact whatever the order, so they stay as Inductor compiles them.
EXACT_REDUCTIONS = {
    # max / min of floats is associative and commutative exactly (it picks an element; NaN wins
    # in any order); argmax/argmin pick the first index of that element.
    "amax": "picks an element: max is exact in any order",
    "amin": "picks an element: min is exact in any order",
    "aminmax": "picks elements: min/max are exact in any order",
    "max": "picks an element: max is exact in any order",
    "min": "picks an element: min is exact in any order",
    "argmax": "picks the first index of the maximum: exact in any order",
    "argmin": "picks the first index of the minimum: exact in any order",
    # boolean / counting reductions are integer arithmetic: associative.
    "any": "boolean: exact in any order",
    "all": "boolean: exact in any order",
    "count_nonzero": "integer count: exact in any order",
}

# Ops with an accumulation whose order is not fixed by the reduced extent (atomics, scans,
# library kernels that pick algorithms per shape), and no invariant lowering here.
ORDER_UNSTABLE = {
    # Float scans are rewritten (passes/scan.py) and integer ones are exact: a scan left here is
    # of a dtype the scan kernel does not serve (complex, ...).
    "cumsum": "a scan of a dtype the invariant scan kernel does not serve (float16/bfloat16/float32/float64): "
    "its order follows a shape-chosen block; for a complex cumsum, scan torch.view_as_real(z) along the same dim",
    "cumprod": "a scan of a dtype the invariant scan kernel does not serve (float16/bfloat16/float32/float64): "
    "its order follows a shape-chosen block",
    "logcumsumexp": "a scan of a dtype the invariant scan kernel does not serve (float16/bfloat16/float32/float64): "
    "its order follows a shape-chosen block",
    "index_add": "accumulates with atomics: order depends on scheduling",
    "scatter_add": "accumulates with atomics: order depends on scheduling",
    "scatter_reduce": "accumulates with atomics: order depends on scheduling",
    "index_reduce": "accumulates with atomics: order depends on scheduling",
    "embedding_bag": "sums bags with atomics / per-shape kernels",
    "_embedding_bag": "sums bags with atomics / per-shape kernels",
    "_embedding_bag_forward_only": "sums bags with atomics / per-shape kernels",
    "embedding_dense_backward": "accumulates gradients per token with atomics",
    "histc": "counts with atomics",
    "convolution": "cuDNN / oneDNN pick the algorithm (and its reduction order) per shape",
    "_convolution": "cuDNN / oneDNN pick the algorithm (and its reduction order) per shape",
    "mv": "a matrix-vector product lowered as a generic reduction",
    "dot": "a dot product lowered as a generic reduction",
    "addmv": "a matrix-vector product lowered as a generic reduction",
    "addbmm": "a batched matmul summed over the batch",
    # Group norm's statistics are per sample: the backend decomposes it into var_mean over each
    # (sample, group), which the reductions pass rewrites; aten's own fused kernel is only left
    # where that decomposition did not apply.
    "native_group_norm": "aten's fused group-norm kernel (its own reduction order), left undecomposed: "
    "the backend decomposes group norm into per-(sample, group) var_mean, which it makes invariant",
    "native_batch_norm": "batch statistics: a reduction over the batch itself",
    "_native_batch_norm_legit": "batch statistics: a reduction over the batch itself",
    "_native_batch_norm_legit_functional": "batch statistics: a reduction over the batch itself",
    "_scaled_dot_product_flash_attention": "split-KV count chosen from batch x heads",
    "_scaled_dot_product_efficient_attention": "split-KV count chosen from batch x heads",
    "_scaled_dot_product_cudnn_attention": "cuDNN picks its plan per shape",
    "_scaled_dot_product_flash_attention_for_cpu": "splits the KV per thread count and shape",
    "_flash_attention_forward": "split-KV count chosen from batch x heads",
    "_efficient_attention_forward": "split-KV count chosen from batch x heads",
    "_fused_rms_norm": "a fused library kernel with its own reduction order",
    "_grouped_mm": "one GEMM per group, its algorithm chosen from the group's row count",
    "_scaled_grouped_mm": "one GEMM per group, its algorithm chosen from the group's row count",
    "_scaled_mm": "a cuBLASLt GEMM whose algorithm (and split-K) follows the shape",
}

# Accumulating writes: only unsafe with accumulate=True.
ACCUMULATING_PUTS = {"index_put", "_unsafe_index_put", "index_put_"}

# Always-accumulating puts (embedding backward decomposes into this one): atomics.
ORDER_UNSTABLE["_unsafe_masked_index_put_accumulate"] = "accumulates with atomics (e.g. embedding gradients)"


@dataclass
class Violation:
    op: str
    why: str
    shapes: list
    dtype: str
    source: str

    def __str__(self) -> str:
        return f"{self.op} (inputs {self.shapes}, {self.dtype}): {self.why}\n    at {self.source}"


def _packet_name(target) -> str:
    name = getattr(target, "__name__", str(target))  # "cumsum.default"
    return name.split(".")[0]


def _is_floating(node: torch.fx.Node) -> bool:
    vals = [node.meta.get("val")] + [a.meta.get("val") for a in node.all_input_nodes]
    for v in vals:
        for t in v if isinstance(v, (list, tuple)) else [v]:
            if isinstance(t, torch.Tensor) and (t.dtype.is_floating_point or t.dtype.is_complex):
                return True
    return False


def _dtype(node: torch.fx.Node) -> str:
    for a in node.all_input_nodes:
        v = a.meta.get("val")
        if isinstance(v, torch.Tensor):
            return str(v.dtype)
    return "?"


def classify(node: torch.fx.Node) -> tuple[str, str] | None:
    """("exact" | "unsafe", reason) for reductions and order-unstable ops; None for anything else."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return None
    name = _packet_name(node.target)
    if name in EXACT_REDUCTIONS:
        return "exact", EXACT_REDUCTIONS[name]
    if name in ACCUMULATING_PUTS:
        accumulate = node.kwargs.get("accumulate", node.args[3] if len(node.args) > 3 else False)
        if accumulate and _is_floating(node):
            return "unsafe", "accumulates with atomics: order depends on scheduling"
        return None
    if name in ORDER_UNSTABLE:
        return ("unsafe", ORDER_UNSTABLE[name]) if _is_floating(node) else ("exact", "integer arithmetic")
    if torch.Tag.reduction in node.target.tags:
        if not _is_floating(node):
            return "exact", "integer / boolean reduction: exact in any order"
        return "unsafe", "floating-point reduction with no batch-invariant rewrite"
    return None


def find_violations(gm: torch.fx.GraphModule) -> list[Violation]:
    out = []
    for node in gm.graph.nodes:
        verdict = classify(node)
        if verdict and verdict[0] == "unsafe":
            out.append(Violation(str(node.target), verdict[1], input_shapes(node), _dtype(node), user_source_line(node)))
    return out


def check_graph(gm: torch.fx.GraphModule, strict: bool) -> list[Violation]:
    """Raise (strict) or warn about every reduction left that is not batch-invariant."""
    return report(find_violations(gm), strict)


def report(violations: list[Violation], strict: bool) -> list[Violation]:
    if not violations:
        return violations
    listing = "\n".join(f"  - {v}" for v in violations)
    message = (
        f"{len(violations)} op(s) in the compiled graph cannot be made batch-invariant:\n{listing}\n"
        "Rewrite the model to avoid them, or pass options={'strict': False} to torch.compile "
        "to compile them anyway (those ops are then NOT batch-invariant)."
    )
    if strict:
        raise BatchInvarianceError(message)
    warnings.warn(f"inductor_bi (strict=False): {message}", stacklevel=2)
    return violations
