"""An observer of the real compile: what each stage of the backend did to each graph.

The backend calls ``observer()`` at each of its stages (backend.py on the Dynamo graph, hooks.py
on each aten graph, ``guard.report`` for the strict guard) and tells it what it is doing; with no
observer installed (every normal compile) these calls do nothing. ``explain`` installs one for the
length of its compile (``observing``) and builds its report from what it is told, so the report
is what the backend's own code did rather than a copy of its flow.

A process-wide slot rather than a contextvar: the autograd engine may compile a lazy backward
graph on one of its own threads, where a contextvar set by the caller would not be seen.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.fx


class Observer:
    """What the backend tells an observer, stage by stage; every method does nothing by default.

    For each graph, in order: ``graph_in`` (the graph as the stage got it, before our passes),
    ``rewritten`` (after them, with their ``Rewrite`` records), ``guarded`` (what the strict guard
    found on it).

    ``config_device``: the device whose pinned configs the rewrites report (None: the traced
    one); ``explain`` traces on the CPU and reports a GPU's."""

    config_device: torch.device | None = None

    def graph_in(self, gm: torch.fx.GraphModule, stage: str) -> None:
        """``stage``: "dynamo" (the attention pre-pass's graph) or "aten" (the post-grad hooks')."""

    def rewritten(self, gm: torch.fx.GraphModule, rewrites: list) -> None:
        """``rewrites``: the passes' ``Rewrite`` records for this graph."""

    def guarded(self, violations: list) -> bool:
        """The guard's ``Violation``s on the current graph (possibly none). True: the observer
        takes them, and the guard neither raises nor warns (``explain`` reports them instead)."""
        return False


_current: Observer | None = None


def observer() -> Observer | None:
    """The observer of the compile under way, if any."""
    return _current


def reported_device(traced: torch.device) -> torch.device:
    """The device whose pinned configs a rewrite records: the observer's ``config_device`` if it
    names one, else the traced device."""
    obs = _current
    return obs.config_device if obs is not None and obs.config_device is not None else traced


@contextlib.contextmanager
def observing(obs: Observer) -> Iterator[Observer]:
    """Install ``obs`` for the compiles run in this block (one at a time)."""
    global _current
    previous, _current = _current, obs
    try:
        yield obs
    finally:
        _current = previous
