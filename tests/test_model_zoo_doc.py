"""docs/models.md is the rendering of the committed zoo results (docs/models.json, and
docs/models-gpu.json when present), those results cover exactly the zoo's models, and the zoo
covers what issue 24 asks for. Cheap: nothing is compiled (the zoo run itself is
``python tools/gen_models_doc.py --run``)."""

from __future__ import annotations

import json

from tests import _zoo
from tests._support import ROOT, load_file

gen = load_file("tools/gen_models_doc.py", "inductor_bi_gen_models_doc")


def test_models_doc_is_the_rendering_of_the_committed_results():
    committed = (ROOT / gen.DOC).read_text()
    assert committed == gen.render_committed(), f"{gen.DOC} is stale: run `{gen.COMMAND}` and commit the result"


def test_committed_results_list_exactly_the_zoo():
    zoo = [(m.name, m.family, m.notes) for m in _zoo.ZOO]
    cpu = json.loads((ROOT / gen.CPU_JSON).read_text())
    assert [(r["name"], r["family"], r["notes"]) for r in cpu["models"]] == zoo, (
        f"{gen.CPU_JSON} is not a run of the zoo as it is now: run `{gen.COMMAND} --run`"
    )
    gpu_path = ROOT / gen.GPU_JSON
    if gpu_path.is_file():
        names = {m.name for m in _zoo.ZOO}
        gpu = json.loads(gpu_path.read_text())
        assert {r["name"] for r in gpu["models"]} <= names, f"{gen.GPU_JSON} has models the zoo no longer has"


def test_results_render_every_status_and_reason():
    """The renderer shows each status, and each refusal / failure verbatim."""
    record = dict(rewritten={"invariant_matmul": 3}, graphs=2, checks=[], seconds=1.0)
    cpu = dict(device="cpu", dtype="float32", versions=dict(torch="t", triton="tr", transformers="tf"), models=[
        dict(record, name="a", family="f", status="invariant", reason="", notes="a note"),
        dict(record, name="b", family="f", status="refused", reason="1 op(s) ... aten.cumsum.default"),
        dict(record, name="c", family="f", status="failed", reason="RuntimeError: boom"),
    ])  # fmt: skip
    text = gen.render(cpu)
    assert "| a | f | invariant | not run | 3 x `invariant_matmul` | 2 |" in text
    assert "| b | f | **refused** |" in text and "aten.cumsum.default" in text
    assert "| c | f | **fails** |" in text and "RuntimeError: boom" in text
    assert "1 of 3 architectures invariant" in text
    assert "- **a**: a note." in text
    gpu = dict(cpu, device="gpu", dtype="bfloat16", models=cpu["models"][:1], blocks={
        "a": {"bfloat16": dict(examples=7, failures=[]), "float32": dict(examples=5, failures=[{"batch": 3}])},
        "b": {"bfloat16": dict(examples=0, failures=[], refused="aten.x")},
    })  # fmt: skip
    text = gen.render(cpu, gpu)
    assert "| a | f | invariant | invariant |" in text and "| b | f | **refused** | not run |" in text
    assert "12 examples over 3 (model, dtype) pairs, 1 invariance failure(s); refused or failed to compile: b bfloat16." in text


FAMILIES = ["rotary", "partial rotary", "ALiBi", "learned positions", "sliding window", "soft-capping",
            "multi-query", "GQA", "MoE", "encoder", "encoder-decoder", "vision", "speech"]  # fmt: skip


def test_zoo_covers_the_architectures_issue_24_asks_for():
    assert len(_zoo.ZOO) >= 20
    assert len(_zoo.BY_NAME) == len(_zoo.ZOO), "zoo names must be unique"
    for family in FAMILIES:
        assert any(family in m.family for m in _zoo.ZOO), f"no zoo model is {family!r}"
    assert _zoo.CI_MODELS <= set(_zoo.BY_NAME)


def test_every_zoo_model_is_tested_on_the_cpu():
    """The two CPU files' kinds together are every kind of model in the zoo."""
    decoders = load_file("tests/test_model_zoo_decoders.py", "zoo_decoders_file")
    others = load_file("tests/test_model_zoo_others.py", "zoo_others_file")
    assert {m.kind for m in _zoo.ZOO} <= decoders.KINDS | others.KINDS
