#!/usr/bin/env bash
# Set up (if needed) and run the test suite on the CPU (kernels through Triton's interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -W ignore::DeprecationWarning "$@"
