"""The strict guard: after the rewrites, no floating-point reduction may be left to chance.

It walks the final aten graph. Any floating-point reduction the passes did not rewrite, and any
op whose accumulation order is not fixed (scatter/index accumulation, atomics, a complex
convolution left to cuDNN...), is a violation: ``BatchInvarianceError`` names the op, its shapes and the user's
source line. ``options={"strict": False}`` turns the error into a warning (that op is then compiled
as Inductor would, without the invariance guarantee).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.fx

from ..errors import BatchInvarianceError
from ._observe import observer
from ._rewrite import input_shapes, user_module, user_source_line

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

_CONV_LEFT = (
    "a convolution of a dtype the im2col + invariant matmul lowering does not serve (complex): cuDNN / oneDNN "
    "pick its algorithm (and reduction order) per shape; convolve the real and imaginary parts as float tensors"
)
_PAD_LEFT = "padding_mode='replicate' with a negative (cropping) pad: its gradient adds edge copies with atomics on CUDA"

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
    "embedding_dense_backward": "accumulates gradients per token with atomics (an embedding's gradient is "
    "rewritten to a fixed-order sum where aot_autograd traced it in the backward; this one is outside a gradient)",
    "histc": "counts with atomics",
    # Float convolutions are lowered to im2col + invariant_matmul (passes/convolution.py): one left
    # here is complex (or unbatched), which cuDNN / oneDNN would run in a per-shape order.
    "convolution": _CONV_LEFT,
    "_convolution": _CONV_LEFT,
    "convolution_backward": _CONV_LEFT,
    "replication_pad1d_backward": _PAD_LEFT,
    "replication_pad2d_backward": _PAD_LEFT,
    "replication_pad3d_backward": _PAD_LEFT,
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

# Library kernels with a floating-point accumulation that Inductor falls back to, each with what to
# write instead (the replacements are ops the passes rewrite). Every one of them reaches the final
# graph undecomposed: none is in the decomposition table.
_CDIST = (
    "torch.cdist's direct kernel, with its own reduction order; torch's default switches to a matmul "
    "form above 25 rows, so a row's bits would also follow the row count. For p=2 pass "
    "compute_mode='use_mm_for_euclid_dist' (matmuls, rewritten, at every row count); for any p write "
    "torch.linalg.vector_norm(x1.unsqueeze(-2) - x2.unsqueeze(-3), ord=p, dim=-1)"
)
_PDIST = (
    "F.pdist's kernel, with its own reduction order; write torch.linalg.vector_norm(x.unsqueeze(-2) - "
    "x.unsqueeze(-3), ord=p, dim=-1) and take its upper triangle (torch.triu_indices(n, n, 1))"
)
_TRILINEAR = (
    "nn.Bilinear / F.bilinear's sum of products, run as library bmm calls whose split-K follows the "
    "shape; write it with a matmul: ((x1 @ W.permute(1, 0, 2).flatten(1)).unflatten(-1, (out, in2)) "
    "* x2.unsqueeze(-2)).sum(-1) + b"
)
_ADDMM_ACTIVATION = (
    "a fused GEMM + activation (cuBLASLt epilogue) whose split-K follows the shape; write "
    "torch.relu(torch.addmm(bias, a, b)) or F.gelu(torch.addmm(bias, a, b), approximate='tanh'), "
    "whose matmul is rewritten"
)
_PACKED_MM = (
    "a quantized-weight GEMM kernel with its own split of K per shape; dequantize the weight and "
    "multiply, e.g. x @ (w.to(x.dtype) * scales[:, None]).t() for _weight_int8pack_mm: that matmul is rewritten"
)
_SEGMENT = (
    "segment_reduce's kernel sums each segment in an order of its own (max / min are exact and kept); "
    "pad the segments to a [segments, longest] tensor (zeros for sum) and reduce its last dim"
)
_UPSAMPLE_BACKWARD = (
    "the gradient of an upsampling adds each output's share into overlapping inputs with atomics on "
    "CUDA; upsample with mode='nearest' / 'bilinear' / 'bicubic' without antialias (their gradients "
    "decompose into ops the guard checks), or keep this op out of a training graph"
)
_GRID_SAMPLER_BACKWARD = (
    "grid_sample's gradient adds into the input with atomics on CUDA; no invariant lowering: "
    "keep grid_sample out of the training graph (e.g. under torch.no_grad()) or compile with strict=False"
)
_FFT = (
    "an FFT library (cuFFT, pocketfft / MKL) picks its plan per transform size and batch count; for "
    "sizes where it fits, multiply by a DFT matrix instead (a complex matmul, rewritten): "
    "x.to(torch.complex64) @ torch.exp(-2j * torch.pi * (torch.outer(n, n) % N) / N) with n = torch.arange(N)"
)
ORDER_UNSTABLE.update(
    {
        "_cdist_forward": _CDIST,
        "_cdist_backward": _CDIST,
        "_euclidean_dist": _CDIST,
        "_pdist_forward": _PDIST,
        "_pdist_backward": _PDIST,
        "_trilinear": _TRILINEAR,
        "_addmm_activation": _ADDMM_ACTIVATION,
        "_weight_int8pack_mm": _PACKED_MM,
        "_weight_int4pack_mm": _PACKED_MM,
        "_weight_int4pack_mm_for_cpu": _PACKED_MM,
        "_weight_int4pack_mm_with_scales_and_zeros": _PACKED_MM,
        "_dyn_quant_matmul_4bit": _PACKED_MM,
        "segment_reduce": _SEGMENT,
        "_segment_reduce_backward": _SEGMENT,
        "grid_sampler_2d_backward": _GRID_SAMPLER_BACKWARD,
        "grid_sampler_3d_backward": _GRID_SAMPLER_BACKWARD,
        "_fft_r2c": _FFT,
        "_fft_c2r": _FFT,
        "_fft_c2c": _FFT,
    }
)
# The plain modes' gradients decompose into accumulating index_put (refused above); these are the
# ones that reach the graph whole (antialiased, or a decomposition that did not apply).
for _mode in (
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d",
    "upsample_bicubic2d", "upsample_trilinear3d", "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa",
    "_upsample_lanczos2d_aa",
):  # fmt: skip
    ORDER_UNSTABLE[f"{_mode}_backward"] = _UPSAMPLE_BACKWARD
# segment_reduce's max / min pick an element: exact in any order (their gradient stays refused).
_EXACT_SEGMENT_REDUCES = {"max", "min"}

# The matmul family: the matmul pass rewrites every floating / complex one it can; one left here
# would run a library GEMM whose split-K follows the shape. Integer matmuls are exact.
MATMULS = {"mm", "addmm", "bmm", "baddbmm"}
MATMUL_LEFT = (
    "a matmul the matmul pass could not rewrite (invariant_matmul takes float16 / bfloat16 / "
    "float32 / float64 / complex64 / complex128 with real alpha and beta): a library GEMM picks its "
    "split-K per shape; cast the operands to one of those dtypes"
)

# Complex sums and means are rewritten over their real and imaginary parts (passes/reductions.py);
# any other complex reduction has no kernel, but most are real reductions of the parts.
COMPLEX_REDUCTION = (
    "a complex reduction other than sum / mean (those are rewritten): no batch-invariant kernel for it; "
    "compute it from real reductions of the parts, e.g. torch.view_as_real(x).var(d).sum(-1) for x.var(d), "
    "d >= 0 (the parts' dim -1 holds real and imaginary: x's dim -1 is theirs -2)"
)

# Accumulating writes: only unsafe with accumulate=True. A gradient's put over dest's leading
# dims (an embedding's, weight[ids]'s) is rewritten to a fixed-order sum (passes/index_accumulate.py):
# one left here is in a forward graph, or indexes other dims.
ACCUMULATING_PUTS = {"index_put", "_unsafe_index_put", "index_put_"}
ACCUMULATING_PUT_LEFT = (
    "accumulates with atomics: order depends on scheduling (a gradient's put over leading dims, e.g. an "
    "embedding's, is rewritten to a fixed-order sum; a forward scatter, or a put with None in its indices, is not)"
)

# Always-accumulating puts (embedding backward decomposes into this one): atomics.
ORDER_UNSTABLE["_unsafe_masked_index_put_accumulate"] = ACCUMULATING_PUT_LEFT


@dataclass
class Violation:
    op: str
    why: str
    shapes: list
    dtype: str
    source: str
    module: str | None = None  # the nn.Module it was traced from, e.g. "module `encoder.0.norm` (BatchNorm2d)"

    def __str__(self) -> str:
        module = f"\n    in {self.module}" if self.module and self.module not in self.source else ""
        return f"{self.op} (inputs {self.shapes}, {self.dtype}): {self.why}\n    at {self.source}{module}"


def _packet_name(target) -> str:
    name = getattr(target, "__name__", str(target))  # "cumsum.default"
    return name.split(".")[0]


def _tensors(node: torch.fx.Node) -> list[torch.Tensor]:
    """The traced values of the node's output and inputs."""
    vals = [node.meta.get("val")] + [a.meta.get("val") for a in node.all_input_nodes]
    return [t for v in vals for t in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(t, torch.Tensor)]


