"""Testing helpers for batch invariance, for this project's tests and for users' own suites.

Invariance is checked bitwise (the same bits, so NaN equals NaN and -0.0 differs from 0.0);
accuracy is checked separately, against a float64 reference, with a tolerance that fits the dtype.
Complex tensors are compared in both parts, integer and bool tensors exactly.
"""

from __future__ import annotations

import torch

# Relative error (||out - ref|| / ||ref||) allowed per dtype, against a float64 reference.
# A complex dtype takes its real dtype's (complex64: float32's).
RELATIVE_TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}


def _is_exact_dtype(dtype: torch.dtype) -> bool:
    """Integer and bool values: compared exactly, never within a tolerance."""
    return not dtype.is_floating_point and not dtype.is_complex


def _wide(t: torch.Tensor, complex_: bool) -> torch.Tensor:
    t = t.detach().cpu().resolve_conj().resolve_neg()
    return t.to(torch.complex128 if complex_ else torch.float64)


def _require_same_shape(out: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    # Broadcasting would compare a [3] output with a [3, 1] reference as [3, 3]: a wrong shape
    # must fail, not pass.
    if out.shape != ref.shape:
        raise ValueError(f"{what}: out has shape {tuple(out.shape)} but the reference has shape {tuple(ref.shape)}")


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` (the absolute ``||out - ref||`` when ``ref`` is all zeros), in
    float64, or complex128 when either is complex (both parts count).

    NaN and infinities must sit where the reference has them (the same infinity): then they are
    no error and the rest is compared; anywhere else the error is ``inf``. Shapes must match."""
    _require_same_shape(out, ref, "relative_error")
    complex_ = out.is_complex() or ref.is_complex()
    o, r = _wide(out, complex_), _wide(ref, complex_)
    finite = torch.isfinite(r)
    if not torch.equal(torch.isnan(o), torch.isnan(r)):
        return float("inf")
    infinite = torch.isinf(r)
    if not torch.equal(o[infinite], r[infinite]) or not torch.isfinite(o[finite]).all():
        return float("inf")
    o, r = o[finite], r[finite]
    if o.numel() == 0:
        return 0.0
    diff = o - r
    # Scale by the largest magnitude before the norms: squares of 1e-200 or 1e200 would
    # underflow or overflow even in float64.
    scale = max(r.abs().max().item(), diff.abs().max().item())
    if scale == 0:
        return 0.0
    denom = (r / scale).norm().item()
    num = (diff / scale).norm().item()
    return num / denom if denom > 0 else num * scale


def assert_close_to_reference(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype | None = None, tol_scale: float = 1.0):
    """``out`` is within the dtype's relative tolerance of the float64 reference ``ref``
    (``relative_error``). ``dtype`` (default ``out.dtype``) picks the tolerance; a complex dtype
    takes its real dtype's. Integer and bool outputs are compared exactly (an exact reduction
    has exactly one right answer)."""
    dtype = dtype or out.dtype
    if out.shape != ref.shape:
        raise AssertionError(f"out has shape {tuple(out.shape)} but the reference has shape {tuple(ref.shape)}")
    if _is_exact_dtype(dtype):
        o, r = out.detach().cpu(), ref.detach().cpu()
        if _is_exact_dtype(r.dtype):
            differ = o.to(torch.int64) != r.to(torch.int64)
        else:
            differ = o.to(torch.float64) != r.to(torch.float64)
        n = int(differ.sum())
        assert n == 0, f"{n} of {out.numel()} elements differ from the reference ({dtype} outputs are compared exactly)"
        return
    real = dtype.to_real() if dtype.is_complex else dtype
    if real not in RELATIVE_TOLERANCE:
        known = ", ".join(str(d) for d in RELATIVE_TOLERANCE)
        raise ValueError(
            f"assert_close_to_reference: no relative tolerance for {dtype}; pass dtype= one of {known} "
            "whose tolerance fits the output"
        )
    err = relative_error(out, ref)
    tol = RELATIVE_TOLERANCE[real] * tol_scale
    assert err <= tol, f"relative error {err:.3e} > {tol:.1e} for {dtype}"


_SAME_WIDTH_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """``t``'s raw bits as integers (a complex tensor's as [..., 2]); integer and bool as they are."""
    t = t.detach().resolve_conj().resolve_neg()
    if t.is_complex():
        t = torch.view_as_real(t)
    if t.is_floating_point():
        t = t.view(_SAME_WIDTH_INT[t.element_size()])
    return t


def _differing(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: do ``a`` and ``b`` (same shape and dtype) differ in any bit?"""
    d = _bits(a) != _bits(b.to(a.device))
    return d.any(-1) if a.is_complex() else d


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor, differing: torch.Tensor) -> float:
    """The largest |a - b| over the differing elements (NaN where a NaN is involved)."""
    complex_ = a.is_complex()
    a, b = _wide(a, complex_)[differing.cpu()], _wide(b, complex_)[differing.cpu()]
    return float((a - b).abs().max()) if a.numel() else 0.0


def assert_rows_equal(batched: torch.Tensor, alone: torch.Tensor, what: str = "row"):
    """Bitwise equality (NaN equals NaN, -0.0 differs from 0.0), with a message that says how
    many elements differ and by how much."""
    if batched.dtype != alone.dtype:
        raise AssertionError(f"{what}: dtypes differ: {batched.dtype} vs {alone.dtype}")
    if batched.shape != alone.shape:
        raise AssertionError(f"{what}: shapes differ: {tuple(batched.shape)} vs {tuple(alone.shape)}")
    differing = _differing(batched, alone)
    n = int(differing.sum())
    if n == 0:
        return
    raise AssertionError(f"{what}: {n} of {batched.numel()} elements differ (max abs diff {_max_abs_diff(batched, alone, differing):.3e})")


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
    if a.shape != b.shape or a.dtype != b.dtype:
        return (a.numel(), a.numel(), float("inf"))
    differing = _differing(a, b)
    n = int(differing.sum())
    return None if n == 0 else (n, a.numel(), _max_abs_diff(a, b, differing))


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
