#!/usr/bin/env bash
# Creates .venv and installs autoswarm with its test extras.
# torch: on a machine without an NVIDIA GPU we install the CPU build (2.13.0, which this
# kind of machine keeps as a local wheel); with a GPU, pip's default PyPI wheel is a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if .venv/bin/python -c "import torch" 2>/dev/null; then
    :
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q "torch>=2.4"
else
    .venv/bin/python -m pip install -q "torch==2.13.0" \
        || .venv/bin/python -m pip install -q "torch>=2.4"
fi
.venv/bin/python -m pip install -q -e ".[test]"
# bubblewrap sandboxes candidate train.py files; install it where we may (root on Debian).
if ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq bubblewrap sqlite3) >/dev/null 2>&1 \
        || echo "setup: could not install bubblewrap; candidate code will not run sandboxed" >&2
fi
