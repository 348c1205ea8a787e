"""Testing helpers for batch invariance, for this project's tests and for users' own suites.

Invariance is checked bitwise (``torch.equal``); accuracy is checked separately, against a float64
reference, with a tolerance that fits the dtype.
"""

from __future__ import annotations

import torch

# Relative error (||out - ref|| / ||ref||) allowed per dtype, against a float64 reference.
RELATIVE_TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if torch.isnan(out64).any() != torch.isnan(ref64).any():
        return float("inf")
    denom = ref64.norm().item()
    diff = (out64 - ref64).norm().item()
    return diff / denom if denom > 0 else diff


def assert_close_to_reference(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype | None = None, tol_scale: float = 1.0):
    """``out`` is within the dtype's relative tolerance of the float64 reference ``ref``."""
    dtype = dtype or out.dtype
    err = relative_error(out, ref)
    tol = RELATIVE_TOLERANCE[dtype] * tol_scale
    assert err <= tol, f"relative error {err:.3e} > {tol:.1e} for {dtype}"


def assert_rows_equal(batched: torch.Tensor, alone: torch.Tensor, what: str = "row"):
    """Bitwise equality, with a message that says how many elements differ and by how much."""
    if torch.equal(batched, alone):
        return
    if batched.shape != alone.shape:
        raise AssertionError(f"{what}: shapes differ: {tuple(batched.shape)} vs {tuple(alone.shape)}")
    diff = (batched.double() - alone.double()).abs()
    n = int((batched != alone).sum())
    raise AssertionError(f"{what}: {n} of {batched.numel()} elements differ (max abs diff {diff.max().item():.3e})")
