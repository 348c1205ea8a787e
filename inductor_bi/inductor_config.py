"""The Inductor config patch: every shape-dependent or timing-dependent choice switched off.

Each knob is listed with the reason it is pinned. Knobs the installed torch does not have are
skipped (torch 2.11 has no ``batch_invariant``, for example); ``pinned_config()`` returns only the
ones that exist, so the patch applies cleanly on torch 2.11 to 2.14.
"""

from __future__ import annotations

from typing import Any

import torch._inductor.config as inductor_config

# name -> (value, why it is pinned)
PINNED: dict[str, tuple[Any, str]] = {
    # --- Reductions Inductor still generates itself (exact ones, and any left in non-strict mode)
    "split_reductions": (False, "splits one reduction over several programs when rows are few: order follows the row count"),
    "triton.cooperative_reductions": (False, "cooperative (cross-program) reductions are chosen from the row count"),
    "triton.force_cooperative_reductions": (False, "same as cooperative_reductions"),
    "triton.multi_kernel": (0, "picks persistent vs looped reduction at run time by timing"),
    "triton.mix_order_reduction": (False, "fuses reductions of different orders with a shape-chosen split"),
    "online_softmax": (False, "the online softmax's rescaling steps follow a block size chosen from the shape"),
    "batch_invariant": (True, "upstream partial fix (torch >= 2.13): canonical persistent-reduction configs"),
    "deterministic": (True, "skips on-device benchmarking wherever Inductor knows it changes numerics"),
    # --- Autotuning: any timing-based pick can differ between shapes and between runs
    "max_autotune": (False, "benchmarks kernel configs per shape"),
    "max_autotune_gemm": (False, "benchmarks GEMM templates (incl. split-K / decompose-K) per shape"),
    "max_autotune_pointwise": (False, "benchmarks pointwise configs per shape"),
    "coordinate_descent_tuning": (False, "tunes block sizes per shape by timing"),
    "triton.autotune_pointwise": (False, "timing-based config pick per shape"),
    "triton.autotune_cublasLt": (False, "picks cuBLASLt algorithms (and their split-K) per shape"),
    "benchmark_fusion": (False, "decides fusions by timing"),
    "benchmark_epilogue_fusion": (False, "decides epilogue fusions by timing"),
    "benchmark_kernel": (False, "benchmark harness only; keeps compiled code free of timing hooks"),
    # --- Matmul-shaped rewrites Inductor does by shape (our pass already owns every mm)
    "shape_padding": (False, "pads mm operands (K included) depending on their shapes"),
    "force_shape_pad": (False, "same as shape_padding"),
    "comprehensive_padding": (False, "pads strides depending on the shape"),
    "decompose_mem_bound_mm": (False, "rewrites small mm/bmm into mul + sum when the shape is small"),
    "b2b_gemm_pass": (False, "fuses back-to-back GEMMs into a template with its own order"),
    "prologue_fusion": (
        False,
        "fuses a matmul template's producers into its operand loads, computed in fp32 where the "
        "unfused graph reads the stored fp16/bf16 operand",
    ),
    # --- Rounding: make fusion decisions irrelevant to the bits
    "emulate_precision_casts": (
        True,
        "rounds fp16/bf16 intermediates as eager does, so a fusion made in one graph but not in "
        "another (e.g. batch 1 vs dynamic batch) cannot change the bits",
    ),
    "use_fast_math": (False, "fast math lets the compiler reassociate floating-point sums"),
    # --- CPU code: a vectorized loop leaves a scalar tail whose length follows the row count
    "cpp.simdlen": (
        1,
        "no SIMD ISA matches width 1, so the C++ kernels stay scalar: vectorized erf / exp / tanh (Sleef) "
        "and the scalar tail's std:: versions give other bits, and which one an element gets follows the batch",
    ),
}


def _exists(name: str) -> bool:
    obj: Any = inductor_config
    *parents, leaf = name.split(".")
    for part in parents:
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return hasattr(obj, leaf)


def pinned_config() -> dict[str, Any]:
    """The patch for ``torch._inductor.config.patch``: the pinned knobs this torch has."""
    return {name: value for name, (value, _why) in PINNED.items() if _exists(name)}


def unpinned_knobs() -> list[str]:
    """Pinned knobs this torch version does not have (reported by ``explain``)."""
    return [name for name in PINNED if not _exists(name)]