def _is_floating(node: torch.fx.Node) -> bool:
    """Floating or complex: anything whose additions round (only integer / bool ones are exact)."""
    return any(t.dtype.is_floating_point or t.dtype.is_complex for t in _tensors(node))


def _is_complex(node: torch.fx.Node) -> bool:
    return any(t.dtype.is_complex for t in _tensors(node))


def _dtype(node: torch.fx.Node) -> str:
    for a in node.all_input_nodes:
        v = a.meta.get("val")
        if isinstance(v, torch.Tensor):
            return str(v.dtype)
    return "?"


# Collectives that add across ranks (torch.distributed's functional ops, as Dynamo traces
# dist.all_reduce and DTensor's tensor parallelism): NCCL picks the algorithm, protocol and channel
# count from the message size, which follows the batch, and with them the order of the sum.
COLLECTIVE_NAMESPACES = ("_c10d_functional", "_c10d_functional_autograd", "c10d")
# name -> position of the reduce op argument (a string in the functional ops; None: not readable)
REDUCING_COLLECTIVES = {
    "all_reduce": 1, "all_reduce_coalesced": 1, "reduce_scatter_tensor": 1, "reduce_scatter_tensor_coalesced": 1,
    "allreduce_": None, "allreduce_coalesced_": None, "reduce_scatter_": None, "_reduce_scatter_base_": None,
    "reduce_": None,
}  # fmt: skip
EXACT_COLLECTIVE_OPS = ("max", "min", "band", "bor", "bxor")
COLLECTIVE_LEFT = (
    "a collective sum across ranks: NCCL picks its algorithm, protocol and channel count (and so the "
    "order of the sum) from the message size, which follows the batch"
)


