"""The model zoo's decoder-only language models (tests/_zoo.py), on the CPU through the interpreter.

Each architecture, built from a tiny config with random init, compiles under strict mode
(``backend="batch_invariant", dynamic=True, fullgraph=True``) or is refused with a clear reason;
on that one compile: a row alone equals (``torch.equal``) the same row at a random position in
batches of 5 and 2, the logits are close to a float64 eager run, and a decode step against the KV
cache equals the full forward at that position. tools/gen_models_doc.py runs the same harness to
write docs/models.md.
"""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from tests._zoo import BY_NAME, ZOO_CPU, check_result, run_zoo_model, zoo_params  # noqa: E402

KINDS = {"causal"}


@pytest.mark.parametrize("name", zoo_params(KINDS))
def test_decoder_row_is_invariant_and_decode_equals_full_forward(name):
    check_result(run_zoo_model(BY_NAME[name], ZOO_CPU))
