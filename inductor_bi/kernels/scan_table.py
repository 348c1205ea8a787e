"""The scan family's pinned table (kernels/scan.py): what it accepts and its launch constants.
Pure data, no Triton: the graph passes read it to decide and to report."""

from __future__ import annotations

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Elements per block on CUDA. tl.associative_scan's combine tree follows the block size and the
# register layout, so both are pinned (never a function of the row count or length); 1024 keeps a
# row of a typical sequence length in one block, 8 elements per thread at 4 warps.
SCAN_BLOCK_CUDA = 1024
SCAN_WARPS = 4
# Triton's default pipeline depth, passed explicitly: Inductor's launches take exactly the traced
# launch options, so both launch paths compile one binary.
SCAN_STAGES = 3
# Interpreter (CPU reference mode): small, so that rows of a few dozen elements already carry a
# prefix across blocks in tests, and the interpreter's per-element combine loop stays cheap.
SCAN_BLOCK_INTERPRETER = 16


def scan_block(device: torch.device) -> int:
    """The pinned block size of the launch on ``device`` (a function of the device kind only)."""
    return SCAN_BLOCK_CUDA if device.type == "cuda" else SCAN_BLOCK_INTERPRETER