def _classify_collective(node: torch.fx.Node, name: str) -> tuple[str, str] | None:
    position = REDUCING_COLLECTIVES[name]
    op = node.args[position] if position is not None and len(node.args) > position else None
    if isinstance(op, str) and op.lower() in EXACT_COLLECTIVE_OPS:
        return "exact", f"a collective {op.lower()}: exact in any order"
    if _tensors(node) and not _is_floating(node):
        return "exact", "a collective over integers: exact in any order"
    return "unsafe", COLLECTIVE_LEFT


def classify(node: torch.fx.Node) -> tuple[str, str] | None:
    """("exact" | "unsafe", reason) for reductions and order-unstable ops; None for anything else."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return None
    name = _packet_name(node.target)
    if node.target.namespace in COLLECTIVE_NAMESPACES:
        return _classify_collective(node, name) if name in REDUCING_COLLECTIVES else None
    if name in EXACT_REDUCTIONS:
        return "exact", EXACT_REDUCTIONS[name]
    if name in ACCUMULATING_PUTS:
        accumulate = node.kwargs.get("accumulate", node.args[3] if len(node.args) > 3 else False)
        if accumulate and _is_floating(node):
            return "unsafe", ACCUMULATING_PUT_LEFT
        return None
    if name == "segment_reduce" and (node.args[1] if len(node.args) > 1 else node.kwargs.get("reduce")) in _EXACT_SEGMENT_REDUCES:
        return "exact", "segment max / min picks an element: exact in any order"
    if name in ORDER_UNSTABLE:
        return ("unsafe", ORDER_UNSTABLE[name]) if _is_floating(node) else ("exact", "integer arithmetic")
    if name in MATMULS and node.target.namespace == "aten":
        return ("unsafe", MATMUL_LEFT) if _is_floating(node) else ("exact", "integer matmul: exact in any order")
    if torch.Tag.reduction in node.target.tags:
        if not _is_floating(node):
            return "exact", "integer / boolean reduction: exact in any order"
        if _is_complex(node):
            return "unsafe", COMPLEX_REDUCTION
        return "unsafe", "floating-point reduction with no batch-invariant rewrite"
    return None


def find_violations(gm: torch.fx.GraphModule) -> list[Violation]:
    out = []
    for node in gm.graph.nodes:
        verdict = classify(node)
        if verdict and verdict[0] == "unsafe":
            out.append(Violation(str(node.target), verdict[1], input_shapes(node), _dtype(node), user_source_line(node), user_module(node)))
    return out


# ---------------------------------------------------------------------------------------------
# Batch statistics, on the Dynamo graph
# ---------------------------------------------------------------------------------------------
# Batch norm with batch statistics normalizes each row by the mean and variance of the whole
# batch: a row's output depends on the other rows by definition, whatever the kernel. It is caught
# on the Dynamo graph, where F.batch_norm is still one call with its training flag: after
# aot_autograd it is a var_mean over the batch dims like any other, and F.instance_norm
# (per-sample statistics: aten's batch_norm over an [N * C, ...] view) is the very same aten op.

# The batch norms a Dynamo graph can call: torch.nn.functional's and the torch / aten ops.
_BATCH_NORM_OPS = {"batch_norm", "native_batch_norm", "_native_batch_norm_legit", "cudnn_batch_norm", "miopen_batch_norm"}
_ALWAYS_TRAINING = {"_batch_norm_with_update", "_batch_norm_with_update_functional", "_native_batch_norm_legit_functional"}

BATCH_STATISTICS = (
    "normalizes each row with the mean and variance of the whole batch: a row's output depends on "
    "the other rows by definition. Call model.eval() to normalize with the running statistics, or "
    "use a per-sample norm (LayerNorm, GroupNorm, InstanceNorm)"
)
NO_RUNNING_STATISTICS = (
    "normalizes each row with the mean and variance of the whole batch, in eval mode too: it keeps "
    "no running statistics (track_running_stats=False). Construct it with track_running_stats=True, "
    "train it, and call model.eval(); or use a per-sample norm (LayerNorm, GroupNorm, InstanceNorm)"
)


def _batch_norm_call(node: torch.fx.Node) -> tuple[str, object, bool] | None:
    """(the call's name, its ``training`` argument, whether it has running statistics) for a
    batch norm call of a Dynamo graph; None for any other node."""
    if node.op != "call_function":
        return None
    target = node.target
    if target is torch.nn.functional.batch_norm:
        # F.batch_norm(input, running_mean, running_var, weight, bias, training=False, ...)
        training = node.kwargs.get("training", node.args[5] if len(node.args) > 5 else False)
        running = node.kwargs.get("running_mean", node.args[1] if len(node.args) > 1 else None)
        return "F.batch_norm", training, running is not None
    name = _packet_name(target)
    if not (isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)) or getattr(torch, name, None) is target):
        return None
    if name in _ALWAYS_TRAINING:
        return f"torch.{name}", True, True
    if name not in _BATCH_NORM_OPS:
        return None
    # (input, weight, bias, running_mean, running_var, training, ...); the no-stats overload of
    # _native_batch_norm_legit is (input, weight, bias, training, ...)
    position = 3 if name == "_native_batch_norm_legit" and len(node.args) + len(node.kwargs) == 6 else 5
    training = node.kwargs.get("training", node.args[position] if len(node.args) > position else True)
    return f"torch.{name}", training, position == 5


def find_batch_statistics(gm: torch.fx.GraphModule) -> list[Violation]:
    """Every batch norm of a Dynamo graph that normalizes with batch statistics: training mode,
    or no running statistics to use instead (a training flag that is not a constant counts)."""
    out = []
    for node in gm.graph.nodes:
        call = _batch_norm_call(node)
        if call is None:
            continue
        name, training, running = call
        if training is False:
            continue
        x = node.args[0].meta.get("example_value") if node.args and isinstance(node.args[0], torch.fx.Node) else None
        out.append(
            Violation(
                op=f"{name}(training={training})",
                why=BATCH_STATISTICS if running else NO_RUNNING_STATISTICS,
                shapes=[tuple(x.shape)] if isinstance(x, torch.Tensor) else [],
                dtype=str(x.dtype) if isinstance(x, torch.Tensor) else "?",
                source=user_source_line(node),
                module=user_module(node),
            )
        )
    return out


def check_graph(gm: torch.fx.GraphModule, strict: bool) -> list[Violation]:
    """Raise (strict) or warn about every reduction left that is not batch-invariant."""
    return report(find_violations(gm), strict)


def report(violations: list[Violation], strict: bool) -> list[Violation]:
    """Raise (strict) or warn about ``violations``, unless the compile's observer takes them."""
    obs = observer()
    if obs is not None and obs.guarded(violations):
        return violations
    if not violations:
        return violations
    message = error_message(violations)
    if strict:
        raise BatchInvarianceError(message)
    warnings.warn(f"inductor_bi (strict=False): {message}", stacklevel=2)
    return violations


def error_message(violations: list[Violation]) -> str:
    """The message of the BatchInvarianceError that strict mode raises for ``violations``."""
    listing = "\n".join(f"  - {v}" for v in violations)
    return (
        f"{len(violations)} op(s) in the compiled graph cannot be made batch-invariant:\n{listing}\n"
        "Rewrite the model to avoid them, or pass options={'strict': False} to torch.compile "
        "to compile them anyway (those ops are then NOT batch-invariant)."
    )
