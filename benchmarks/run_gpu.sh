#!/usr/bin/env bash
# One device call: GPU tests, then benchmarks, everything written under $1 (default benchmarks/results).
# Usage: bash benchmarks/run_gpu.sh OUT_DIR [pytest selection...]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}; shift || true
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-gpu}
{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} > "$out/gpu_env.txt"
cat "$out/gpu_env.txt"
python3 -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning "${@:-tests/gpu}" 2>&1 | tee "$out/gpu_tests.txt" | tail -30
