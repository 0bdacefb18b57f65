"""The peer: one aiohttp server and one client session, the connections between them, and who
to talk to. `async with Peer.open(config, ledger, identity) as peer:` is the node's handle.

Owns the peer's lifetime (server, client session, the TaskGroup of its loops, the peer table
and anchors saved on close) and the calls the node makes. Finding, admitting, keeping and
dropping peers are split out: swarm/dialer.py dials, swarm/inbound.py accepts (admission,
half-open slots), swarm/links.py keeps the registry of live connections and answers their
callbacks, swarm/bundlehttp.py serves and fetches bundles. What flows over a connection is
swarm/gossip.py's business, and the frames themselves swarm/connection.py's.
`Peer` is about 290 lines, over the 250 STYLE.md asks of a class: it is the node's one handle
on the swarm, and what is left in it is the lifetime (open, supervise, close in order, which
must stay together) and the calls the node makes, most of them a few lines handing on to the
parts above.

Theory of operation
- Every connection is a websocket at WS_PATH that starts with a signed hello each way
  (swarm/handshake.py). The listener checks swarm, version, clock window and nonce; the dialer
  checks that the answer echoes its nonce. Then the connection runs until it drops.
- Inbound connections run in aiohttp's request handlers (aiohttp owns them); outbound ones and
  the peer's own loops (ingest, repair, dialing, saving the peer table) run in the TaskGroup
  opened by `Peer.open`. `aclose()` closes every connection, cancels the loops, stops the server
  and the client session, and saves the peer table; it is idempotent.
- At most one connection per node id: when two peers dial each other at once, both keep the
  one dialed by the smaller node id.
- A peer whose score falls below limits.BAN_SCORE is disconnected and its node id (and, if we
  dialed it, its address) banned for limits.BAN_S.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ledger.bodies import Body
from ledger.entry import Entry
from ledger.keys import Identity
from ledger.store import Ledger
from swarm.admission import Admission, AdmissionLimits
from swarm.anchors import LinkSummary, choose_anchors, load_anchors, save_anchors
from swarm.bundlehttp import BUNDLE_PATH, SPEC_PATH, BundleSource, add_routes, fetch_bundle, read_capped
from swarm.bundles import MAX_BUNDLE_BYTES
from swarm.dialer import WS_PATH, Dialer
from swarm.errors import PeerUnavailable, SwarmError
from swarm.gossip import Replicator
from swarm.handshake import NonceCache
from swarm.inbound import HALF_OPEN_EVICT_S, Inbound
from swarm.ledgerport import LedgerPort
from swarm.limits import Bans
from swarm.links import FULL_HEADS_EVERY, FULL_SYNC_EVERY, MAX_ADDRS_FROM_PEER, USEFUL_ENTRIES, USEFUL_SCORE, Links
from swarm.peerconfig import PeerConfig
from swarm.peertable import PeerTable
from swarm.protocol import ENTRY_ID_BYTES, check_addr
from swarm.quota import Quotas
from swarm.stamp import BadStamp, load_stamp, load_stamps, mint_stamp, save_stamp, save_stamps
from swarm.stats import SwarmStats

TABLE_SAVE_INTERVAL_S = 30.0
MAX_HELD_TIMEOUT_S = 60.0
SERVER_SHUTDOWN_S = 2.0
STAMP_CHUNK = 1 << 16           # stamp tries per thread call (~0.1 s): a close waits for one at most

_log = logging.getLogger(__name__)

# the constants below moved with their code and are importable from here as before
__all__ = ["BUNDLE_PATH", "FULL_HEADS_EVERY", "FULL_SYNC_EVERY", "HALF_OPEN_EVICT_S", "MAX_ADDRS_FROM_PEER",
           "SPEC_PATH", "USEFUL_ENTRIES", "USEFUL_SCORE", "WS_PATH", "BundleSource", "Peer", "PeerConfig",
           "read_capped"]

class Peer:
    def __init__(self, config: PeerConfig, ledger: Ledger, identity: Identity,
                 bundle_source: BundleSource | None = None) -> None:
        self.config = config
        self.identity = identity
        self.node_id = identity.public_key
        self.swarm_id = ledger.swarm_id
        self._spec_wire = ledger.spec.wire
        self.rng = random.Random(config.seed)
        port = LedgerPort(ledger)
        self.quotas = Quotas(config.quota_limits(), swarm=ledger.swarm_id, stamp_bits=config.stamp_bits,
                             own=identity.public_key, valued=port.valued)
        if config.stamp and not self.quotas.learn_stamp(identity.public_key, config.stamp):
            raise SwarmError(f"config: the stamp given is not good for this key at {config.stamp_bits} bits")
        stamps_path = config.stamps_file()
        for author, nonce in (load_stamps(stamps_path) if stamps_path is not None else {}).items():
            self.quotas.learn_stamp(author, nonce)   # checked again: a stale or edited file counts for nothing
        self.replicator = Replicator(port, identity, batch_wires=config.ingest_batch_wires,
                                     eager_fanout=config.eager_fanout, rng=random.Random(self.rng.random()),
                                     quotas=self.quotas)
        self.stats_total = SwarmStats()
        self.table = PeerTable.load(config.peer_table_path) if config.peer_table_path else PeerTable()
        for addr in config.bootstrap:
            self.table.add(addr, bootstrap=True)
        self.anchors = load_anchors(config.anchors_path) if config.anchors_path else []
        for addr in self.anchors:  # marked good: choose_dials dials them before gossiped addresses
            if self.table.add(addr):
                self.table.records[addr].last_ok_s = max(self.table.records[addr].last_ok_s, 1.0)
        self.bans = Bans()
        self.nonces = NonceCache()
        self.address = ""
        self._bundle_source = bundle_source
        self.admission = Admission(AdmissionLimits(
            max_inbound=config.max_inbound, per_addr=config.max_inbound_per_addr,
            per_subnet=config.max_inbound_per_subnet, max_half_open=config.max_half_open,
            half_open_per_subnet=max(1, min(config.max_half_open, config.max_inbound_per_subnet // 2)),
            reserved_useful=min(config.reserved_useful, config.max_inbound // 4)))
        self.tg: asyncio.TaskGroup | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None
        self.closing = False
        self._closed = False
        self.links = Links(self)
        self.dialer = Dialer(self)
        self.inbound = Inbound(self)

    # -- lifetime

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: PeerConfig, ledger: Ledger, identity: Identity, *,
                   bundle_source: BundleSource | None = None) -> AsyncIterator[Peer]:
        peer = cls(config, ledger, identity, bundle_source)
        await peer._start()
        try:
            yield peer
        finally:
            await peer.aclose()

    async def _start(self) -> None:
        # what strangers hold already counts against their quotas: a restart gives no one a new one
        self.quotas.preload(await self.replicator.port.stored_bytes(frozenset({self.node_id})))
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get(WS_PATH, self.inbound.handle_ws)
        add_routes(app, self._spec_wire, self._bundle_source)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SERVER_SHUTDOWN_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise SwarmError(f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}") from None
        host, port = self._runner.addresses[0][:2]
        self.address = self.config.advertise or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        connector = aiohttp.TCPConnector(local_addr=(self.config.dial_from, 0)) if self.config.dial_from else None
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, connect=self.config.connect_timeout_s,
                                          sock_connect=self.config.connect_timeout_s),
        )
        started = asyncio.Event()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(started), name="swarm-peer")
        await started.wait()

    async def _supervise(self, started: asyncio.Event) -> None:
        """Owns the peer's background tasks in one TaskGroup, apart from the caller's own code,
        so the caller's exceptions never come back wrapped in an ExceptionGroup."""
        async with asyncio.TaskGroup() as tg:
            self.tg = tg
            self._loops = [
                tg.create_task(self._guard(self.replicator.run_ingest), name="swarm-ingest"),
                tg.create_task(self._guard(self.replicator.run_repair), name="swarm-repair"),
                tg.create_task(self._guard(self.replicator.run_pull), name="swarm-pull"),
                tg.create_task(self._guard(self.dialer.dial_loop), name="swarm-dial"),
            ]
            if self.config.peer_table_path is not None:
                self._loops.append(tg.create_task(self._guard(self._save_loop), name="swarm-table-save"))
            stamp_path = self.config.stamp_file()
            if stamp_path is not None and self.quotas.stamp_of(self.node_id) is None:
                self._loops.append(tg.create_task(self._own_stamp(stamp_path), name="swarm-stamp"))
            started.set()
            await self._stop.wait()
            for task in self._loops:
                task.cancel()
            for conn in list(self.replicator.conns.values()) + list(self.dialer.outbound):
                conn.close("shutting down")

    async def _own_stamp(self, path: Path) -> None:
        """Loads or mints our stamp (seconds of CPU, once per key and swarm), then hands it to every
        connected peer; links opened later get it first thing (swarm/links.py). Minted in chunks
        of STAMP_CHUNK tries, each in a thread, so closing the peer waits for one chunk at most."""
        swarm, key, bits = self.swarm_id, self.node_id, self.config.stamp_bits
        try:
            nonce = await asyncio.to_thread(load_stamp, path, swarm, key, bits)
            start = 0
            while nonce is None:
                nonce = await asyncio.to_thread(mint_stamp, swarm, key, bits, start=start, max_tries=STAMP_CHUNK)
                start += STAMP_CHUNK
            await asyncio.to_thread(save_stamp, path, swarm, key, bits, nonce)
        except (OSError, BadStamp) as exc:
            _log.error("no identity stamp (%s): peers keep our entries under the unstamped quota", exc)
            return
        self.quotas.learn_stamp(self.node_id, nonce)
        for conn in list(self.replicator.conns.values()):
            for stamps in self.replicator.stamps_for(conn, (self.node_id,)):
                conn.push(stamps)
        await self.replicator.notify()

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Runs a forever-loop; a bug is logged and the loop restarted, never the node stopped."""
        while not self.closing:
            try:
                await loop()
            except Exception:
                _log.exception("swarm loop %s failed; restarting it", getattr(loop, "__name__", loop))
                await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = self.closing = True
        self._stop.set()
        if self.config.anchors_path is not None:
            now = time.monotonic()
            links = [LinkSummary(c.addr, not c.inbound, now - c.opened_s, c.stats.score, c.stats.entries_in)
                     for c in self.replicator.conns.values()]
            try:
                await asyncio.to_thread(save_anchors, self.config.anchors_path, choose_anchors(links))
            except OSError as exc:
                _log.error("could not save the anchors: %s", exc)
        for conn in list(self.replicator.conns.values()) + list(self.dialer.outbound):
            conn.close("shutting down")
        if self._supervisor is not None:
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self._runner is not None:
            await self.inbound.wait_idle(SERVER_SHUTDOWN_S)   # the links are closed: their handlers end
            await self._runner.cleanup()
        if self.session is not None:
            await self.session.close()
        if self.config.peer_table_path is not None:
            try:
                await asyncio.to_thread(self.table.save, self.config.peer_table_path)
            except OSError as exc:
                _log.error("could not save the peer table: %s", exc)
            await self._save_stamps()

    async def __aenter__(self) -> Peer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- what the node uses

    async def publish(self, body: Body) -> Entry:
        """Signs, appends and pushes our own next entry to every connected peer."""
        return await self.replicator.publish(body)

    def announce(self, entry: Entry) -> None:
        """Pushes an entry the node appended to the ledger by itself."""
        self.replicator.announce(entry)

    def subscribe(self, maxsize: int = 1024) -> contextlib.AbstractAsyncContextManager[asyncio.Queue[Entry]]:
        return self.replicator.subscribe(maxsize)

    def connected(self) -> list[bytes]:
        return list(self.replicator.conns)

    def stats(self) -> dict[str, Any]:
        """Plain-dict snapshot: node-wide counters and one dict per connected peer."""
        snap = self.stats_total.snapshot()
        snap.update(
            address=self.address, node=self.identity.node_id,
            peers={c.stats.node: c.stats.snapshot() for c in self.replicator.conns.values()},
            known_addrs=len(self.table), banned=len(self.bans), appended=self.replicator.appended_total,
            pending=self.replicator.port.pending_count, subscriber_dropped=self.replicator.subscriber_dropped,
            frauds_published=self.replicator.frauds_published, released=self.replicator.released,
            pulls_asked=self.replicator.pulls_asked, pulls_passed_over=self.replicator.pulls_passed_over,
            pulls_dropped=self.replicator.pulls_dropped, quota=self.quotas.snapshot(),
        )
        return snap

    async def held_by(self, entry_id: bytes, timeout_s: float) -> int:
        """How many connected peers say they hold the entry, asked all at once over their
        authenticated links; a peer that does not answer within `timeout_s` counts as no.

        A seller starts paid work only when its payment is held by enough peers: a payer who
        forked its feed to pay twice cannot show both branches to the same honest majority.
        """
        if type(entry_id) is not bytes or len(entry_id) != ENTRY_ID_BYTES:
            raise SwarmError(f"held_by: an entry id is {ENTRY_ID_BYTES} bytes")
        if not 0 < timeout_s <= MAX_HELD_TIMEOUT_S:
            raise SwarmError(f"held_by: timeout_s must be in (0, {MAX_HELD_TIMEOUT_S:.0f}]")
        asked = [c.ask_held(entry_id) for c in list(self.replicator.conns.values())]
        futures = [f for f in asked if f is not None]
        if not futures:
            return 0
        done, pending = await asyncio.wait(futures, timeout=timeout_s)
        for future in pending:
            future.cancel()
        return sum(1 for f in done if not f.cancelled() and f.exception() is None and f.result())

    async def wait_until(self, predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float) -> None:
        """Waits until `predicate()` holds, re-checking after every ingest, publish and (dis)connect."""
        changed = self.replicator.changed
        async with asyncio.timeout(timeout_s), changed:
            while True:
                result = predicate()
                if result if isinstance(result, bool) else await result:
                    return
                await changed.wait()

    async def wait_synced(self, timeout_s: float) -> bool:
        """Waits until a connected peer's last heads digest equals ours: we hold what it holds (a
        node joining a swarm waits for this before deciding what work is missing). False on timeout."""
        async def same() -> bool:
            ours = await self.replicator.digest()
            return any(c.peer_digest == ours for c in self.replicator.conns.values())

        try:
            await self.wait_until(same, timeout_s)
        except TimeoutError:
            return False
        return True

    async def connect(self, addr: str) -> None:
        """Dials `addr` now and returns once the connection is up (or raises PeerUnavailable)."""
        check_addr(addr)
        self.table.add(addr)
        up = asyncio.Event()
        if self.tg is None or self.closing:
            raise PeerUnavailable("the peer is closing")
        self.tg.create_task(self.dialer.guarded_dial(addr, up), name=f"swarm-dial:{addr}")
        async with asyncio.timeout(self.config.connect_timeout_s + self.config.handshake_timeout_s + 1):
            await up.wait()
        if not any(c.addr == addr for c in self.replicator.conns.values()):
            raise PeerUnavailable(f"{addr}: no connection")

    async def fetch_bundle(self, addr: str, sha256: bytes, *, max_bytes: int = MAX_BUNDLE_BYTES) -> bytes:
        """Pulls a bundle by hash from the peer at `addr`; the caller checks what it got."""
        check_addr(addr)
        if self.session is None:
            raise PeerUnavailable("the peer is not open")
        return await fetch_bundle(self.session, addr, sha256, max_bytes)

    async def _save_loop(self) -> None:
        path = self.config.peer_table_path
        while path is not None:
            await asyncio.sleep(TABLE_SAVE_INTERVAL_S)
            try:
                await asyncio.to_thread(self.table.save, path)
            except OSError as exc:
                _log.error("could not save the peer table: %s", exc)
            await self._save_stamps()

    async def _save_stamps(self) -> None:
        path = self.config.stamps_file()
        if path is None:
            return
        try:
            await asyncio.to_thread(save_stamps, path, dict(self.quotas.stamps))
        except OSError as exc:
            _log.error("could not save the stamps: %s", exc)
