#!/usr/bin/env bash
# Creates .venv and installs autoswarm with its test extras, and bubblewrap, the sandbox for candidate code.
# torch: on a machine without an NVIDIA GPU we install the CPU build (2.13.0, which this
# kind of machine keeps as a local wheel); with a GPU, pip's default PyPI wheel is a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

. scripts/apt.sh

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

# bubblewrap sandboxes candidate train.py files: without it the node cannot do research, so a
# failure here is an error, not a warning (AUTOSWARM_NO_SANDBOX=1 is the explicit opt-out).
if ! command -v bwrap >/dev/null 2>&1 && can_apt; then
    apt_install bubblewrap sqlite3 || true
fi
if ! command -v bwrap >/dev/null 2>&1 && [ "${AUTOSWARM_NO_SANDBOX:-0}" != 1 ]; then
    cat >&2 <<'MSG'
setup: bubblewrap (bwrap) is not installed, and candidate train.py files run only inside it.
       Install it (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install bubblewrap),
       then run this again; or, on a machine that runs only your own code, set AUTOSWARM_NO_SANDBOX=1.
MSG
    exit 1
fi
