"""The node's local HTTP server: AgentHub routes, the node's own API and the dashboard, on loopback.

One aiohttp app on `[network] api_listen` (127.0.0.1 by default: it acts with the node's key).
On start it writes HOME/api.json (0600) with its URL and a fresh operator token, which the
node's CLI reads; on stop it removes the file, so a CLI never talks to a node that is gone.
Agents get their own keys from the operator (`python -m node agent-key NAME`, node/web/agents.py).
Every route, the dashboard's included, answers only requests whose Host (and Origin, if any)
names this server on loopback (node/web/common.py's `loopback_only`).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from swarm.bundles import MAX_BUNDLE_BYTES

from node.contract import AGENTS_FILE
from node.contract import API_FILE as API_FILE  # re-exported for node/sim/demo.py until it imports node.contract
from node.web import agenthub
from node.web import dashboard
from node.web import nodeapi as localapi
from node.web.agents import AgentRegistry, write_private
from node.web.backend import Backend
from node.web.common import loopback_only
from node.errors import SetupError

SHUTDOWN_S = 2.0


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


@contextlib.asynccontextmanager
async def serve_api(listen: str, home: Path, backend: Backend, peer_address: str) -> AsyncIterator[str]:
    """Serves until the block exits; yields the base URL. api.json also says where peers reach us."""
    token = secrets.token_urlsafe(32)
    agents = AgentRegistry.load(home / AGENTS_FILE, token)
    app = web.Application(client_max_size=MAX_BUNDLE_BYTES + (64 << 10), middlewares=[loopback_only])
    agenthub.add_routes(app, backend, agents)
    localapi.add_routes(app, backend, agents)
    dashboard.add_routes(app, backend)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    host, port = _split(listen)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise SetupError(f"the local API cannot listen on {listen}: {exc.strerror}") from None
    bound_host, bound_port = runner.addresses[0][:2]
    if bound_host in ("0.0.0.0", "::"):  # listening everywhere: the node's own clients come over loopback
        bound_host = "127.0.0.1"
    url = f"http://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}"
    path = home / API_FILE
    try:
        write_api_file(home, url, token, peer_address)
        yield url
    finally:
        path.unlink(missing_ok=True)
        await runner.cleanup()


def write_api_file(home: Path, url: str, token: str, peer_address: str) -> None:
    """HOME/api.json, 0600 from its first byte: the operator token is in it."""
    write_private(home / API_FILE, json.dumps({"url": url, "token": token, "pid": os.getpid(), "peer": peer_address}))
