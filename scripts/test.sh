#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the whole test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# chromium (tests only): the dashboard's browser test drives Debian's build through Playwright (no browser download).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "setup: could not install chromium; tests/node/test_dashboard_browser.py will fail" >&2
fi
# iproute2 (tests only): tests/swarm/test_netns.py puts nodes in network namespaces with `ip netns`.
if ! command -v ip >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq iproute2) >/dev/null 2>&1 \
        || echo "setup: could not install iproute2; tests/swarm/test_netns.py will skip" >&2
fi
exec .venv/bin/python -m pytest "$@"
