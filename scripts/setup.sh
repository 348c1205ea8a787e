#!/usr/bin/env bash
# Create a venv with everything the demo and the tests need (CPU machine), then check it.
# torch is pinned, and the pin is checked after the install: without it pip would take the newest
# torch, on Linux a CUDA build of several GB. Any pip failure stops the script, with pip's output.
#   PYTHON         the interpreter that makes the venv (default python3; Python 3.10 to 3.14)
#   VENV           the venv's folder (default .venv)
#   TORCH_VERSION  default 2.13.0, its CPU build, with triton 3.6.0. Another supported version
#                  brings the triton its wheel pins (2.14.1 on x86_64: a CUDA build of ~5.5 GB,
#                  triton 3.8.0, which runs on the CPU too)
#   TRITON_VERSION default 3.6.0 with torch 2.13.0 (a CPU build of torch pins no triton), else
#                  none: the one torch's wheel pins
#   TORCH_INDEX    an index to take torch from besides PyPI, e.g. PyTorch's CPU wheels
#                  (https://download.pytorch.org/whl/cpu): PyPI's Linux torch wheels are CUDA builds
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
if [ "$TORCH_VERSION" = 2.13.0 ]; then TRITON_VERSION=${TRITON_VERSION-3.6.0}; else TRITON_VERSION=${TRITON_VERSION:-}; fi
TORCH_INDEX=${TORCH_INDEX:-}

say() { echo "setup: $*" >&2; }

pins=("torch==$TORCH_VERSION")
[ -n "$TRITON_VERSION" ] && pins+=("triton==$TRITON_VERSION")
index=()
[ -n "$TORCH_INDEX" ] && index=(--extra-index-url "$TORCH_INDEX")

# pip without its progress bars; what it prints otherwise (warnings, errors) is shown, less the
# lines about pip.conf's local indexes that do not apply here.
pip_install() {
  local log status=0
  log=$(mktemp)
  "$VENV/bin/python" -m pip install -q "$@" >"$log" 2>&1 || status=$?
  grep -v "^WARNING: Location '.*' is ignored" "$log" >&2 || true
  rm -f "$log"
  return "$status"
}

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PY ($("$PY" --version 2>&1))"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || say "could not upgrade pip; going on with $("$VENV/bin/python" -m pip --version)"
fi
pyver=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

say "installing ${pins[*]} into $VENV (Python $pyver)"
if ! pip_install ${index[@]+"${index[@]}"} "${pins[@]}"; then
  say "ERROR: pip could not install ${pins[*]} for Python $pyver (its output is above)."
  if [ "$TORCH_VERSION" = 2.13.0 ] && [ -n "$TRITON_VERSION" ]; then
    say "  torch 2.13.0's CPU build takes triton $TRITON_VERSION; PyPI's Linux torch wheels are CUDA builds, and"
    say "  2.13.0's pins triton 3.7.1 (and brings several GB of CUDA libraries). Either"
    say "    TORCH_INDEX=https://download.pytorch.org/whl/cpu bash $0   (PyTorch's CPU wheels, Python 3.10-3.14)"
    say "    PYTHON=python3.11 bash $0   (where pip's find-links hold torch 2.13.0's CPU wheel for Python 3.11)"
    say "    TORCH_VERSION=2.14.1 bash $0   (a CUDA build of ~5.5 GB, which runs on the CPU too)"
  fi
  exit 1
fi
say "installing inductor_bi (editable) and its test tools"
# setuptools' note on every editable install of a flat layout ("folders with the same name as
# your package may take precedence"): this venv is for working in this folder. Only that note.
if ! PYTHONWARNINGS="ignore:Editable installation" pip_install ${index[@]+"${index[@]}"} -e ".[test]" "${pins[@]}"; then
  say "ERROR: pip could not install inductor_bi and its test tools (its output is above)."
  exit 1
fi

# The pin must hold whatever else pip resolved.
versions=$("$VENV/bin/python" -c 'import torch, triton, inductor_bi; print(torch.__version__, triton.__version__)') || {
  say "ERROR: torch, triton or inductor_bi does not import in $VENV (the error is above)."
  exit 1
}
read -r torch_version triton_version <<<"$versions"
if [ "${torch_version%%+*}" != "$TORCH_VERSION" ] || { [ -n "$TRITON_VERSION" ] && [ "$triton_version" != "$TRITON_VERSION" ]; }; then
  say "ERROR: $VENV has torch $torch_version and triton $triton_version, not the pinned ${pins[*]}."
  say "  Remove $VENV and run this script again, or set TORCH_VERSION to the torch you want."
  exit 1
fi
echo "torch $torch_version triton $triton_version (Python $pyver, $VENV)"
