#!/usr/bin/env bash
# Starts one autoswarm node that peers reach at ADVERTISE (host:port), joining the swarm of the
# node at BOOTSTRAP (host:port) or, with BOOTSTRAP empty, creating the swarm.
#
#   ADVERTISE=10.0.0.5:7400 BOOTSTRAP=10.0.0.4:7400 bash deploy/start-node.sh
#
# Used by deploy/skypilot/autoswarm.yaml and deploy/k8s/statefulset.yaml; runs in the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ADVERTISE:?set ADVERTISE to the host:port other nodes reach this one at}"
PORT=${AUTOSWARM_PORT:-7400}
HOME_DIR=${AUTOSWARM_HOME:-$HOME/.autoswarm}
mkdir -p "$HOME_DIR"
# The node has no --advertise flag: the address goes into [network] advertise of HOME/config.toml
# (every other key keeps its default). An existing file gets only that line replaced.
CFG="$HOME_DIR/config.toml"
if [ ! -f "$CFG" ]; then
    printf '[network]\nadvertise = "%s"\n' "$ADVERTISE" > "$CFG"
elif grep -q '^advertise = ' "$CFG"; then
    sed -i "s|^advertise = .*|advertise = \"$ADVERTISE\"|" "$CFG"
else
    echo "start-node: $CFG has no 'advertise = ' line; set [network] advertise = \"$ADVERTISE\" by hand" >&2
fi
ARGS=(--home "$HOME_DIR" --listen "0.0.0.0:$PORT")
if [ -n "${BOOTSTRAP:-}" ]; then
    ARGS+=(--bootstrap "$BOOTSTRAP")
fi
# AUTOSWARM_PYTHON: another interpreter (tests put a stand-in there that prints its arguments)
exec "${AUTOSWARM_PYTHON:-.venv/bin/python}" -m node "${ARGS[@]}"
