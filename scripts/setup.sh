#!/usr/bin/env bash
# Create a venv with everything the demo and the tests need (CPU machine).
# torch is pinned: an unpinned torch would pull a multi-GB CUDA build.
#   VENV           the venv's folder (default .venv)
#   TORCH_VERSION  default 2.13.0 (a CPU build, with triton 3.6.0); another supported version
#                  brings the triton its wheel pins (2.14.1 on x86_64: a CUDA build of ~5.5 GB,
#                  triton 3.8.0, which runs on the CPU too)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
pins=("torch==$TORCH_VERSION" "numpy<2.4")
[ "$TORCH_VERSION" = 2.13.0 ] && pins+=("triton==3.6.0")
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q "${pins[@]}" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import torch, triton, inductor_bi; print('torch', torch.__version__, 'triton', triton.__version__)"
