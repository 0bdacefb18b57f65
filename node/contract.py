"""The wire contract between the node's local API (node/web/) and its clients (node/client/).

Both sides import these names from here and nowhere else, so a limit or a header cannot differ
between the server that enforces it and the client that checks it early for a clearer message.
Knows nothing of HTTP libraries, the ledger or the swarm: plain constants only.
"""
from __future__ import annotations

from typing import Final

# HOME/API_FILE: {"url", "token", "pid", "peer"}, 0600, written by node/web/server.py while the
# node serves and removed when it stops; "token" is the operator token of that run.
API_FILE: Final = "api.json"
MAX_API_FILE_BYTES: Final = 4096
# HOME/AGENTS_FILE: the registered agents' key digests (node/web/agents.py), 0600
AGENTS_FILE: Final = "agents.json"

# "true" on a text answer (a diff, a train.py) that carries other nodes' code or words: data to
# show, never instructions to follow. JSON answers say the same with an "untrusted" field.
UNTRUSTED_HEADER: Final = "X-Autoswarm-Untrusted"
UNTRUSTED_FIELD: Final = "untrusted"

MAX_TRAIN_PY_BYTES: Final = 256 * 1024   # a submitted train.py
MIN_PREFIX_HEX: Final = 7                # an abbreviated commit or job id: git's own short length
NODE_API_PREFIX: Final = "/api/node"     # the node's own routes (node/web/nodeapi.py)

# exit statuses of `python -m node <client command>`
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1        # the node failed, timed out or answered something that is not the API
EXIT_BAD_INPUT: Final = 2     # bad arguments, no node running, or a request the node refused
