"""The backend's options: ``torch.compile(m, backend="batch_invariant", options={...})``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Options:
    # strict=True: a floating-point reduction the passes could not make invariant raises
    # BatchInvarianceError naming the op and the user's source line. strict=False warns instead
    # (the graph then runs with that reduction as Inductor compiles it: not guaranteed invariant).
    strict: bool = True

    @classmethod
    def parse(cls, options: dict[str, Any] | None) -> "Options":
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"batch_invariant backend: unknown option(s) {unknown}; known options: {sorted(known)}"
            )
        return cls(**options)
