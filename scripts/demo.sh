#!/usr/bin/env bash
# Set up (if needed) and run the demos on the CPU (a few minutes):
#  1. one row inside batches of different sizes: stock torch.compile vs the backend;
#  2. an LLM served with dynamic batching: unique completions, differing logits, sampler == trainer.
# VENV / TORCH_VERSION / PYTHON as for scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY="${VENV:-.venv}/bin/python"
"$PY" examples/demo.py
exec "$PY" examples/llm.py --device cpu "$@"
