"""The model zoo (tests/_zoo.py) on CUDA: every architecture in bf16 at a larger size, and a
Hypothesis test over the zoo's blocks (one-layer models of each architecture).

``test_zoo_model_bf16``: the CPU zoo tests' properties (strict compile or a clear refusal, a row
alone == the row at a random position in batches of 5 and 2, close to float64 eager, decode ==
full forward where there is a KV cache) at ``ZOO_GPU`` sizes in bf16.

``test_zoo_block_rows_are_invariant``: per (architecture, dtype), one compile (``dynamic=True``;
batch 1 compiles its own graph), then Hypothesis draws a batch size 1..64, a sequence length, the
row's position and the data; the row alone must equal the row in the batch. Knobs (environment):

* ``INDUCTOR_BI_ZOO_EXAMPLES``: examples in all, split evenly over the (model, dtype) pairs
  (default: the Hypothesis profile's count per pair);
* ``INDUCTOR_BI_ZOO_MODELS`` / ``INDUCTOR_BI_ZOO_DTYPES``: comma-separated subsets (default: the
  whole zoo; bfloat16, float16, float32);
* ``INDUCTOR_BI_ZOO_GPU_JSON``: a JSON path both tests write their results to (models, statuses,
  example counts, failures), the file tools/gen_models_doc.py reads as docs/models-gpu.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from pathlib import Path

import pytest
import torch
import triton

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

transformers = pytest.importorskip("transformers")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from inductor_bi.testing import assert_rows_equal  # noqa: E402
from tests._zoo import (  # noqa: E402
    BY_NAME,
    ZOO,
    ZOO_GPU,
    ZooResult,
    batch_invariance_error,
    build,
    check_result,
    relative_paths,
    run_zoo_model,
    select_row,
)

RESULTS_ENV = "INDUCTOR_BI_ZOO_GPU_JSON"
MODELS = [n for n in os.environ.get("INDUCTOR_BI_ZOO_MODELS", "").split(",") if n] or [m.name for m in ZOO]
DTYPES = [d for d in os.environ.get("INDUCTOR_BI_ZOO_DTYPES", "").split(",") if d] or ["bfloat16", "float16", "float32"]
BLOCK_SIZE = dataclasses.replace(ZOO_GPU, layers=1)
MAX_BATCH = 64


def _examples_per_pair() -> int:
    total = int(os.environ.get("INDUCTOR_BI_ZOO_EXAMPLES", "0"))
    return math.ceil(total / (len(MODELS) * len(DTYPES))) if total > 0 else settings().max_examples


def _update_results(update) -> None:
    """Read-modify-write the results JSON (tests run one at a time in one process)."""
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    p = Path(path)
    doc = json.loads(p.read_text()) if p.is_file() else {}
    doc.update(
        device=torch.cuda.get_device_name(),
        dtype="bfloat16",
        size=ZOO_GPU.__dict__,
        versions={"python": platform.python_version(), "torch": torch.__version__,
                  "triton": triton.__version__, "transformers": transformers.__version__},  # fmt: skip
    )
    doc.setdefault("models", [])
    doc.setdefault("blocks", {})
    update(doc)
    order = {m.name: i for i, m in enumerate(ZOO)}
    doc["models"].sort(key=lambda r: order.get(r["name"], len(order)))
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=1) + "\n")


@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_bf16(name):
    result = run_zoo_model(BY_NAME[name], ZOO_GPU, dtype=torch.bfloat16, device="cuda", tol_scale=4)

    def update(doc):
        doc["models"] = [r for r in doc["models"] if r["name"] != name] + [result.to_json()]

    _update_results(update)
    check_result(result)


def _varied(seq: int):
    """The block size with this many tokens (decoder tokens; audio samples scale with it)."""
    return dataclasses.replace(BLOCK_SIZE, seq=seq, audio=seq * (BLOCK_SIZE.audio // BLOCK_SIZE.seq))


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("name", MODELS)
def test_zoo_block_rows_are_invariant(name, dtype_name):
    entry, dtype = BY_NAME[name], getattr(torch, dtype_name)
    torch._dynamo.reset()
    model = build(entry, BLOCK_SIZE, dtype, "cuda")
    compiled = torch.compile(model, backend="batch_invariant", dynamic=True, fullgraph=True)
    extra = {"use_cache": False} if entry.kv_cache else {}  # one forward per call: no KV cache
    stats = {"examples": 0, "failures": []}

    @settings(max_examples=_examples_per_pair(), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(batch=st.integers(1, MAX_BATCH), seq=st.integers(2, BLOCK_SIZE.seq), seed=st.integers(0, 2**31 - 1),
           data=st.data())  # fmt: skip
    def check(batch, seq, seed, data):
        position = data.draw(st.integers(0, batch - 1), label="position")
        g = torch.Generator().manual_seed(seed)
        inputs = {k: v.cuda() for k, v in entry.make_inputs(_varied(seq), batch, g, dtype).items()}
        with torch.no_grad():
            in_batch = entry.pick(compiled(**inputs, **extra))[position : position + 1]
            alone = entry.pick(compiled(**select_row(inputs, position), **extra))
        stats["examples"] += 1
        if not torch.equal(in_batch, alone):
            stats["failures"].append(dict(batch=batch, seq=seq, seed=seed, position=position))
        assert_rows_equal(in_batch, alone, f"{name} {dtype_name}: row {position} of {batch} (seq {seq}) vs alone")

    def warm_up():  # both graphs (batch 1 and the dynamic batch) compile here, once
        g = torch.Generator().manual_seed(0)
        inputs = {k: v.cuda() for k, v in entry.make_inputs(BLOCK_SIZE, 2, g, dtype).items()}
        with torch.no_grad():
            compiled(**inputs, **extra), compiled(**select_row(inputs, 0), **extra)

    start = time.perf_counter()
    verdict = ZooResult(name, entry.family, "invariant")
    # Compile caches on (tests/conftest.py turns them off to record rewrites; nothing is recorded
    # here): Inductor kernels that several pairs share compile once. A cached graph is a rewritten
    # one: the rewrite's identity is in the cache key (inductor_bi/cache_identity.py).
    with torch.compiler.config.patch(force_disable_caches=False):
        try:
            warm_up()
        except Exception as err:  # refused or crashed: no example can run
            refusal = batch_invariance_error(err)
            status = "refused" if refusal else "failed"
            verdict = ZooResult(name, entry.family, status, relative_paths(str(refusal or err)))
            stats["refused" if refusal else "error"] = verdict.reason
        stats["compile_seconds"] = round(time.perf_counter() - start, 1)
        try:
            if verdict.status == "invariant":
                check()
        finally:
            stats["seconds"] = round(time.perf_counter() - start, 1)
            _update_results(lambda doc: doc["blocks"].setdefault(name, {}).__setitem__(dtype_name, stats))
            torch._dynamo.reset()
    check_result(verdict)  # a refusal must be clear, and is a failure
