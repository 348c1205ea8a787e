#!/usr/bin/env bash
# Set up (if needed) and run the demos on the CPU (a few minutes):
#  1. one row inside batches of different sizes: stock torch.compile vs the backend;
#  2. an LLM served with dynamic batching: unique completions, differing logits, sampler == trainer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python examples/demo.py
exec .venv/bin/python examples/llm.py --device cpu "$@"
