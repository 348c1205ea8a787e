"""The committed generated docs (docs/graph-diffs/, docs/benchmarks.md) are what
``python tools/gen_docs.py`` produces now: regenerate into a temp dir and compare."""

import re

import pytest
import torch
import triton

from tests._support import ROOT as REPO
from tests._support import load_file

gen = load_file("tools/gen_docs.py", "inductor_bi_gen_docs")


def _recorded_versions() -> tuple[str, str] | None:
    index = REPO / gen.GRAPH_DIFFS / "README.md"
    m = re.search(r"with torch (\S+) and triton (\S+?);", index.read_text()) if index.is_file() else None
    return (m[1], m[2]) if m else None


def test_generated_docs_are_fresh(tmp_path):
    recorded = _recorded_versions()
    if recorded and recorded != (torch.__version__, triton.__version__):
        # Graph code and Inductor's decompositions follow the torch version: only the pinned
        # versions the docs were generated with can reproduce them.
        pytest.skip(f"docs generated with torch/triton {recorded}, this is {(torch.__version__, triton.__version__)}")
    gen.write(gen.generate(), root=tmp_path)
    fresh, committed = gen.committed(tmp_path), gen.committed(REPO)
    stale = sorted(p for p in set(fresh) | set(committed) if fresh.get(p) != committed.get(p))
    assert not stale, f"stale generated docs {stale}: run `{gen.COMMAND}` and commit the result"
