"""The peer: one aiohttp server and one client session, the connections between them, and who
to talk to. `async with Peer.open(config, ledger, identity) as peer:` is the node's handle.

Knows how to find, admit, keep and drop peers; what flows over a connection is
swarm/gossip.py's business, and the frames themselves swarm/connection.py's.

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
import itertools
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from ledger.bodies import Body
from ledger.entry import Entry
from ledger.keys import Identity
from ledger.store import Ledger
from swarm.admission import Admission, AdmissionLimits
from swarm.anchors import LinkSummary, choose_anchors, load_anchors, save_anchors
from swarm.bundles import MAX_BUNDLE_BYTES
from swarm.connection import Connection, SyncMessage, WebSocket
from swarm.errors import BadHandshake, PeerUnavailable, ReplayedHandshake, SwarmError
from swarm.gossip import Replicator
from swarm.handshake import MAX_HELLO_BYTES, Hello, NonceCache, accept_hello, decode_hello, new_nonce, sign_hello
from swarm.ledgerport import LedgerPort
from swarm.peerconfig import PeerConfig
from swarm.limits import HANDSHAKE_BURST, HANDSHAKES_PER_S, Bans, TokenBucket
from swarm.peertable import PeerTable, choose_dials, group_of, host_of
from swarm.protocol import ENTRY_ID_BYTES, MAX_ADDRS_PER_FRAME, MAX_FRAME_BYTES, Digest, Peers, check_addr
from swarm.stats import SwarmStats

WS_PATH = "/swarm/v1/ws"
BUNDLE_PATH = "/swarm/v1/bundle/{sha256}"
SPEC_PATH = "/swarm/v1/spec"
TABLE_SAVE_INTERVAL_S = 30.0
FULL_SYNC_EVERY = 6          # anti-entropy intervals; the others send only a digest
FULL_HEADS_EVERY = 30        # heads rounds; the others send only a delta of what changed on the link
MAX_HELD_TIMEOUT_S = 60.0
SERVER_SHUTDOWN_S = 2.0
BUNDLE_TIMEOUT_S = 60.0
MAX_ADDRS_FROM_PEER = 2 * MAX_ADDRS_PER_FRAME   # addresses taken from one link in its lifetime
HALF_OPEN_EVICT_S = 1.0      # an evicted half-open connection frees its slot within this
USEFUL_ENTRIES = 16          # entries a peer delivered first (we appended them) to count as useful
USEFUL_SCORE = -20.0         # ... with a score above this
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

_log = logging.getLogger(__name__)

__all__ = ["BUNDLE_PATH", "SPEC_PATH", "WS_PATH", "BundleSource", "Peer", "PeerConfig"]

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


def _handshake_reason(exc: BadHandshake) -> str:
    if isinstance(exc, ReplayedHandshake):
        return "replayed"
    text = str(exc)
    for needle, reason in (("another swarm", "wrong_swarm"), ("signature", "bad_signature"), ("clock", "clock"),
                           ("version", "version"), ("own node", "self"), ("echo", "echo"), ("evicted", "evicted")):
        if needle in text:
            return reason
    return "malformed"


class Peer:
    def __init__(self, config: PeerConfig, ledger: Ledger, identity: Identity,
                 bundle_source: BundleSource | None = None) -> None:
        self.config = config
        self.identity = identity
        self.node_id = identity.public_key
        self.swarm_id = ledger.swarm_id
        self._spec_wire = ledger.spec.wire
        self._rng = random.Random(config.seed)
        self.replicator = Replicator(LedgerPort(ledger), identity, batch_wires=config.ingest_batch_wires,
                                     eager_fanout=config.eager_fanout, rng=random.Random(self._rng.random()))
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
        self._handshakes = TokenBucket.full(HANDSHAKES_PER_S, HANDSHAKE_BURST, time.monotonic())
        self.admission = Admission(AdmissionLimits(
            max_inbound=config.max_inbound, per_addr=config.max_inbound_per_addr,
            per_subnet=config.max_inbound_per_subnet, max_half_open=config.max_half_open,
            half_open_per_subnet=max(1, min(config.max_half_open, config.max_inbound_per_subnet // 2)),
            reserved_useful=min(config.reserved_useful, config.max_inbound // 4)))
        self._dialing: set[str] = set()
        # half-open inbound connections, oldest first: (set to evict it, set once its slot is free)
        self._half_open: dict[object, tuple[asyncio.Event, asyncio.Event]] = {}
        self._outbound: dict[Connection, None] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self._closed = False

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
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get(WS_PATH, self._handle_ws)
        app.router.add_get(BUNDLE_PATH, self._handle_bundle)
        app.router.add_get(SPEC_PATH, self._handle_spec)
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
        self._session = aiohttp.ClientSession(
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
            self._tg = tg
            self._loops = [
                tg.create_task(self._guard(self.replicator.run_ingest), name="swarm-ingest"),
                tg.create_task(self._guard(self.replicator.run_repair), name="swarm-repair"),
                tg.create_task(self._guard(self.replicator.run_pull), name="swarm-pull"),
                tg.create_task(self._guard(self._dial_loop), name="swarm-dial"),
            ]
            if self.config.peer_table_path is not None:
                self._loops.append(tg.create_task(self._guard(self._save_loop), name="swarm-table-save"))
            started.set()
            await self._stop.wait()
            for task in self._loops:
                task.cancel()
            for conn in list(self.replicator.conns.values()) + list(self._outbound):
                conn.close("shutting down")

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Runs a forever-loop; a bug is logged and the loop restarted, never the node stopped."""
        while not self._closing:
            try:
                await loop()
            except Exception:
                _log.exception("swarm loop %s failed; restarting it", getattr(loop, "__name__", loop))
                await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        self._stop.set()
        if self.config.anchors_path is not None:
            now = time.monotonic()
            links = [LinkSummary(c.addr, not c.inbound, now - c.opened_s, c.stats.score, c.stats.entries_in)
                     for c in self.replicator.conns.values()]
            try:
                await asyncio.to_thread(save_anchors, self.config.anchors_path, choose_anchors(links))
            except OSError as exc:
                _log.error("could not save the anchors: %s", exc)
        for conn in list(self.replicator.conns.values()) + list(self._outbound):
            conn.close("shutting down")
        if self._supervisor is not None:
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        if self.config.peer_table_path is not None:
            try:
                await asyncio.to_thread(self.table.save, self.config.peer_table_path)
            except OSError as exc:
                _log.error("could not save the peer table: %s", exc)

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
            pulls_dropped=self.replicator.pulls_dropped,
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
        if self._tg is None or self._closing:
            raise PeerUnavailable("the peer is closing")
        self._tg.create_task(self._guarded_dial(addr, up), name=f"swarm-dial:{addr}")
        async with asyncio.timeout(self.config.connect_timeout_s + self.config.handshake_timeout_s + 1):
            await up.wait()
        if not any(c.addr == addr for c in self.replicator.conns.values()):
            raise PeerUnavailable(f"{addr}: no connection")

    async def fetch_bundle(self, addr: str, sha256: bytes, *, max_bytes: int = MAX_BUNDLE_BYTES) -> bytes:
        """Pulls a bundle by hash from the peer at `addr`; the caller checks what it got."""
        check_addr(addr)
        if self._session is None:
            raise PeerUnavailable("the peer is not open")
        url = f"http://{addr}{BUNDLE_PATH.format(sha256=sha256.hex())}"
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=BUNDLE_TIMEOUT_S)) as resp:
                if resp.status != 200:
                    raise PeerUnavailable(f"{addr}: bundle {sha256.hex()[:16]}: HTTP {resp.status}")
                return await read_capped(resp, max_bytes, PeerUnavailable(f"{addr}: bundle larger than {max_bytes} bytes"))
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise PeerUnavailable(f"{addr}: {exc!r}") from None

    # -- dialing

    async def _dial_loop(self) -> None:
        while True:
            self._dial_some()
            await asyncio.sleep(self.config.dial_interval_s)

    def _dial_some(self) -> None:
        want = self.config.max_outbound - len(self._outbound) - len(self._dialing)
        if want <= 0 or self._tg is None:
            return
        now = time.monotonic()
        conns = self.replicator.conns.values()
        connected = {c.addr for c in conns} | {c.listen for c in conns if c.listen} | self._dialing
        banned = {a for a in self.table.records if self.bans.banned(a, now)}
        records = self.table.records.values()
        banned |= {r.node for r in records if r.node and self.bans.banned(bytes.fromhex(r.node), now)}
        for addr in choose_dials(self.table, connected=connected, banned=banned, own={self.address},
                                 want=want, now_s=time.time(), rng=self._rng):
            self._tg.create_task(self._guarded_dial(addr, None), name=f"swarm-dial:{addr}")

    async def _guarded_dial(self, addr: str, up: asyncio.Event | None) -> None:
        if addr in self._dialing or self._closing:
            if up is not None:
                up.set()
            return
        self._dialing.add(addr)
        try:
            conn = await self._dial(addr)
        except (SwarmError, aiohttp.ClientError, ConnectionError, TimeoutError, OSError) as exc:
            _log.debug("dial %s failed: %r", addr, exc)
            self.table.failed(addr, time.time())
            conn = None
        finally:
            self._dialing.discard(addr)
        if conn is None:
            if up is not None:
                up.set()
            return
        self._outbound[conn] = None
        try:
            if await self._register(conn):
                self.table.succeeded(addr, conn.node.hex(), time.time())
                if up is not None:
                    up.set()
                await conn.run(self._anti_entropy)
        finally:
            if up is not None:
                up.set()
            self._outbound.pop(conn, None)
            await self._unregister(conn)

    async def _dial(self, addr: str) -> Connection:
        if self._session is None or self._closing:
            raise PeerUnavailable("the peer is closing")
        if self.bans.banned(addr, time.monotonic()):
            raise PeerUnavailable(f"{addr} is banned")
        nonce = new_nonce()
        async with asyncio.timeout(self.config.connect_timeout_s):
            ws = await self._session.ws_connect(
                f"http://{addr}{WS_PATH}", max_msg_size=MAX_FRAME_BYTES, autoping=True, heartbeat=None,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
            )
        try:
            mine = sign_hello(self.identity, swarm=self.swarm_id, listen=self.address,
                              time_ms=int(time.time() * 1000), nonce=nonce)
            await ws.send_bytes(mine.wire)
            hello = await self._receive_hello(ws)
            accept_hello(hello, swarm=self.swarm_id, me=self.node_id, now_ms=int(time.time() * 1000),
                         nonces=None, echo=nonce)
            if self.bans.banned(hello.node, time.monotonic()):
                raise PeerUnavailable(f"{addr}: node is banned")
        except BadHandshake as exc:
            self.stats_total.fail(self.stats_total.handshakes_failed, _handshake_reason(exc))
            await ws.close()
            raise
        except BaseException:
            await ws.close()
            raise
        self.stats_total.connections_out += 1
        return self._connection(ws, hello, inbound=False, addr=addr)

    def _connection(self, ws: WebSocket, hello: Hello, *, inbound: bool, addr: str) -> Connection:
        return Connection(ws, hello, inbound=inbound, addr=addr, handler=self,
                          send_queue_frames=self.config.send_queue_frames, ping_interval_s=self.config.ping_interval_s)

    async def _receive_hello(self, ws: WebSocket, evicted: asyncio.Event | None = None) -> Hello:
        try:
            async with asyncio.timeout(self.config.handshake_timeout_s):
                if evicted is None:
                    msg = await ws.receive()
                else:
                    msg = await self._receive_unless(ws, evicted)
        except TimeoutError:
            raise BadHandshake("hello: none within the handshake timeout") from None
        if msg.type != aiohttp.WSMsgType.BINARY or len(msg.data) > MAX_HELLO_BYTES:
            raise BadHandshake("hello: expected one binary frame")
        return decode_hello(msg.data)

    # -- accepting

    @staticmethod
    async def _receive_unless(ws: WebSocket, evicted: asyncio.Event) -> aiohttp.WSMessage:
        """The next message, or BadHandshake as soon as `evicted` is set (a newer upgrade needs the slot)."""
        async with asyncio.TaskGroup() as tg:
            receive = tg.create_task(ws.receive(), name="swarm-hello")
            evict = tg.create_task(evicted.wait(), name="swarm-hello-evict")
            await asyncio.wait((receive, evict), return_when=asyncio.FIRST_COMPLETED)
            for task in (receive, evict):
                task.cancel()
        if receive.cancelled():
            raise BadHandshake("hello: evicted, half-open too long while others waited")
        return receive.result()

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        if self._closing:
            return web.Response(status=503, text="shutting down")
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, autoping=True, heartbeat=None)
        if not ws.can_prepare(request).ok:
            # before any allowance is spent: plain GETs must not use up the handshakes
            self.stats_total.fail(self.stats_total.refused, "not_websocket")
            return web.Response(status=400, text="websocket upgrade expected")
        host = request.remote or ""
        why = self.admission.admit(host, time.monotonic())
        if why == "half_open" and self._half_open:
            # every half-open slot is taken: the oldest has had the longest to send its hello
            # (an honest peer sends it at once), so it goes and this one takes its place
            evict, released = self._half_open.pop(next(iter(self._half_open)))
            evict.set()
            self.stats_total.fail(self.stats_total.refused, "evicted_half_open")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HALF_OPEN_EVICT_S):
                    await released.wait()
            why = self.admission.admit(host, time.monotonic())
        if why is None and not self._handshakes.take(1.0, time.monotonic()):
            self.admission.release(host, identified=False, kind=None)
            why = "rate"
        if why is not None:
            self.stats_total.fail(self.stats_total.refused, why)
            return web.Response(status=429 if why == "rate" else 503, text=f"refused: {why}")
        slot: list[str | None] = []   # _accept appends the kind of slot once the hello names the node
        evicted, released = asyncio.Event(), asyncio.Event()
        key = object()
        self._half_open[key] = (evicted, released)
        try:
            await ws.prepare(request)
            conn = await self._accept(ws, host, slot, evicted)
            self._half_open.pop(key, None)
            if conn is not None and await self._register(conn):
                try:
                    await conn.run(self._anti_entropy)
                finally:
                    await self._unregister(conn)
            elif conn is not None:
                await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"duplicate connection")
        finally:
            self._half_open.pop(key, None)
            self.admission.release(host, identified=bool(slot), kind=slot[0] if slot else None)
            released.set()
        return ws

    async def _accept(self, ws: web.WebSocketResponse, remote: str, slot: list[str | None],
                      evicted: asyncio.Event) -> Connection | None:
        try:
            hello = await self._receive_hello(ws, evicted)
            now_ms = int(time.time() * 1000)
            accept_hello(hello, swarm=self.swarm_id, me=self.node_id, now_ms=now_ms, nonces=self.nonces)
            if self.bans.banned(hello.node, time.monotonic()):
                self.stats_total.fail(self.stats_total.refused, "banned")
                await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"banned")
                return None
            kind, why = self.admission.admit_identity(remote, hello.node)
            slot.append(kind)
            if kind is None:
                self.stats_total.fail(self.stats_total.refused, why)
                await ws.close(code=aiohttp.WSCloseCode.TRY_AGAIN_LATER, message=b"only reserved slots left")
                return None
            answer = sign_hello(self.identity, swarm=self.swarm_id, listen=self.address, time_ms=now_ms,
                                nonce=new_nonce(), echo=hello.nonce)
            await ws.send_bytes(answer.wire)
        except BadHandshake as exc:
            self.stats_total.fail(self.stats_total.handshakes_failed, _handshake_reason(exc))
            reason = str(exc).encode("ascii", "replace")[:120]  # a close reason is at most 123 bytes
            await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=reason)
            return None
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            return None
        self.stats_total.connections_in += 1
        if hello.listen and self.config.peer_exchange:
            self.table.add(hello.listen, source=group_of(remote))
        conn = self._connection(ws, hello, inbound=True, addr=hello.listen or remote)
        conn.remote_host = remote
        return conn

    async def _handle_spec(self, request: web.Request) -> web.StreamResponse:
        """The signed swarm spec, so a node given only our address can join (swarm/join.py)."""
        return web.Response(body=self._spec_wire, content_type="application/octet-stream")

    async def _handle_bundle(self, request: web.Request) -> web.StreamResponse:
        text = request.match_info.get("sha256", "")
        if not _SHA256_HEX.match(text):
            return web.Response(status=400, text="bundle hash must be 64 lowercase hex digits")
        if self._bundle_source is None:
            return web.Response(status=404, text="no bundles here")
        data = await self._bundle_source(bytes.fromhex(text))
        if data is None:
            return web.Response(status=404, text="no such bundle")
        return web.Response(body=data, content_type="application/octet-stream")

    # -- the connection registry

    async def _register(self, conn: Connection) -> bool:
        existing = self.replicator.conns.get(conn.node)
        if existing is not None and not existing.closed.is_set():
            # keep the connection dialed by the smaller node id, so both ends keep the same one
            preferred_dialer = min(self.node_id, conn.node)
            new_dialer = conn.node if conn.inbound else self.node_id
            if new_dialer != preferred_dialer:
                self.stats_total.fail(self.stats_total.refused, "duplicate")
                return False
            existing.close("replaced by the preferred connection")
        if self._closing:
            return False
        self.replicator.conns[conn.node] = conn
        await self.replicator.notify()
        return True

    async def _unregister(self, conn: Connection) -> None:
        if conn.stats.entries_in >= USEFUL_ENTRIES and conn.stats.score > USEFUL_SCORE:
            self.admission.mark_useful(conn.node)  # it may take a reserved slot when it comes back
        if self.replicator.conns.get(conn.node) is conn:
            del self.replicator.conns[conn.node]
            for reason, n in conn.stats.rejects.items():
                self.stats_total.fail(self.stats_total.closed_peers, reason)
                self.stats_total.closed_peers[reason] += n - 1
            await self.replicator.notify()

    async def _anti_entropy(self, conn: Connection) -> None:
        """Runs inside the connection's TaskGroup: peer exchange, then heads every interval."""
        if self.config.peer_exchange:
            # hints only: where we and our current peers listen, then addresses that answered us
            live = [c.listen for c in self.replicator.conns.values() if c.listen and c is not conn]
            addrs = dict.fromkeys([self.address] + live + self.table.good_addrs(MAX_ADDRS_PER_FRAME, self._rng))
            addrs.pop(conn.listen, None)
            conn.push(Peers(tuple(addrs)[:MAX_ADDRS_PER_FRAME]))
        await self.replicator.send_heads(conn)
        for tick in itertools.count(1):
            interval = self.config.anti_entropy_interval_s
            await asyncio.sleep(interval * self._rng.uniform(0.8, 1.2))
            if tick % (FULL_SYNC_EVERY * FULL_HEADS_EVERY) == 0:
                await self.replicator.send_heads(conn)
            elif tick % FULL_SYNC_EVERY == 0:
                if not await self.replicator.send_heads_delta(conn):
                    conn.push(Digest(await self.replicator.digest()))
            else:
                conn.push(Digest(await self.replicator.digest()))

    # -- Handler callbacks from connections

    async def on_entries(self, conn: Connection, wires: tuple[bytes, ...]) -> None:
        await self.replicator.on_entries(conn, wires)

    async def on_sync(self, conn: Connection, message: SyncMessage) -> None:
        await self.replicator.on_sync(conn, message)

    def on_have(self, conn: Connection, ids: tuple[bytes, ...]) -> None:
        self.replicator.on_have(conn, ids)

    def on_peers(self, conn: Connection, message: Peers) -> None:
        if self.config.peer_exchange:
            source = group_of(conn.remote_host or host_of(conn.addr))
            for addr in message.addrs:
                if conn.addrs_learned >= MAX_ADDRS_FROM_PEER:
                    return  # one peer may tell us only so much over one link
                if addr != self.address:
                    conn.addrs_learned += 1
                    self.table.add(addr, source=source)

    def on_ban(self, conn: Connection) -> None:
        now = time.monotonic()
        self.bans.ban(conn.node, now)
        if not conn.inbound:
            self.bans.ban(conn.addr, now)
        self.stats_total.bans += 1
        _log.warning("banned peer %r: score %.0f, rejects %s", conn, conn.stats.score, dict(conn.stats.rejects))

    async def _save_loop(self) -> None:
        path = self.config.peer_table_path
        while path is not None:
            await asyncio.sleep(TABLE_SAVE_INTERVAL_S)
            try:
                await asyncio.to_thread(self.table.save, path)
            except OSError as exc:
                _log.error("could not save the peer table: %s", exc)
