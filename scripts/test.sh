#!/usr/bin/env bash
# Set up (if needed) and run the test suite on the CPU (kernels through Triton's interpreter).
# VENV / TORCH_VERSION pick another venv and torch (scripts/setup.sh), e.g.
#   VENV=.venv-2.14 TORCH_VERSION=2.14.1 bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two workers, a test file each at a time (module fixtures compile once): the tests are
# single-threaded Python (the interpreter, Dynamo), so 2 CPUs run the suite in ~10 min, not ~15.
exec "${VENV:-.venv}/bin/python" -m pytest -q -W ignore::DeprecationWarning -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
