#!/usr/bin/env bash
# Set up (if needed) and run the test suite on the CPU (kernels through Triton's interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two workers, a test file each at a time (module fixtures compile once): the tests are
# single-threaded Python (the interpreter, Dynamo), so 2 CPUs run the suite in ~10 min, not ~15.
exec .venv/bin/python -m pytest -q -W ignore::DeprecationWarning -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
