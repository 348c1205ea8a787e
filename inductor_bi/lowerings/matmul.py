"""invariant_matmul launched by Inductor (kernels/matmul.py): K sets the chunking constexprs, so
it must be static; M and the batch may be symbolic (the grid follows them)."""

from __future__ import annotations

import torch

from .. import ops  # noqa: F401  (registers torch.ops.inductor_bi)
from ..kernels import matmul as matmul_kernel
from .._fx import fake_value
from ._launches import Lowering, on_cuda, static_sizes
from .matmul_template import TEMPLATE


def _traceable(node: torch.fx.Node) -> bool:
    """CUDA operands of a real dtype with a static K, unless Inductor's template takes it."""
    if TEMPLATE in node.meta:
        return False
    a = fake_value(node.args[0])
    return on_cuda(node, 0, 1, dtypes=matmul_kernel.SUPPORTED_DTYPES) and static_sizes(a, [-1])


LOWERINGS = {torch.ops.inductor_bi.invariant_matmul.default: Lowering(matmul_kernel.invariant_matmul, _traceable)}
