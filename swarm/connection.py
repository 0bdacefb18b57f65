"""One replication connection over a websocket, after its handshake: frames in, frames out.

Knows nothing about the ledger: decoded messages go to a `Handler` (swarm/links.py, which hands
them to the replicator), and the handler's sends come back through `push` and `send_bulk`.
`Connection` is a few lines over the 250 that STYLE.md asks of a class: its four tasks share the
link's send queue, rate limits, known ids and stats, and splitting them apart would only pass
that state between classes.

Theory of operation. Each connection runs four tasks in its own TaskGroup: the reader (this
task), a writer draining the send queue, a syncer answering anti-entropy (heads pages and
wants), and a pinger measuring round-trip time and closing a silent link. The reader never
waits on our own sends: pushes drop the oldest queued frame when the queue is full, and the
bulk sends of anti-entropy wait for room in the syncer, so two peers that both send a lot can
never wait on each other in a cycle. The reader does wait on the node's ingest queue, which
slows a fast sender down through TCP instead of growing memory.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from ledger.keys import node_id_text, short_id
from swarm.asked import Asked
from swarm.errors import BadMessage, SwarmError
from swarm.handshake import Hello
from swarm.limits import MAX_THROTTLE_S, ConnectionLimits, should_ban
from swarm.protocol import (
    ANSWER_KINDS, MAX_FRAME_BYTES, Digest, Entries, Have, Heads, HeadsDelta, HeldQuery, HeldReply, Message, Peers, Ping, Pong,
    Stamps, Want, WantIds, decode_message, encode_message, frame_kind,
)
from swarm.stats import PeerStats

SEND_QUEUE_FRAMES = 1024      # pushes beyond this drop the oldest queued frame
SYNC_INBOX_MESSAGES = 32      # heads pages and wants waiting for the syncer; more are dropped
SEEN_IDS = 4096               # entry ids this peer is known to hold (sent us, or we sent it)
SENT_FRAUDS = 1024            # fork proof ids sent on this link; forgotten beyond (then re-sent once)
SEND_TIMEOUT_S = 30.0         # one frame onto the socket
PING_INTERVAL_S = 10.0
EARLY_PINGS_S = (1.0, 2.0, 4.0)   # the gaps between the first pings after connecting
IDLE_TIMEOUT_S = 45.0         # nothing at all received for this long: the link is dead
CLOSE_TIMEOUT_S = 2.0
MAX_HELD_QUERIES = 16         # our HeldQuery frames awaiting this peer's reply (below its inbox size)

SENT_STAMPS = 4096            # authors whose stamp went out on this link; forgotten beyond (then re-sent)
SyncMessage = Heads | Want | Digest | HeadsDelta | WantIds | HeldQuery
Request = Heads | Want | Digest | HeadsDelta | WantIds   # what makes the peer send us entries or heads
Answer = Entries | Heads | HeadsDelta   # what a peer sends back to them

_log = logging.getLogger(__name__)

WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def entry_key(wire: bytes) -> bytes:
    """The entry id (sha256 of the payload) of a wire, without decoding it."""
    return hashlib.sha256(wire[96:]).digest()


class Handler(Protocol):
    async def on_entries(self, conn: Connection, wires: tuple[bytes, ...]) -> None: ...
    async def on_sync(self, conn: Connection, message: SyncMessage) -> None: ...
    def on_have(self, conn: Connection, ids: tuple[bytes, ...]) -> None: ...
    def on_peers(self, conn: Connection, message: Peers) -> None: ...
    def on_ban(self, conn: Connection) -> None: ...
    def on_stamps(self, conn: Connection, message: Stamps) -> None: ...


class SendQueue:
    """Frames waiting for the writer: an urgent lane (fork proofs) drained before the normal one."""

    def __init__(self, max_frames: int = SEND_QUEUE_FRAMES) -> None:
        self.max_frames = max_frames
        self._urgent: deque[bytes] = deque()
        self._normal: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._urgent) + len(self._normal)

    def push(self, frame: bytes, *, urgent: bool = False) -> None:
        if len(self) >= self.max_frames:
            (self._normal or self._urgent).popleft()  # gossip is repaired by anti-entropy
            self.dropped += 1
        (self._urgent if urgent else self._normal).append(frame)
        self._ready.set()

    async def put(self, frame: bytes) -> None:
        """Waits for room instead of dropping: for anti-entropy, which must not be lost."""
        while len(self) >= self.max_frames:
            self._space.clear()
            await self._space.wait()
        self._normal.append(frame)
        self._ready.set()

    async def get(self) -> bytes:
        while not len(self):
            self._ready.clear()
            await self._ready.wait()
        frame = self._urgent.popleft() if self._urgent else self._normal.popleft()
        self._space.set()
        return frame


class Connection:
    def __init__(
        self, ws: WebSocket, hello: Hello, *, inbound: bool, addr: str, handler: Handler,
        send_queue_frames: int = SEND_QUEUE_FRAMES, ping_interval_s: float = PING_INTERVAL_S,
    ) -> None:
        self.ws = ws
        self.node = hello.node
        self.listen = hello.listen
        self.inbound = inbound
        self.addr = addr
        self.handler = handler
        self.ping_interval_s = ping_interval_s
        self.stats = PeerStats(node_id_text(hello.node), addr, inbound, int(time.time() * 1000))
        self.limits = ConnectionLimits.fresh(time.monotonic())
        self.sendq = SendQueue(send_queue_frames)
        self.inbox: asyncio.Queue[SyncMessage] = asyncio.Queue(maxsize=SYNC_INBOX_MESSAGES)
        self.sent_frauds: set[bytes] = set()  # fork proof ids already sent on this link (see note_fraud)
        self.peer_digest: bytes | None = None  # the heads digest the peer sent last
        self.sent_heads: dict[bytes, tuple[int, bytes]] | None = None  # heads last sent here (deltas)
        self.held_queries: dict[int, asyncio.Future[bool]] = {}  # our open HeldQuery nonces
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._pings: dict[int, float] = {}
        # the lowest round trip seen: the link's own delay without the moments our loop was busy
        self.rtt_min_ms: float | None = None
        self._last_in_s = time.monotonic()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.opened_s = time.monotonic()
        self.remote_host = ""        # the address the socket came from (inbound; set by the peer)
        self.addrs_learned = 0       # addresses this peer told us (bounded by the peer)
        self.asked = Asked()         # what we asked this peer for: its answers escape quota penalties
        self.stamps_sent: OrderedDict[bytes, None] = OrderedDict()  # authors whose stamp it has from us
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Connection {short_id(self.node)} {'in' if self.inbound else 'out'} {self.addr}>"

    # -- what the handler calls

    def knows(self, entry_id: bytes) -> bool:
        return entry_id in self._seen

    def mark_known(self, entry_id: bytes) -> None:
        self._seen[entry_id] = None
        self._seen.move_to_end(entry_id)
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)

    def note_fraud(self, entry_id: bytes) -> None:
        if len(self.sent_frauds) >= SENT_FRAUDS:
            self.sent_frauds.clear()
        self.sent_frauds.add(entry_id)

    def push(self, message: Message, *, urgent: bool = False) -> None:
        if isinstance(message, Request):
            self.limits.note_request(time.monotonic())
            self.asked.note(message, time.monotonic())
        self.push_frame(encode_message(message), urgent=urgent)

    def push_frame(self, frame: bytes, *, urgent: bool = False) -> None:
        """Queues an encoded frame; a full queue drops its oldest frame (counted)."""
        if self.closed.is_set():
            return
        before = self.sendq.dropped
        self.sendq.push(frame, urgent=urgent)
        self.stats.dropped_out += self.sendq.dropped - before

    async def send_bulk(self, message: Message) -> None:
        if not self.closed.is_set():
            if isinstance(message, Request):
                self.limits.note_request(time.monotonic())
                self.asked.note(message, time.monotonic())
            await self.sendq.put(encode_message(message))

    def ask_held(self, entry_id: bytes) -> asyncio.Future[bool] | None:
        """Sends a HeldQuery; the future gets the peer's one answer. None: too many are open."""
        if self.closed.is_set() or len(self.held_queries) >= MAX_HELD_QUERIES:
            return None
        nonce = secrets.randbits(62)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.held_queries[nonce] = future
        self.push(HeldQuery(nonce, entry_id), urgent=True)
        return future

    def misbehaved(self, reason: str, times: int = 1) -> None:
        """Counts bad input by reason; a peer whose score falls too low is banned and dropped."""
        self.stats.reject(reason, times)
        self.stats.score = self.limits.score.penalize(reason, time.monotonic(), times)
        if should_ban(self.stats.score) and not self.closed.is_set():
            self.handler.on_ban(self)
            self.close(f"banned: {reason}")

    def close(self, reason: str) -> None:
        """Asks the connection to end; `run` returns soon after. Idempotent."""
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()

    # -- running

    async def run(self, extra: Callable[[Connection], Coroutine[Any, Any, None]] | None = None) -> None:
        """Runs until the link drops, the peer misbehaves too much, or `close` is called.

        `extra` (the peer's anti-entropy loop) runs beside the link's own tasks and ends with them.
        """
        try:
            async with asyncio.TaskGroup() as tg:
                name = short_id(self.node)
                tasks = [
                    tg.create_task(self._read_loop(), name=f"swarm-read:{name}"),
                    tg.create_task(self._write_loop(), name=f"swarm-write:{name}"),
                    tg.create_task(self._sync_loop(), name=f"swarm-sync:{name}"),
                    tg.create_task(self._ping_loop(), name=f"swarm-ping:{name}"),
                ]
                if extra is not None:
                    tasks.append(tg.create_task(extra(self), name=f"swarm-anti-entropy:{name}"))
                await self.closed.wait()
                for task in tasks:
                    task.cancel()
        except* (SwarmError, aiohttp.ClientError, ConnectionError, TimeoutError) as group:
            self.close(f"link error: {group.exceptions[0]!r}")
        except* Exception as group:  # a bug must end this link, never the node
            _log.error("connection %r failed", self, exc_info=group.exceptions[0])
            self.close("internal error")
        finally:
            self.closed.set()
            for future in self.held_queries.values():
                future.cancel()
            self.held_queries.clear()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    reason = self.close_reason.encode("ascii", "replace")[:120]  # at most 123 bytes
                    await self.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=reason)
            except (TimeoutError, aiohttp.ClientError, ConnectionError, RuntimeError):
                pass

    async def _read_loop(self) -> None:
        try:
            await self._read()
        finally:
            self.close(self.close_reason or "peer closed")

    async def _read(self) -> None:
        while not self.closed.is_set():
            msg = await self.ws.receive()
            self._last_in_s = time.monotonic()
            if msg.type == aiohttp.WSMsgType.BINARY:
                await self._on_frame(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self.stats.frames_in += 1
                self.misbehaved("text_frame")
            elif msg.type == aiohttp.WSMsgType.ERROR:
                # aiohttp reports a frame over max_msg_size (or a protocol error) and closes
                self.misbehaved("oversized" if "size" in str(msg.data).lower() else "malformed")
                return
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return

    async def _on_frame(self, data: bytes) -> None:
        self.stats.frames_in += 1
        self.stats.bytes_in += len(data)
        if len(data) > MAX_FRAME_BYTES:
            self.misbehaved("oversized")
            return
        now = time.monotonic()
        if frame_kind(data) in ANSWER_KINDS and self.limits.requested(now):
            # an answer to our request: slowed down (the reader waits, the peer slows through
            # TCP), never penalized — we asked for it
            wait_s = self.limits.answer_wait_s(len(data), now)
            if wait_s > 0:
                self.stats.throttled_in += 1
                await asyncio.sleep(wait_s)
        elif not self.limits.admit(len(data), now):
            self.misbehaved("rate")
            return
        try:
            message = decode_message(data)
        except BadMessage:
            self.misbehaved("malformed")
            return
        if isinstance(message, Entries):
            await self.handler.on_entries(self, message.wires)
        elif isinstance(message, Have):
            self.handler.on_have(self, message.ids)
        elif isinstance(message, Stamps):
            self.handler.on_stamps(self, message)
        elif isinstance(message, HeldReply):
            future = self.held_queries.pop(message.nonce, None)  # each query is answered once
            if future is None:
                self.misbehaved("unexpected")
            elif not future.done():
                future.set_result(message.held)
        elif isinstance(message, Heads | Want | Digest | HeadsDelta | WantIds | HeldQuery):
            # heads, deltas, wants by seq and digests each look at our whole heads table or a feed,
            # so they share a small budget; a want by id or a held query is a few lookups by id,
            # bounded by the frame rate and the inbox
            costly = not isinstance(message, WantIds | HeldQuery)
            if costly and not self.limits.syncs.take(1.0, time.monotonic()):
                if not (isinstance(message, Answer) and await self._throttled_sync()):
                    self.misbehaved("rate")
                    return
            try:
                self.inbox.put_nowait(message)
            except asyncio.QueueFull:
                self.misbehaved("rate")
        elif isinstance(message, Ping):
            self.push(Pong(message.nonce), urgent=True)
        elif isinstance(message, Pong):
            sent = self._pings.pop(message.nonce, None)
            if sent is None:
                self.misbehaved("unexpected")
            else:
                self.stats.rtt_ms = round((time.monotonic() - sent) * 1000, 3)
                if self.rtt_min_ms is None or self.stats.rtt_ms < self.rtt_min_ms:
                    self.rtt_min_ms = self.stats.rtt_ms
        else:
            self.handler.on_peers(self, message)

    async def _throttled_sync(self) -> bool:
        """A heads page over the sync budget that answers our request waits for it (bounded)."""
        now = time.monotonic()
        if not self.limits.requested(now):
            return False
        wait_s = self.limits.syncs.wait_s(1.0, now)
        if wait_s > MAX_THROTTLE_S:
            return False
        self.stats.throttled_in += 1
        await asyncio.sleep(wait_s)
        return self.limits.syncs.take(1.0, time.monotonic())

    async def _write_loop(self) -> None:
        while True:
            frame = await self.sendq.get()
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self.ws.send_bytes(frame)
            self.stats.frames_out += 1
            self.stats.bytes_out += len(frame)

    async def _sync_loop(self) -> None:
        while True:
            message = await self.inbox.get()
            await self.handler.on_sync(self, message)

    async def _ping_loop(self) -> None:
        # one ping at once, and a few soon after: the round trip is known from the start
        # (replication's pull timer uses the lowest), even if the first ones met a busy loop
        self._pings[secrets.randbits(62)] = time.monotonic()
        self.push(Ping(next(iter(self._pings))), urgent=True)
        for interval_s in itertools.chain(EARLY_PINGS_S, itertools.repeat(self.ping_interval_s)):
            await asyncio.sleep(min(interval_s, self.ping_interval_s))
            now = time.monotonic()
            if now - self._last_in_s > max(IDLE_TIMEOUT_S, 3 * self.ping_interval_s):
                self.close("idle")
                return
            if len(self._pings) > 8:
                self._pings.clear()  # never answered: do not grow
            nonce = secrets.randbits(62)
            self._pings[nonce] = now
            self.push(Ping(nonce), urgent=True)
