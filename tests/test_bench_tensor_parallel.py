"""benchmarks/tensor_parallel.py on the CPU (gloo, the tiny preset): it runs both contenders at a
degree, times each call and finds the sums across ranks in the profile (a smoke test: the GPU
carries the measurement)."""

from __future__ import annotations

import json

from benchmarks import tensor_parallel


def test_both_contenders_run_at_degree_two_and_their_sums_across_ranks_are_profiled(tmp_path):
    doc = tensor_parallel.main(["--device", "cpu", "--degree", "2", "--phases", "prefill", "--batches", "2", "--seq", "4",
                                "--repeats", "1", "--warmup", "0", "--out", str(tmp_path)])  # fmt: skip
    rows = json.loads((tmp_path / "tensor_parallel.json").read_text())["rows"]
    assert rows == doc["rows"] and {r["contender"] for r in rows} == {"stock", "ours"}
    for r in rows:
        assert r["degree"] == 2 and r["phase"] == "prefill" and r["ms"] > 0 and r["tokens_per_s"] > 0
        assert 0 < r["comm_share"] < 1, r  # the all-reduces (stock) / fixed-order sums (ours) were found
    assert doc["environment"]["world"] == 2
