"""tools/diagnose/diagnose_length.py, the tool that localised the padded-vs-unpadded defect: it must
name the first op whose output differs on the common prefix, and pass a model that is invariant."""

from __future__ import annotations

import sys

import torch

from tests._support import load_file

diagnose = load_file("tools/diagnose/diagnose_length.py", "diagnose_length")


def test_first_difference_names_the_op_and_the_position():
    padded_a = torch.randn(1, 4, 16, 8)
    padded_b = torch.randn(1, 4, 16, 8)
    unpadded_a = padded_a[:, :, :7].clone()
    unpadded_b = padded_b[:, :, :7].clone()
    unpadded_b[0, 1, 3, 2] += 1e-3  # the second op differs at position 3
    padded = {"a": ("aten.mm", padded_a), "b": ("inductor_bi.fixed_split_attention", padded_b)}
    unpadded = {"a": ("aten.mm", unpadded_a), "b": ("inductor_bi.fixed_split_attention", unpadded_b)}
    found = diagnose.first_difference(padded, unpadded, pad=16, length=7)
    assert found.startswith("b (inductor_bi.fixed_split_attention)") and "positions [3]" in found
    unpadded["b"] = ("inductor_bi.fixed_split_attention", padded_b[:, :, :7].clone())
    assert diagnose.first_difference(padded, unpadded, pad=16, length=7) == "no differing node"


def test_tiny_qwen3_padded_equals_unpadded_without_inductor(capsys, monkeypatch):
    monkeypatch.setattr(
        sys, "argv",
        ["diagnose_length.py", "--device", "cpu", "--tiny", "--length", "7", "--pads", "16,9", "--modes", "fx-eager"],
    )
    diagnose.main()
    lines = [line for line in capsys.readouterr().out.splitlines() if "pad" in line]
    assert len(lines) == 2 and all(line.endswith("EQUAL") for line in lines), lines
