"""The committed generated docs (docs/graph-diffs/, docs/benchmarks.md, the README's speed table)
are what ``python tools/gen_docs.py`` produces now: regenerate into a temp dir and compare."""

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


def test_readme_speed_table_is_the_committed_json_rendered():
    # Any torch: the table is rendered from benchmarks/results/hf_models.json alone.
    readme = (REPO / gen.README).read_text()
    assert readme == gen.readme_with_hf_models(), f"README's speed table is not {gen.HF_MODELS}: run `{gen.COMMAND}`"


def _env(device: str) -> dict:
    return dict(device=device, torch="2.0", triton="3.0", transformers="5.0", python="3.12", dtype="bfloat16",
                date="2026-01-02T03:04:05+00:00")  # fmt: skip


def _row(device: str, batch: int, ours_ms: float | None, error: str | None = None) -> dict:
    ours = ours_ms is not None
    row = dict(model="llama", shape="small", phase="decode", batch=batch, seq=64, mode="default", stock_ms=1.0,
               ours_ms=ours_ms, ratio=1.0 / ours_ms if ours else None, cache="dynamic", device=device,
               stock_compile_s=10.0, ours_compile_s=20.0 if ours else None, stock_graphs=1, stock_recompiles=0,
               ours_graphs=1 if ours else None, ours_recompiles=0 if ours else None)  # fmt: skip
    return row | ({"error": error} if error else {})


def test_speed_table_shows_every_row_under_its_device_with_each_failed_sides_error():
    doc = dict(
        environment=_env("GPU B"),
        runs=[dict(environment=_env("GPU A"), args=dict(repeats=7, warmup=2)),
              dict(environment=_env("GPU B"), args=dict(repeats=9, warmup=1))],  # fmt: skip
        rows=[_row("GPU B", 8, None, "ours: RuntimeError: boom {123, 456, 789, 101112, 131415}"),
              _row("GPU A", 4, 1.25), _row("GPU B", 16, None, "ours: RuntimeError: boom {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}"),
              _row("GPU A", 1, 1.0)],  # fmt: skip
    )
    block = gen.hf_models_block(doc)
    assert block.startswith(gen.HF_BEGIN) and block.endswith(gen.HF_END)
    b, a = block.split("Environment: ")[1:]  # in the order the rows name the devices
    assert a.startswith("GPU A") and b.startswith("GPU B")
    assert "median of 7 calls after the first (the compile) and 2 warm-up calls" in a
    assert "median of 9 calls after the first (the compile) and 1 warm-up calls" in b
    table_a = [line for line in a.splitlines() if line.startswith("| llama")]
    assert [line.split(" | ")[3] for line in table_a] == ["1", "4"]  # batch order, not the JSON's
    assert "| 1.000 | 1.00x | 10.0 / 20.0 (2.00x) | 1 (0) / 1 (0) |" in table_a[0]
    assert "| 1.250 | 0.80x |" in table_a[1]
    assert "Speed target met on 1 of 2 rows timed on both sides; compile-time target on 0 of 2." in a
    table_b = [line for line in b.splitlines() if line.startswith("| llama")]
    assert len(table_b) == 2 and all("| - | - | 10.0 / - |" in line for line in table_b)
    assert table_b[0].endswith("| ours: RuntimeError: boom {...} |")
    assert table_b[1].endswith("| ours: the same error as above |")
    assert "met on 0 of 0 rows timed on both sides (2 of 2 rows: a side failed, see error)" in b


def test_a_reduce_overhead_row_that_ran_without_cuda_graphs_says_so():
    row = _row("GPU A", 1, 1.0) | dict(mode="reduce-overhead", ours_cudagraph_skips=1, stock_cudagraph_skips=0)
    block = gen.hf_models_block(dict(environment=_env("GPU A"), rows=[row, _row("GPU A", 2, 1.0)]))
    lines = [line for line in block.splitlines() if line.startswith("| llama")]
    assert lines[0].endswith("| ours: 1 graph(s) ran without CUDA graphs |")
    assert lines[1].endswith("|  |")
