#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the test suite; extra arguments go to pytest.
#   bash scripts/test.sh           everything (what CI runs)
#   bash scripts/test.sh --fast    the fast tier: tests not marked `slow` (the inner loop)
# Both run on two pytest-xdist workers, one test file at a time each, longest files first
# (tests/conftest.py): the demo's minutes of training on one worker while the other runs the rest.
# (Serial until the CPU trainer ran torch on one thread: beside another worker, two threads per
# trainer on two cores made the demo's replays too slow to verify anything in 30 minutes. On one
# thread the whole suite took 1,125 s on two workers against 1,521 s serially: docs/benchmarks.md.)
# Extra arguments go to pytest after these (`-n 0` runs serially).
# Besides scripts/setup.sh's installs it installs, as root on Debian, two system packages the
# tests need: chromium (the dashboard's browser test) and iproute2 (nodes in network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/apt.sh
args=(-n 2 --dist loadfile --no-loadscope-reorder)
for a in "$@"; do
    if [ "$a" = --fast ]; then args+=(-m "not slow"); else args+=("$a"); fi
done
if ! command -v chromium >/dev/null 2>&1 && can_apt; then
    apt_install chromium || echo "setup: could not install chromium; tests/node/test_dashboard_browser.py will fail" >&2
fi
if ! command -v ip >/dev/null 2>&1 && can_apt; then
    apt_install iproute2 || echo "setup: could not install iproute2; tests/swarm/test_netns.py will skip" >&2
fi
exec .venv/bin/python -m pytest "${args[@]}"
