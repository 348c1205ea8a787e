"""The backend's options: ``torch.compile(m, backend="batch_invariant", options={...})``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, get_type_hints


@dataclass(frozen=True)
class Options:
    # strict=True: a floating-point reduction the passes could not make invariant raises
    # BatchInvarianceError naming the op and the user's source line. strict=False warns instead
    # (the graph then runs with that reduction as Inductor compiles it: not guaranteed invariant).
    strict: bool = True
    # inductor_launches=True: on CUDA, Inductor's generated code launches the invariant kernels
    # itself (lowerings/); False keeps one custom-op call per kernel (the same bits, slower host).
    inductor_launches: bool = True

    @classmethod
    def parse(cls, options: dict[str, Any] | None) -> "Options":
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"batch_invariant backend: unknown option(s) {unknown}; known options: {sorted(known)}"
            )
        types = get_type_hints(cls)
        for name, value in options.items():
            # exactly the declared type: a 0, "no" or None must not pick a mode by its truthiness
            if type(value) is not types[name]:
                accepted = "True or False" if types[name] is bool else f"a {types[name].__name__}"
                raise TypeError(
                    f"batch_invariant backend: option {name!r} must be {accepted}, got {value!r} ({type(value).__name__})"
                )
        return cls(**options)
