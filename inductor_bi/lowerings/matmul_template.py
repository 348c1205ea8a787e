"""invariant_matmul as an Inductor Triton template with one pinned choice (as Inductor's own
kernel/mm.py registers its mm templates, without autotuning), so Inductor fuses the pointwise
ops that follow a matmul (SiLU times up, residual adds, casts) into the matmul's kernel.

The template's K loop is the kernel's own (kernels/matmul.py ``_pointer_k_steps``: the template
imports it), with the constexprs of the kernel's FULL launch (``MatmulPlan.constexprs``): the same
tiles, K chunks and order, so an element has the FULL launch's bits, and therefore the SPLIT
launch's. The value the fused ops read is the stored one (rounded to the output dtype, then read
back as fp32), as when they run in a kernel of their own, so a graph whose matmul is split-K (a
decode) and a graph whose matmul takes this template (a prefill) give a row the same bits.

The template takes the 2-D CUDA matmuls that launch FULL (their output's size hint fills the GPU
without split-K), bias added with alpha = beta = 1; the rest keep the traced launches
(lowerings/matmul.py). The launch_from_inductor pass marks the nodes it takes (``TEMPLATE``)."""

from __future__ import annotations

import torch
import torch.fx
from torch._inductor.kernel.mm_common import mm_args, mm_grid
from torch._inductor.lowering import get_layout_constraint_tag, lowerings, make_fallback, tag_to_layout_constraint
from torch._inductor.select_algorithm import TritonTemplate, autotune_select_algorithm
from torch._inductor.virtualized import V

from .. import ops as _ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import matmul as matmul_kernel
from .._fx import fake_value
from ._launches import on_cuda, static_sizes

OP = torch.ops.inductor_bi.invariant_matmul.default
# node.meta key: the MatmulPlan a node takes the template with
TEMPLATE = "inductor_bi_matmul_template"
TEMPLATE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_SOURCE = r"""
from inductor_bi.kernels.matmul import _pointer_k_steps, _tile_coords
{{def_kernel("A", "B")}}
    M = {{size("A", 0)}}
    N = {{size("B", 1)}}
    K = {{size("A", 1)}}
    if M * N == 0:
        return
    stride_am = {{stride("A", 0)}}
    stride_ak = {{stride("A", 1)}}
    stride_bk = {{stride("B", 0)}}
    stride_bn = {{stride("B", 1)}}
    pid_m, pid_n = _tile_coords(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = (offs_m % M).to(tl.int64)
    cols = (offs_n % N).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
    a_ptrs = A + rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = B + offs_k[:, None] * stride_bk + cols[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    total = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    total = _pointer_k_steps(a_ptrs, b_ptrs, stride_ak, stride_bk, K, acc, total, 0, tl.cdiv(K, BLOCK_K),
                             K_CHUNK // BLOCK_K, BLOCK_K, EVEN_K, INPUT_PRECISION, ACC_DTYPE)
    idx_m = offs_m[:, None]
    idx_n = offs_n[None, :]
    mask = (idx_m < M) & (idx_n < N)
    {{store_output(("idx_m", "idx_n"), "total", "mask", val_shape=("BLOCK_M", "BLOCK_N"))}}
"""

invariant_mm_template = TritonTemplate(name="inductor_bi_invariant_mm", grid=mm_grid, source=_SOURCE)


def template_plan(node: torch.fx.Node):
    """The MatmulPlan ``node`` takes the template with, or None: a 2-D CUDA matmul of a float dtype
    with a static K that launches FULL, bias (if any) added unscaled."""
    a, b, bias, beta, alpha = _operands(*node.args, **node.kwargs)
    a, b = fake_value(a), fake_value(b)
    if alpha != 1.0 or beta not in (0.0, 1.0):
        return None
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() == 2 and b.dim() == 2):
        return None
    if not on_cuda(node, 0, 1, 2, dtypes=TEMPLATE_DTYPES) or not static_sizes(a, [-1]):
        return None
    if bias is not None and beta != 0.0 and fake_value(bias).dim() > 2:
        return None
    plan = matmul_kernel.matmul_plan(a.dtype, a.device, 1, a.shape[0], b.shape[1], a.shape[1])
    return None if plan.split_k else plan


def _rounded_to(dtype: torch.dtype, bias: bool):
    """The template's epilogue: bias added in fp32 (as the kernel's), then the value rounded to the
    output dtype and read back, as a fused op would read it from the stored output."""

    def epilogue(acc, *inputs):
        # V.ops, not the wrapping ``ops``: the template's store takes the handler's raw values.
        # use_compute_types=False: Inductor computes bf16 / fp16 in fp32, so a plain to_dtype to
        # them emits a cast to fp32 and rounds nothing; the store type rounds.
        if bias:
            acc = V.ops.add(acc, inputs[0])
        return V.ops.to_dtype(V.ops.to_dtype(acc, dtype, use_compute_types=False), torch.float32)

    return epilogue


def _operands(a, b, bias, beta, alpha):
    return a, b, bias, beta, alpha


def _lower(fallback, *args, **kwargs):
    node = V.graph.current_node
    plan = node.meta.get(TEMPLATE) if node is not None else None
    if plan is None:
        return fallback(*args, **kwargs)
    a, b, bias, beta, _ = _operands(*args, **kwargs)
    with_bias = bias is not None and beta != 0.0
    m, n, k, layout, mat1, mat2, *others = mm_args(a, b, *([bias] if with_bias else []))
    cfg = plan.cfg
    constexprs = plan.constexprs(layout.dtype, int(k))
    constexprs["ACC_DTYPE"] = "tl.float64" if layout.dtype == torch.float64 else "tl.float32"
    constexprs["INPUT_PRECISION"] = repr(constexprs["INPUT_PRECISION"])
    choice = invariant_mm_template.generate(
        input_nodes=(*others, mat1, mat2),
        layout=layout,
        num_stages=cfg.num_stages,
        num_warps=cfg.num_warps,
        prefix_args=len(others),
        epilogue_fn=_rounded_to(layout.dtype, with_bias),
        **constexprs,
    )
    if choice is None:
        return fallback(*args, **kwargs)
    result = autotune_select_algorithm("inductor_bi_invariant_mm", [choice], [*others, mat1, mat2], layout)
    return result[0] if isinstance(result, tuple) else result


def register() -> None:
    """Install the lowering (once). Unmarked nodes go to the fallback Inductor would have made for
    the custom op itself (the same layout constraint), so nothing else changes."""
    if getattr(lowerings.get(OP), "_inductor_bi_template", False):
        return
    if OP not in lowerings:
        make_fallback(OP, layout_constraint=tag_to_layout_constraint(get_layout_constraint_tag(OP, with_default=True)))
    fallback = lowerings[OP]

    def lower(*args, **kwargs):
        return _lower(fallback, *args, **kwargs)

    lower._inductor_bi_template = True
    lowerings[OP] = lower
