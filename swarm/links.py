"""The peer's registry of live connections and the callbacks each connection makes (its Handler).

Owns: one connection per node id (the one dialed by the smaller node id wins), the anti-entropy
schedule of every link (peer exchange, then heads, digests and deltas), what a link may teach
us about other addresses, and banning a peer whose score fell too low. Entries and sync
messages are handed to swarm/gossip.py's Replicator. Knows nothing about how a connection
came up (swarm/dialer.py, swarm/inbound.py).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING

from swarm.connection import Connection, SyncMessage, WebSocket
from swarm.handshake import Hello
from swarm.peertable import group_of, host_of
from swarm.protocol import MAX_ADDRS_PER_FRAME, Digest, Peers, Stamps

if TYPE_CHECKING:
    from swarm.peer import Peer

FULL_SYNC_EVERY = 6          # anti-entropy intervals; the others send only a digest
FULL_HEADS_EVERY = 30        # heads rounds; the others send only a delta of what changed on the link
MAX_ADDRS_FROM_PEER = 2 * MAX_ADDRS_PER_FRAME   # addresses taken from one link in its lifetime
USEFUL_ENTRIES = 16          # entries a peer delivered first (we appended them) to count as useful
USEFUL_SCORE = -20.0         # ... with a score above this

_log = logging.getLogger(__name__)


class Links:
    """Registers the peer's connections and answers their callbacks."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    def connection(self, ws: WebSocket, hello: Hello, *, inbound: bool, addr: str) -> Connection:
        config = self.peer.config
        return Connection(ws, hello, inbound=inbound, addr=addr, handler=self,
                          send_queue_frames=config.send_queue_frames, ping_interval_s=config.ping_interval_s)

    async def register(self, conn: Connection) -> bool:
        peer = self.peer
        existing = peer.replicator.conns.get(conn.node)
        if existing is not None and not existing.closed.is_set():
            # keep the connection dialed by the smaller node id, so both ends keep the same one
            preferred_dialer = min(peer.node_id, conn.node)
            new_dialer = conn.node if conn.inbound else peer.node_id
            if new_dialer != preferred_dialer:
                peer.stats_total.fail(peer.stats_total.refused, "duplicate")
                return False
            existing.close("replaced by the preferred connection")
        if peer.closing:
            return False
        peer.replicator.conns[conn.node] = conn
        await peer.replicator.notify()
        return True

    async def unregister(self, conn: Connection) -> None:
        peer = self.peer
        if conn.stats.entries_in >= USEFUL_ENTRIES and conn.stats.score > USEFUL_SCORE:
            peer.admission.mark_useful(conn.node)  # it may take a reserved slot when it comes back
        if peer.replicator.conns.get(conn.node) is conn:
            del peer.replicator.conns[conn.node]
            for reason, n in conn.stats.rejects.items():
                peer.stats_total.fail(peer.stats_total.closed_peers, reason)
                peer.stats_total.closed_peers[reason] += n - 1
            await peer.replicator.notify()

    async def anti_entropy(self, conn: Connection) -> None:
        """Runs inside the connection's TaskGroup: peer exchange, then heads every interval."""
        peer = self.peer
        if peer.config.peer_exchange:
            # hints only: where we and our current peers listen, then addresses that answered us
            live = [c.listen for c in peer.replicator.conns.values() if c.listen and c is not conn]
            addrs = dict.fromkeys([peer.address] + live + peer.table.good_addrs(MAX_ADDRS_PER_FRAME, peer.rng))
            addrs.pop(conn.listen, None)
            conn.push(Peers(tuple(addrs)[:MAX_ADDRS_PER_FRAME]))
        for stamps in peer.replicator.stamps_for(conn, (peer.node_id,)):
            conn.push(stamps)   # ours, before any entry of ours reaches it
        await peer.replicator.send_heads(conn)
        for tick in itertools.count(1):
            interval = peer.config.anti_entropy_interval_s
            await asyncio.sleep(interval * peer.rng.uniform(0.8, 1.2))
            if tick % (FULL_SYNC_EVERY * FULL_HEADS_EVERY) == 0:
                await peer.replicator.send_heads(conn)
            elif tick % FULL_SYNC_EVERY == 0:
                if not await peer.replicator.send_heads_delta(conn):
                    conn.push(Digest(await peer.replicator.digest()))
            else:
                conn.push(Digest(await peer.replicator.digest()))

    # -- Handler callbacks from connections

    async def on_entries(self, conn: Connection, wires: tuple[bytes, ...]) -> None:
        await self.peer.replicator.on_entries(conn, wires)

    async def on_sync(self, conn: Connection, message: SyncMessage) -> None:
        await self.peer.replicator.on_sync(conn, message)

    def on_have(self, conn: Connection, ids: tuple[bytes, ...]) -> None:
        self.peer.replicator.on_have(conn, ids)

    def on_stamps(self, conn: Connection, message: Stamps) -> None:
        self.peer.replicator.on_stamps(conn, message)

    def on_peers(self, conn: Connection, message: Peers) -> None:
        peer = self.peer
        if peer.config.peer_exchange:
            source = group_of(conn.remote_host or host_of(conn.addr))
            for addr in message.addrs:
                if conn.addrs_learned >= MAX_ADDRS_FROM_PEER:
                    return  # one peer may tell us only so much over one link
                if addr != peer.address:
                    conn.addrs_learned += 1
                    peer.table.add(addr, source=source)

    def on_ban(self, conn: Connection) -> None:
        peer = self.peer
        now = time.monotonic()
        peer.bans.ban(conn.node, now)
        if not conn.inbound:
            peer.bans.ban(conn.addr, now)
        elif conn.remote_host and peer.config.addr_ban_s > 0:
            # the socket's own address, not the listen address its hello claims (which could be an
            # honest node's): a flooder's next fresh key from there is refused before its upgrade
            peer.bans.ban(conn.remote_host, now, peer.config.addr_ban_s)
        peer.stats_total.bans += 1
        _log.warning("banned peer %r: score %.0f, rejects %s", conn, conn.stats.score, dict(conn.stats.rejects))
