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


# ---------------------------------------------------------------------------------------------
# assert_batch_invariant: a whole model, row by row, with the first diverging submodule named
# ---------------------------------------------------------------------------------------------
# (Imports local to this section, so the helpers above keep their import cost.)

import itertools as _itertools  # noqa: E402
import types as _types  # noqa: E402
from dataclasses import dataclass as _dataclass  # noqa: E402
from typing import Any as _Any, Callable as _Callable, Optional as _Optional, Sequence as _Sequence  # noqa: E402

from torch.utils import _pytree  # noqa: E402


@_dataclass(frozen=True)
class RowMismatch:
    """Row ``row`` of the full batch (size ``batch``) differs from the same row computed in the
    sub-batch ``rows`` (a ``range`` of the full batch's rows)."""

    row: int
    batch: int
    rows: range
    output: str  # which output leaf, e.g. "output" or "output[1]"
    num_differing: int
    numel: int
    max_abs_diff: float

    def __str__(self) -> str:
        return (
            f"row {self.row} of a batch of {self.batch} differs from the same row computed in a batch of "
            f"{len(self.rows)} (rows {self.rows.start}..{self.rows.stop - 1}): {self.output}: "
            f"{self.num_differing} of {self.numel} elements differ (max abs diff {self.max_abs_diff:.3e})"
        )


@_dataclass(frozen=True)
class ModuleDivergence:
    """The first submodule, in execution order, whose output for the row differs."""

    name: str  # qualified name ("layers.1.mlp"; "" is the model itself)
    module_type: str
    call: int  # 0 for the module's first call in the forward, 1 for its second, ...
    num_differing: int
    numel: int
    max_abs_diff: float
    modules_equal_before: int  # module outputs compared equal before this one

    def __str__(self) -> str:
        call = f" (call {self.call})" if self.call else ""
        return (
            f"first diverging submodule: '{self.name or '<model>'}' ({self.module_type}){call}: "
            f"{self.num_differing} of {self.numel} elements of its output for the row differ "
            f"(max abs diff {self.max_abs_diff:.3e}); the {self.modules_equal_before} module outputs "
            "before it were equal"
        )


