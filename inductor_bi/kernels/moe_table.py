"""The MoE routing family's pinned table (kernels/moe.py): what histc accepts and its launch
constants. Pure data, no Triton: the graph passes read it to decide."""

from __future__ import annotations

import torch

HISTC_DTYPES = (torch.float32, torch.float64)

# Elements one histc program bins (integer counts: any block gives the same counts).
HISTC_BLOCK = 1024
HISTC_WARPS = 4
