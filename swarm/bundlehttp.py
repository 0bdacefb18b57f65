"""The peer's plain HTTP side: bundles by hash and the signed swarm spec, served and fetched.

Knows nothing about websockets or gossip: swarm/peer.py adds these routes to its server and
calls `fetch_bundle` with its client session; the caller checks what a fetched bundle holds.
"""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from swarm.errors import PeerUnavailable, SwarmError

BUNDLE_PATH = "/swarm/v1/bundle/{sha256}"
SPEC_PATH = "/swarm/v1/spec"
BUNDLE_TIMEOUT_S = 60.0
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

BundleSource = Callable[[bytes], Awaitable[bytes | None]]


async def read_capped(resp: aiohttp.ClientResponse, max_bytes: int, too_big: SwarmError) -> bytes:
    """A peer's HTTP body, refused with `too_big` as soon as it (or its declared length) passes max_bytes."""
    if (resp.content_length or 0) > max_bytes:
        raise too_big
    data = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > max_bytes:
            raise too_big
    return bytes(data)


async def fetch_bundle(session: aiohttp.ClientSession, addr: str, sha256: bytes, max_bytes: int) -> bytes:
    """A bundle by hash from the peer at `addr` (already checked), or PeerUnavailable."""
    url = f"http://{addr}{BUNDLE_PATH.format(sha256=sha256.hex())}"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=BUNDLE_TIMEOUT_S)) as resp:
            if resp.status != 200:
                raise PeerUnavailable(f"{addr}: bundle {sha256.hex()[:16]}: HTTP {resp.status}")
            return await read_capped(resp, max_bytes, PeerUnavailable(f"{addr}: bundle larger than {max_bytes} bytes"))
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        raise PeerUnavailable(f"{addr}: {exc!r}") from None


def add_routes(app: web.Application, spec_wire: bytes, bundle_source: BundleSource | None) -> None:
    """Serves the bundles `bundle_source` holds, and the signed spec so a node given only our
    address can join (swarm/join.py)."""
    async def handle_spec(request: web.Request) -> web.StreamResponse:
        return web.Response(body=spec_wire, content_type="application/octet-stream")

    async def handle_bundle(request: web.Request) -> web.StreamResponse:
        text = request.match_info.get("sha256", "")
        if not _SHA256_HEX.match(text):
            return web.Response(status=400, text="bundle hash must be 64 lowercase hex digits")
        if bundle_source is None:
            return web.Response(status=404, text="no bundles here")
        data = await bundle_source(bytes.fromhex(text))
        if data is None:
            return web.Response(status=404, text="no such bundle")
        return web.Response(body=data, content_type="application/octet-stream")

    app.router.add_get(BUNDLE_PATH, handle_bundle)
    app.router.add_get(SPEC_PATH, handle_spec)