def _leaves(out) -> list[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor in a (nested) output, e.g. ("output[1]", t)."""
    flat, _spec = _pytree.tree_flatten_with_path(out)
    return [("output" + _pytree.keystr(path), t) for path, t in flat if isinstance(t, torch.Tensor)]


def _split_rows(args: tuple, batch: int, rows: range) -> tuple:
    """Slice every tensor argument whose leading dim is the batch; pass the rest through."""
    return tuple(
        a[rows.start : rows.stop] if isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == batch else a
        for a in args
    )


def _compare_row(full: torch.Tensor, sub: torch.Tensor, row: int, sub_row: int):
    """(num_differing, numel, max_abs_diff) of one row, or None when its bits are equal."""
    a, b = full[row], sub[sub_row]
    if a.shape == b.shape and torch.equal(a, b):
        return None
    if a.shape != b.shape:
        return (a.numel(), a.numel(), float("inf"))
    return int((a != b).sum()), a.numel(), float((a.double() - b.double()).abs().max())


def _batch_size_of(args: tuple) -> int:
    for a in args:
        if isinstance(a, torch.Tensor) and a.dim() > 0:
            return a.shape[0]
    raise ValueError("assert_batch_invariant: the example has no tensor with a batch dimension")


def assert_batch_invariant(
    model: _Callable,
    example: _Any,
    *,
    batch_sizes: _Optional[_Sequence[int]] = None,
    module: _Optional[torch.nn.Module] = None,
    diagnose: bool = True,
) -> None:
    """Assert that every row of ``model(example)`` is bitwise the same when the row is computed in
    smaller batches: for each size b in ``batch_sizes`` the example is cut into consecutive
    sub-batches of b rows (the last may be shorter), and each row's outputs must equal the full
    batch's. Default sizes: 1 (every row alone) and about half the batch.

    ``example``: a tensor, or a tuple of positional arguments; every tensor whose dim 0 is the
    batch is sliced, anything else is passed as is. Every output tensor whose dim 0 is the batch is
    compared. Runs under ``torch.no_grad()``.

    On a mismatch, with ``diagnose``, the first failing (row, sub-batch) is run again with forward
    hooks on every named submodule of ``module`` (default: ``model`` if it is an nn.Module, or the
    module a ``torch.compile``'d module wraps) and the error names the first submodule, in
    execution order, whose output for that row differs. A compiled module is compiled afresh for
    this, with the same backend and options, so that its graph runs the hooks; the extra graph
    outputs may change Inductor's fusions, not the kernels it picks.
    """
    args = example if isinstance(example, tuple) else (example,)
    batch = _batch_size_of(args)
    if batch_sizes is None:
        batch_sizes = sorted({1, (batch + 1) // 2} - {batch}) or [1]
    with torch.no_grad():
        full = _leaves(model(*args))
        for size in batch_sizes:
            if not 1 <= size <= batch:
                raise ValueError(f"batch size {size} is not in 1..{batch}")
            for start in range(0, batch, size):
                rows = range(start, min(start + size, batch))
                sub = _leaves(model(*_split_rows(args, batch, rows)))
                mismatch = _first_row_mismatch(full, sub, batch, rows)
                if mismatch is None:
                    continue
                message = f"not batch-invariant: {mismatch}"
                if diagnose:
                    divergence = find_first_diverging_module(
                        model, args, rows, mismatch.row, module=module
                    )
                    message += "\n" + (str(divergence) if isinstance(divergence, ModuleDivergence) else divergence)
                raise AssertionError(message)


def _first_row_mismatch(full, sub, batch: int, rows: range) -> _Optional[RowMismatch]:
    if [p for p, _ in full] != [p for p, _ in sub]:
        raise AssertionError(f"the outputs' structure changed with the batch: {[p for p, _ in full]} vs {[p for p, _ in sub]}")
    for (path, f), (_, s) in zip(full, sub):
        if f.dim() == 0 or f.shape[0] != batch or s.shape[0] != len(rows):
            continue  # not a per-row output (a scalar, a shared buffer, ...)
        for sub_row, row in enumerate(rows):
            diff = _compare_row(f, s, row, sub_row)
            if diff is not None:
                return RowMismatch(row, batch, rows, path, *diff)
    return None


_fresh_ids = _itertools.count()


def _fresh_function(module: torch.nn.Module) -> _Callable:
    """``module(*args)`` as a function with a code object Dynamo has never seen: Dynamo caches
    compiled frames per code object (and does not guard on hooks by default), so only a fresh
    code object makes it trace the module again, hooks included."""

    def call(*args, **kwargs):
        return module(*args, **kwargs)

    code = call.__code__.replace(co_name=f"batch_invariance_hooked_call_{next(_fresh_ids)}")
    return _types.FunctionType(code, call.__globals__, code.co_name, None, call.__closure__)


def find_first_diverging_module(
    model: _Callable,
    args: tuple,
    rows: range,
    row: int,
    *,
    module: _Optional[torch.nn.Module] = None,
) -> "ModuleDivergence | str":
    """Run ``model`` on the full ``args`` and on the sub-batch ``rows`` with forward hooks on every
    named submodule, and return the first module (in the order the hooks fire: a module after its
    children) whose output for ``row`` differs; or a string saying why none could be named."""
    compiled = getattr(model, "_orig_mod", None) if hasattr(model, "dynamo_ctx") else None
    module = module or compiled or (model if isinstance(model, torch.nn.Module) else None)
    if module is None:
        return "(no submodule to hook: pass module=<the nn.Module the model runs> to name the diverging layer)"
    runner = model.dynamo_ctx(_fresh_function(module)) if compiled is not None else model
    batch = _batch_size_of(args)

    def run(call_args) -> list[tuple[str, str, torch.Tensor]]:
        captured: list = []

        def hook_for(name):
            def hook(mod, inputs, output):
                for path, t in _leaves(output):
                    captured.append((name, type(mod).__name__, t.detach().clone()))

            return hook

        handles = [m.register_forward_hook(hook_for(name)) for name, m in module.named_modules()]
        try:
            with torch.no_grad():
                runner(*call_args)
        finally:
            for h in handles:
                h.remove()
        return captured

    full = run(args)
    sub = run(_split_rows(args, batch, rows))
    if not full:
        return "(no forward hook fired: the model does not run the submodules of `module` eagerly or as a compiled nn.Module)"
    calls: dict = {}
    equal_before = 0
    for (name, kind, f), (sub_name, _, s) in zip(full, sub):
        if name != sub_name:
            return f"(the module call sequence changed with the batch at '{name}' vs '{sub_name}')"
        call = calls[name] = calls.get(name, -1) + 1
        if f.dim() == 0 or f.shape[0] != batch or s.shape[0] != len(rows):
            continue
        diff = _compare_row(f, s, row, row - rows.start)
        if diff is None:
            equal_before += 1
            continue
        return ModuleDivergence(name, kind, call, *diff, equal_before)
    return "(every hooked submodule's output for the row was equal: the divergence is outside them, or the hooks changed it)"


# ---------------------------------------------------------------------------------------------
# Hypothesis strategies (hypothesis is imported when a strategy is built)
# ---------------------------------------------------------------------------------------------


def batch_sizes(min_size: int = 1, max_size: int = 64):
    """Batch sizes to put a row in; shrinks towards ``min_size``."""
    from hypothesis import strategies as st

    return st.integers(min_size, max_size)


def row_positions(batch: int):
    """A row index inside a batch of ``batch`` rows."""
    from hypothesis import strategies as st

    return st.integers(0, batch - 1)


def sub_batches(batch: int):
    """A ``range`` of consecutive rows of a batch of ``batch``: the rows to run as a smaller batch."""
    from hypothesis import strategies as st

    return st.integers(1, batch).flatmap(lambda size: st.integers(0, batch - size).map(lambda start: range(start, start + size)))
