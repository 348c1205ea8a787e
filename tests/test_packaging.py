"""The package as pip installs it (pyproject.toml), and scripts/setup.sh's handling of pip.

setup.sh is run for real against a stand-in venv whose ``python`` records its calls and answers as
pip and the interpreter would: an install takes minutes and a network, the script's decisions
(stop on a pip failure, keep the torch pin on every install, check the installed versions) do not.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys

import pytest

from tests._support import ROOT

tomllib = pytest.importorskip("tomllib")


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group()).lower()


def _imports_on_load(path) -> set[str]:
    """Top-level names of the modules ``path`` imports when it is imported (not those imported
    inside functions, nor optional ones under ``except ImportError``)."""
    names: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Try):
                optional = any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError") for h in node.handlers
                )
                if not optional:
                    visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, (ast.If, ast.With, ast.ClassDef)):
                visit(node.body)
                visit(getattr(node, "orelse", []))

    visit(ast.parse(path.read_text()).body)
    return names


def test_every_module_the_package_imports_on_load_is_a_declared_dependency():
    """``pip install .`` brings only ``[project] dependencies``: a module imported when the
    package loads but listed only in an extra (numpy was, for the test tools) makes the first
    compile crash with ModuleNotFoundError."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for path in sorted((ROOT / "inductor_bi").rglob("*.py")):
        for module in _imports_on_load(path) - set(sys.stdlib_module_names) - {"inductor_bi", "__future__"}:
            dists = {_name(d) for d in distributions.get(module, [module])}
            if not dists & declared:
                undeclared.setdefault(module, []).append(str(path.relative_to(ROOT)))
    assert not undeclared, f"imported on load but not in pyproject.toml's dependencies: {undeclared}"


def test_numpy_is_declared_with_the_cap_the_interpreter_needs():
    """Triton's interpreter (the CPU path) cannot run on numpy 2.4; pip must not pick it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    numpy = [r for r in project["dependencies"] if _name(r) == "numpy"]
    assert numpy and re.search(r"<\s*2\.4\b", numpy[0]), project["dependencies"]


FAKE_PYTHON = r"""#!/usr/bin/env bash
# A venv's python as setup.sh uses it: records each call (and the warning filter it ran under).
printf '%s\n' "$* |PYTHONWARNINGS=${PYTHONWARNINGS:-}" >> "$FAKE_LOG"
if [ "$1" = -c ]; then
  case "$2" in
    *version_info*) echo 3.12 ;;
    *) echo "$FAKE_VERSIONS" ;;
  esac
  exit 0
fi
if [ "$1 $2" = "-m pip" ] && [ -n "${FAKE_PIP_FAILS:-}" ] && [[ "$*" == *torch==* ]]; then
  echo "ERROR: Cannot install torch==2.13.0 and triton==3.6.0 because these package versions have conflicting dependencies."
  echo "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/"
  exit 1
fi
exit 0
"""


def run_setup(tmp_path, **env):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    environ = {k: v for k, v in os.environ.items() if k not in ("TORCH_VERSION", "TRITON_VERSION", "TORCH_INDEX", "PYTHONWARNINGS")}
    environ.update({"VENV": str(venv), "FAKE_LOG": str(log), "FAKE_VERSIONS": "2.13.0+cpu 3.6.0", **env})
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env=environ, capture_output=True, text=True, timeout=60)
    installs = [line for line in log.read_text().splitlines() if line.startswith("-m pip install")]
    return done, installs


def test_setup_stops_and_says_what_to_do_when_the_torch_pin_cannot_be_installed(tmp_path):
    done, installs = run_setup(tmp_path, FAKE_PIP_FAILS="1")
    assert done.returncode != 0
    assert "ResolutionImpossible" in done.stderr  # pip's own words are shown
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in done.stderr and "PYTHON=python3.11" in done.stderr
    assert len(installs) == 1, installs  # nothing more is installed after the failure (no unpinned torch)


def test_setup_keeps_the_torch_pin_on_every_install(tmp_path):
    done, installs = run_setup(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "torch 2.13.0+cpu triton 3.6.0" in done.stdout
    assert len(installs) == 2 and any("-e .[test]" in line for line in installs), installs
    for line in installs:
        assert "torch==2.13.0" in line and "triton==3.6.0" in line, line


def test_setup_fails_when_the_venv_holds_another_torch(tmp_path):
    done, _ = run_setup(tmp_path, FAKE_VERSIONS="2.14.1+cu130 3.8.0")
    assert done.returncode != 0
    assert "torch 2.14.1+cu130" in done.stderr and "not the pinned torch==2.13.0" in done.stderr


def test_setup_silences_only_setuptools_editable_install_note(tmp_path):
    """The filter setup.sh runs the editable install under drops setuptools' note on editable
    installs (10 lines on every setup) and nothing else setuptools says."""
    pytest.importorskip("setuptools")
    done, installs = run_setup(tmp_path)
    editable = [line for line in installs if "-e .[test]" in line]
    filters = editable[0].rsplit("|PYTHONWARNINGS=", 1)[1]
    assert filters, "the editable install runs without a warning filter"
    emit = (
        "from setuptools.warnings import InformationOnly, SetuptoolsWarning\n"
        "InformationOnly.emit('Editable installation.', 'Please be careful with folders ...')\n"
        "SetuptoolsWarning.emit('Some other problem.', 'details')\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": filters}
    shown = subprocess.run([sys.executable, "-c", emit], env=env, capture_output=True, text=True, timeout=60).stderr
    assert "Editable installation" not in shown
    assert "Some other problem" in shown
    unfiltered = subprocess.run([sys.executable, "-c", emit], env={**env, "PYTHONWARNINGS": ""}, capture_output=True, text=True, timeout=60)
    assert "Editable installation" in unfiltered.stderr  # the check can fail: unfiltered, it shows
