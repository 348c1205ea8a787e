"""The index_accumulate family's pinned table (kernels/index_accumulate.py): what it accepts and
its launch constants. Pure data, no Triton: the graph passes read it to decide."""

from __future__ import annotations

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)

# Columns one program sums: each column is its own chain, so the width sets parallelism and load
# width only, never a bit of the result.
INDEX_ACCUMULATE_BLOCK_C = 256
# 256 columns fit 4 warps' lanes twice over; the walk is load-bound.
INDEX_ACCUMULATE_WARPS = 4
