"""The speed knobs of every kernel table, in one registry: they choose how fast, never whether a
row is invariant, and ``explain`` reports their values. Each knob lives in its family's table
(matmul_table, attention_table, reduction_table); ``overridden`` sets it there for a block
(tuning sweeps, A/B runs, tests)."""

from __future__ import annotations

import contextlib
from types import ModuleType

from . import _device, attention_table, matmul_table, reduction_table

# Every module holding pinned constants: their values take part in the compile cache's identity
# (cache_identity.py), since passes read some of them when rewriting.
TABLES: tuple[ModuleType, ...] = (_device, matmul_table, attention_table, reduction_table)

SPEED_KNOBS: dict[str, str] = {name: what for table in TABLES for name, what in getattr(table, "SPEED_KNOBS", {}).items()}


def owner(name: str) -> ModuleType:
    """The table that defines the constant ``name``."""
    for table in TABLES:
        if name.isupper() and hasattr(table, name):
            return table
    raise AttributeError(f"no kernel table defines {name}")


def speed_knobs() -> list[tuple[str, object, str]]:
    """(name, current value, what it chooses) of every speed knob."""
    return [(name, getattr(owner(name), name), what) for name, what in SPEED_KNOBS.items()]


@contextlib.contextmanager
def overridden(**values):
    """These constants set to other values inside the block, on the table that owns each, then
    put back: ``with knobs.overridden(ATTENTION_SPLIT_STAGES=None): ...``."""
    owners = {name: owner(name) for name in values}  # an unknown name raises before any is set
    saved = {name: getattr(table, name) for name, table in owners.items()}
    for name, value in values.items():
        setattr(owners[name], name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(owners[name], name, value)
