"""Inbound connections: the websocket upgrade, admission, half-open slots and the listener's hello.

Owned by a swarm/peer.py Peer: aiohttp runs `handle_ws` as the request handler of WS_PATH, so
aiohttp owns each inbound connection's task. Knows nothing about dialing (swarm/dialer.py) or
what flows over a connection once it is registered (swarm/links.py, swarm/gossip.py); which
host may take which slot is swarm/admission.py's pure bookkeeping.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from swarm.connection import Connection
from swarm.errors import BadHandshake
from swarm.handshake import accept_hello, new_nonce, sign_hello
from swarm.limits import HANDSHAKE_BURST, HANDSHAKES_PER_S, TokenBucket
from swarm.peertable import group_of
from swarm.protocol import MAX_FRAME_BYTES
from swarm.wshello import handshake_reason, receive_hello

if TYPE_CHECKING:
    from swarm.peer import Peer

HALF_OPEN_EVICT_S = 1.0      # an evicted half-open connection frees its slot within this


class Inbound:
    """Accepts, admits and greets the connections other peers dial to us."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.handshakes = TokenBucket.full(HANDSHAKES_PER_S, HANDSHAKE_BURST, time.monotonic())
        # half-open inbound connections, oldest first: (set to evict it, set once its slot is free)
        self.half_open: dict[object, tuple[asyncio.Event, asyncio.Event]] = {}
        self.handlers = 0             # handle_ws calls running (aiohttp's tasks)
        self.idle = asyncio.Event()   # set while none runs
        self.idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Waits until every inbound handler has returned (the peer closes its links first); False
        on timeout. aiohttp's own shutdown wait races a handler finishing just as it gives up
        (an InvalidStateError traceback per such handler, seen in bench_swarm's logs), so the
        peer lets its handlers end before the server's cleanup starts."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.idle.wait()
        except TimeoutError:
            return False
        return True

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        self.handlers += 1
        self.idle.clear()
        try:
            return await self._handle_ws(request)
        finally:
            self.handlers -= 1
            if not self.handlers:
                self.idle.set()

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        peer = self.peer
        stats, admission = peer.stats_total, peer.admission
        if peer.closing:
            return web.Response(status=503, text="shutting down")
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, autoping=True, heartbeat=None)
        if not ws.can_prepare(request).ok:
            # before any allowance is spent: plain GETs must not use up the handshakes
            stats.fail(stats.refused, "not_websocket")
            return web.Response(status=400, text="websocket upgrade expected")
        host = request.remote or ""
        if host and peer.bans.banned(host, time.monotonic()):
            # a banned peer's address (swarm/links.py): refused before it takes a slot or a handshake
            stats.fail(stats.refused, "banned_addr")
            return web.Response(status=403, text="refused: banned")
        why = admission.admit(host, time.monotonic())
        if why == "half_open" and self.half_open:
            # every half-open slot is taken: the oldest has had the longest to send its hello
            # (an honest peer sends it at once), so it goes and this one takes its place
            evict, released = self.half_open.pop(next(iter(self.half_open)))
            evict.set()
            stats.fail(stats.refused, "evicted_half_open")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HALF_OPEN_EVICT_S):
                    await released.wait()
            why = admission.admit(host, time.monotonic())
        if why is None and not self.handshakes.take(1.0, time.monotonic()):
            admission.release(host, identified=False, kind=None)
            why = "rate"
        if why is not None:
            stats.fail(stats.refused, why)
            return web.Response(status=429 if why == "rate" else 503, text=f"refused: {why}")
        slot: list[str | None] = []   # _accept appends the kind of slot once the hello names the node
        evicted, released = asyncio.Event(), asyncio.Event()
        key = object()
        self.half_open[key] = (evicted, released)
        try:
            await ws.prepare(request)
            conn = await self._accept(ws, host, slot, evicted)
            self.half_open.pop(key, None)
            if conn is not None and await peer.links.register(conn):
                try:
                    await conn.run(peer.links.anti_entropy)
                finally:
                    await peer.links.unregister(conn)
            elif conn is not None:
                await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"duplicate connection")
        finally:
            self.half_open.pop(key, None)
            admission.release(host, identified=bool(slot), kind=slot[0] if slot else None)
            released.set()
        return ws

    async def _accept(self, ws: web.WebSocketResponse, remote: str, slot: list[str | None],
                      evicted: asyncio.Event) -> Connection | None:
        peer = self.peer
        stats = peer.stats_total
        try:
            hello = await receive_hello(ws, peer.config.handshake_timeout_s, evicted)
            now_ms = int(time.time() * 1000)
            accept_hello(hello, swarm=peer.swarm_id, me=peer.node_id, now_ms=now_ms, nonces=peer.nonces)
            if peer.bans.banned(hello.node, time.monotonic()):
                stats.fail(stats.refused, "banned")
                await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"banned")
                return None
            kind, why = peer.admission.admit_identity(remote, hello.node)
            slot.append(kind)
            if kind is None:
                stats.fail(stats.refused, why)
                await ws.close(code=aiohttp.WSCloseCode.TRY_AGAIN_LATER, message=b"only reserved slots left")
                return None
            answer = sign_hello(peer.identity, swarm=peer.swarm_id, listen=peer.address, time_ms=now_ms,
                                nonce=new_nonce(), echo=hello.nonce)
            await ws.send_bytes(answer.wire)
        except BadHandshake as exc:
            stats.fail(stats.handshakes_failed, handshake_reason(exc))
            reason = str(exc).encode("ascii", "replace")[:120]  # a close reason is at most 123 bytes
            await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=reason)
            return None
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            return None
        stats.connections_in += 1
        if hello.listen and peer.config.peer_exchange:
            peer.table.add(hello.listen, source=group_of(remote))
        conn = peer.links.connection(ws, hello, inbound=True, addr=hello.listen or remote)
        conn.remote_host = remote
        return conn
