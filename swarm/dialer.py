"""Outbound connections: which addresses to dial, dialing them, and the hello from the dialer's side.

Owned by a swarm/peer.py Peer, whose TaskGroup runs the dial loop and every dial. Knows nothing
about accepting connections (swarm/inbound.py) or what flows over one (swarm/links.py,
swarm/gossip.py); a connection that comes up is handed to the peer's registry.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import aiohttp

from swarm.connection import Connection
from swarm.errors import BadHandshake, PeerUnavailable, SwarmError
from swarm.handshake import accept_hello, new_nonce, sign_hello
from swarm.peertable import choose_dials
from swarm.protocol import MAX_FRAME_BYTES
from swarm.wshello import handshake_reason, receive_hello

if TYPE_CHECKING:
    from swarm.peer import Peer

WS_PATH = "/swarm/v1/ws"

_log = logging.getLogger(__name__)


class Dialer:
    """Keeps the peer's outbound connections up to `config.max_outbound`."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.dialing: set[str] = set()
        self.outbound: dict[Connection, None] = {}

    async def dial_loop(self) -> None:
        while True:
            self.dial_some()
            await asyncio.sleep(self.peer.config.dial_interval_s)

    def dial_some(self) -> None:
        peer = self.peer
        want = peer.config.max_outbound - len(self.outbound) - len(self.dialing)
        if want <= 0 or peer.tg is None:
            return
        now = time.monotonic()
        conns = peer.replicator.conns.values()
        connected = {c.addr for c in conns} | {c.listen for c in conns if c.listen} | self.dialing
        banned = {a for a in peer.table.records if peer.bans.banned(a, now)}
        records = peer.table.records.values()
        banned |= {r.node for r in records if r.node and peer.bans.banned(bytes.fromhex(r.node), now)}
        for addr in choose_dials(peer.table, connected=connected, banned=banned, own={peer.address},
                                 want=want, now_s=time.time(), rng=peer.rng):
            peer.tg.create_task(self.guarded_dial(addr, None), name=f"swarm-dial:{addr}")

    async def guarded_dial(self, addr: str, up: asyncio.Event | None) -> None:
        """Dials `addr` and runs the connection until it drops; `up` is set once it is registered or failed."""
        peer = self.peer
        if addr in self.dialing or peer.closing:
            if up is not None:
                up.set()
            return
        self.dialing.add(addr)
        try:
            conn = await self._dial(addr)
        except (SwarmError, aiohttp.ClientError, ConnectionError, TimeoutError, OSError) as exc:
            _log.debug("dial %s failed: %r", addr, exc)
            peer.table.failed(addr, time.time())
            conn = None
        finally:
            self.dialing.discard(addr)
        if conn is None:
            if up is not None:
                up.set()
            return
        self.outbound[conn] = None
        try:
            if await peer.links.register(conn):
                peer.table.succeeded(addr, conn.node.hex(), time.time())
                if up is not None:
                    up.set()
                await conn.run(peer.links.anti_entropy)
        finally:
            if up is not None:
                up.set()
            self.outbound.pop(conn, None)
            await peer.links.unregister(conn)

    async def _dial(self, addr: str) -> Connection:
        peer = self.peer
        if peer.session is None or peer.closing:
            raise PeerUnavailable("the peer is closing")
        if peer.bans.banned(addr, time.monotonic()):
            raise PeerUnavailable(f"{addr} is banned")
        nonce = new_nonce()
        async with asyncio.timeout(peer.config.connect_timeout_s):
            ws = await peer.session.ws_connect(
                f"http://{addr}{WS_PATH}", max_msg_size=MAX_FRAME_BYTES, autoping=True, heartbeat=None,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
            )
        try:
            mine = sign_hello(peer.identity, swarm=peer.swarm_id, listen=peer.address,
                              time_ms=int(time.time() * 1000), nonce=nonce)
            await ws.send_bytes(mine.wire)
            hello = await receive_hello(ws, peer.config.handshake_timeout_s)
            accept_hello(hello, swarm=peer.swarm_id, me=peer.node_id, now_ms=int(time.time() * 1000),
                         nonces=None, echo=nonce)
            if peer.bans.banned(hello.node, time.monotonic()):
                raise PeerUnavailable(f"{addr}: node is banned")
        except BadHandshake as exc:
            peer.stats_total.fail(peer.stats_total.handshakes_failed, handshake_reason(exc))
            await ws.close()
            raise
        except BaseException:
            await ws.close()
            raise
        peer.stats_total.connections_out += 1
        return peer.links.connection(ws, hello, inbound=False, addr=addr)
