"""benchmarks/hf_models.py on the CPU at its tiniest (hidden 32, one layer, S = 8): both
contenders compile and time a prefill and a decode step, the JSON has every key the GPU runs are
read by, and a second run over another subset merges into the same file."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from tests._support import load_file  # noqa: E402

bench = load_file("benchmarks/hf_models.py", "bench_hf_models")

ROW_KEYS = {"model", "shape", "phase", "batch", "seq", "mode", "stock_ms", "ours_ms", "ratio",
            "stock_compile_s", "ours_compile_s", "stock_recompiles", "ours_recompiles",
            "stock_graphs", "ours_graphs"}  # fmt: skip


@pytest.fixture
def caches(tmp_path, monkeypatch):
    # the benchmark points the compile caches at fresh folders; give the variables back afterwards
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))


def _run(out, *extra):
    argv = ["--device", "cpu", "--models", "llama", "--shapes", "tiny", "--modes", "default", "--batches", "2",
            "--seqs", "8", "--repeats", "1", "--warmup", "0", "--out", str(out), *extra]  # fmt: skip
    return bench.main(argv)


def test_both_contenders_time_prefill_and_decode_and_the_json_has_its_keys(tmp_path, caches):
    _run(tmp_path, "--phases", "prefill,decode")
    doc = json.loads((tmp_path / "hf_models.json").read_text())
    env = doc["environment"]
    assert {"device", "torch", "triton", "transformers", "date"} <= set(env), env
    rows = doc["rows"]
    assert [(r["phase"], r["batch"], r["seq"], r["mode"]) for r in rows] == [("prefill", 2, 8, "default"), ("decode", 2, 8, "default")]
    for r in rows:
        assert ROW_KEYS <= set(r), sorted(ROW_KEYS - set(r))
        assert "error" not in r, r["error"]
        assert r["stock_ms"] > 0 and r["ours_ms"] > 0 and r["ratio"] == pytest.approx(r["stock_ms"] / r["ours_ms"])
        # each phase's first call compiled its graph: a compile time and no recompile
        assert r["stock_graphs"] == r["ours_graphs"] == 1 and r["stock_recompiles"] == r["ours_recompiles"] == 0, r
        assert r["stock_compile_s"] > 0 and r["ours_compile_s"] > 0
    assert rows[1]["cache"] == "dynamic"
    assert {(c["contender"], c["graphs"], c["errors"]) for c in doc["contenders"]} == {("stock", 2, 0), ("ours", 2, 0)}


def test_a_second_subset_merges_into_the_file_and_a_rerun_replaces_its_rows(tmp_path):
    row = dict(model="llama", shape="tiny", phase="prefill", batch=2, seq=8, mode="default", stock_ms=1.0, ours_ms=2.0, ratio=0.5)
    first = dict(environment={"device": "a"}, runs=[{"args": 1}], rows=[row, dict(row, batch=4)], contenders=[])
    second = dict(environment={"device": "b"}, runs=[{"args": 2}], rows=[dict(row, stock_ms=3.0), dict(row, mode="reduce-overhead")])
    merged = bench.merge_docs(first, second)
    keys = [bench.row_key(r) for r in merged["rows"]]
    assert len(keys) == len(set(keys)) == 3
    assert next(r for r in merged["rows"] if bench.row_key(r) == bench.row_key(row))["stock_ms"] == 3.0
    assert merged["environment"] == {"device": "b"} and merged["runs"] == [{"args": 1}, {"args": 2}]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "hf_models.json").write_text(json.dumps(first))
    (tmp_path / "hf_models.json").write_text(json.dumps(second))
    bench.main(["--out", str(tmp_path), "--merge", str(tmp_path / "a")])
    assert len(json.loads((tmp_path / "hf_models.json").read_text())["rows"]) == 3


def test_a_contender_that_raises_is_recorded_and_the_run_goes_on(tmp_path, caches, monkeypatch):
    def ours_breaks(model, contender, mode):
        if contender == "ours":

            def broken(**kwargs):
                raise RuntimeError("Detected 1 tensor(s) in the cudagraph pool not tracked as outputs\nsecond line")

            return broken
        return model.forward  # stock stands in eagerly: this test is about the bookkeeping


    monkeypatch.setattr(bench, "compile_forward", ours_breaks)
    _run(tmp_path, "--phases", "prefill", "--batches", "2,3", "--max-errors", "1")
    rows = json.loads((tmp_path / "hf_models.json").read_text())["rows"]
    assert [r["batch"] for r in rows] == [2, 3]
    assert all(r["stock_ms"] > 0 and r["ours_ms"] is None and r["ratio"] is None for r in rows)
    assert rows[0]["error"] == "ours: RuntimeError: Detected 1 tensor(s) in the cudagraph pool not tracked as outputs"
    assert rows[1]["error"].startswith("ours: skipped after 1 errors; first: RuntimeError: Detected")


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_every_decode_call_of_both_contenders_sees_a_cache_of_s_tokens(tmp_path, cache, monkeypatch):
    seen = {"stock": [], "ours": []}

    def recording(model, contender, mode):  # eager stand-ins: this test is about the cache
        def forward(**kwargs):
            seen[contender].append(int(kwargs["past_key_values"].get_seq_length()))
            return model.forward(**kwargs)

        return forward

    monkeypatch.setattr(bench, "compile_forward", recording)
    _run(tmp_path, "--phases", "decode", "--repeats", "3", "--warmup", "1", "--cache", cache)
    assert seen == {"stock": [8] * 5, "ours": [8] * 5}


def test_train_times_forward_and_backward_from_cleared_gradients(tmp_path, monkeypatch):
    seen = {"stock": [], "ours": []}

    def recording(model, contender, mode):  # eager stand-ins: this test is about the training step
        def forward(**kwargs):
            assert torch.is_grad_enabled() and "labels" in kwargs
            seen[contender].append(all(p.grad is None for p in model.parameters()))
            return model.forward(**kwargs)

        return forward

    monkeypatch.setattr(bench, "compile_forward", recording)
    _run(tmp_path, "--phases", "train", "--repeats", "3", "--warmup", "1")
    assert seen == {"stock": [True] * 5, "ours": [True] * 5}, "every call starts from cleared gradients"
    (row,) = json.loads((tmp_path / "hf_models.json").read_text())["rows"]
    assert row["phase"] == "train" and row["stock_ms"] > 0 and row["ours_ms"] > 0


def test_an_error_that_only_announces_another_is_recorded_with_it():
    err = RuntimeError("backend='batch_invariant' raised:\nBatchInvarianceError: index_add at m.py:3\n\ndetails")
    assert bench.first_line(err) == "RuntimeError: backend='batch_invariant' raised: BatchInvarianceError: index_add at m.py:3"
