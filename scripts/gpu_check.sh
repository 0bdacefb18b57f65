#!/usr/bin/env bash
# The trainer on a GPU machine in one command (issue 15): nvidia-smi, then tokens/s, MFU by our
# formula and the anchor's, compile time cold and warm, eval time, overhead per experiment, and
# sandboxed vs unsandboxed speed, as JSON lines on stdout and in the file given (default
# gpu_check.jsonl). Runs from the source tree with the machine's own python3 (PYTHONPATH=.), no
# internet, no installs: data is synthetic. Without a GPU it runs the CPU fallback (tiny sizes).
#
#     bash scripts/gpu_check.sh [OUT.jsonl] [--budget-s S]       (exit 0: every run ok)
#
# Bounded: the whole check is killed at CHECK_TIMEOUT_S (8 minutes) — at 60 s of training a run
# on an H100, three runs take about 6.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-gpu_check.jsonl}
shift || true
CHECK_TIMEOUT_S=${CHECK_TIMEOUT_S:-480}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
: > "$OUT"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1 \
        && "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    nvidia-smi
    PROFILE=gpu
else
    echo "gpu_check: no usable GPU here; running the CPU fallback (tiny sizes)" >&2
    PROFILE=cpu
fi
exec timeout --kill-after=10 "$CHECK_TIMEOUT_S" "$PY" scripts/bench_trainer.py --check --profile "$PROFILE" \
    --out "$OUT" "$@"
