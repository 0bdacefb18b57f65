"""Replication: push gossip of new entries and anti-entropy of feeds, over open connections.

Knows nothing about sockets or handshakes (swarm/connection.py, swarm/peer.py) and reaches the
ledger only through swarm/ledgerport.py; its pure rules live in swarm/heads.py.

Theory of operation
- Ingest. Every connection's entry frames go to one bounded queue; one task drains it into
  `append_wires` batches, so many peers' frames share one transaction (group commit) and a fast
  sender waits, through TCP, instead of growing memory. A wire whose id and signature we hold
  already is counted as a duplicate before the ledger sees it.
- Push. An entry the ledger APPENDED goes to every connected peer that is not known to hold it
  (it sent it to us, announced it, or we sent it before). Our own entries and fork proofs go in
  full to all of them, so neighbours cannot hide them. Others' entries go in full to
  `eager_fanout` of them (chosen at random) and are announced by id (`Have`) to the rest: a
  flood in full would carry every entry over every link, ~degree copies per node. Only appended
  entries travel: never a rejected, waiting or forked one. Fork proofs go in the urgent lane.
- Pull. An announced id we do not hold becomes a pull: after PULL_RTT_FACTOR round trips of the
  announcer's link (time for a full copy on its way to land; PULL_AFTER_S at most, and while no
  round trip is measured) we ask its first announcer (`WantIds`); one that has not delivered within
  WANT_TIMEOUT_S is passed over for the next announcer, and with none left the pull is dropped:
  anti-entropy fills the gap. Pulls are bounded in all and per announcing peer, so a peer that
  announces ids it never serves costs a timeout, never a stall.
- Waiting entries. An entry that waits in the store's pending area is not reported when its
  dependency arrives, so we track it (bounded) and a repair pass finds it appended, forwards it,
  or, if it still waits, asks the peer that sent it for the missing part of the feed.
- Anti-entropy. On connect each side sends its {author: highest seq} in pages over author
  ranges; for each page the receiver sends what the sender lacks, fork proofs first, in frames
  through the bounded send queue. Every interval after that each side sends only a digest of
  its table; a peer that gets the same digest twice in a row, different from its own, answers
  with its full pages and so gets what it lacks. Every FULL_SYNC_EVERY-th interval a heads
  delta goes instead: only the rows that changed since the heads last sent on that link, so a
  busy swarm (digests never stand still) still repairs without resending every author's row.
  The receiver sends what the sender lacks among those rows and asks (`Want`) for what it lacks
  itself. A lost delta is repaired by the digest rule above, and every FULL_HEADS_EVERY-th
  delta round sends the full pages anyway.
- Forks. A FORK outcome carries the proof; we publish it as our own `fraud` entry (once per
  proof) and push it to everyone first.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from ledger.bodies import Body, Fraud
from ledger.entry import Entry, decode_entry
from ledger.errors import InvalidEntry
from ledger.keys import Identity
from swarm.connection import Connection, SyncMessage, entry_key
from swarm.errors import SwarmError
from swarm.heads import Tips, compare_rows, heads_delta, heads_pages, lacking, pack_frames, split_targets
from swarm.ledgerport import BLAMED, LedgerPort, Result, Verdict
from swarm.protocol import (
    MAX_HEADS_PER_FRAME, MAX_IDS_PER_FRAME, MAX_WANTS_PER_FRAME, TIP_BYTES,
    Digest, Entries, Have, Heads, HeadsDelta, HeldQuery, HeldReply, Want, WantIds, encode_message,
)

INGEST_QUEUE_FRAMES = 256       # entry frames waiting for the ledger, all peers together
INGEST_BATCH_WIRES = 256        # wires per append_wires call at most
KNOWN_IDS = 65_536              # recently held entry ids -> signature, to skip duplicates early
RECENT_WIRES = 2_048            # recently appended wires kept in memory: pulls ask for these (no SQLite read)
TRACKED_PENDING = 10_000        # waiting entries we watch (the store's pending area is as big)
TRACKED_PENDING_TTL_S = 300.0
PENDING_PER_LINK = 1_000        # waiting entries one link may have sent us: a tenth of the store's area
REPAIR_INTERVAL_S = 0.5
WANT_AFTER_S = 0.5              # a gap older than this is asked for
SYNC_READ_ENTRIES = 256         # per wires_after call
MAX_SYNC_ENTRIES_PER_PAGE = 20_000  # one heads page answers at most this many; the next round goes on
MAX_FRAUDS = 256                # fork proofs kept to send first on every link
SUBSCRIBER_QUEUE = 1024
EAGER_FANOUT = 1                # peers that get a forwarded entry in full; the others get its id
PULL_AFTER_S = 0.5              # an announced entry not here by then is asked for (an eager copy may be on its way)
PULL_RTT_FACTOR = 1.5           # ... or sooner: this many round trips of the announcer's link (measured)
PULL_MIN_S = 0.01
WANT_TIMEOUT_S = 2.0            # an asked announcer that has not delivered by then is passed over
PULL_TICK_S = 0.002             # pulls falling due within this are asked together (fewer frames)
MAX_PULLS = 16_384              # announced ids we lack and track, all peers together
MAX_PULLS_PER_PEER = 2_048      # of them first announced by one peer
MAX_ANNOUNCERS = 8              # peers remembered per pull

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Waiting:
    wire: bytes
    entry: Entry
    origin: Connection | None
    since_s: float


@dataclass(slots=True)
class _Pull:
    """An entry a peer announced and we lack."""

    first: Connection                  # its first announcer (for the per-peer bound)
    announcers: list[Connection]
    due_s: float                       # when to ask (again); its (due_s, id) is in the due heap
    asked: list[Connection] = field(default_factory=list)


class Replicator:
    """Moves entries between the ledger and the connections the peer registers in `conns`."""

    def __init__(self, port: LedgerPort, identity: Identity, *, batch_wires: int = INGEST_BATCH_WIRES,
                 eager_fanout: int | None = EAGER_FANOUT, rng: random.Random | None = None) -> None:
        self.port = port
        self.identity = identity
        self.batch_wires = batch_wires
        self.eager_fanout = eager_fanout   # None: every entry in full to every peer (a plain flood)
        self.pull_after_s = PULL_AFTER_S
        self.want_timeout_s = WANT_TIMEOUT_S
        self._rng = rng or random.Random()
        self.heads_page_size = MAX_HEADS_PER_FRAME
        self.conns: dict[bytes, Connection] = {}
        self.changed = asyncio.Condition()   # notified after every ingest batch and publish
        self.appended_total = 0
        self.subscriber_dropped = 0
        self.frauds_published = 0
        self.released = 0          # entries the store appended from its pending area, then forwarded
        self.pulls_asked = 0       # ids asked for by WantIds
        self.pulls_passed_over = 0  # asks that timed out, so the next announcer was asked
        self.pulls_dropped = 0     # pulls given up (no announcer left) or refused (bounds): anti-entropy's
        self._pulls: OrderedDict[bytes, _Pull] = OrderedDict()
        self._pulls_by_peer: dict[Connection, int] = {}
        self._pull_wake = asyncio.Event()   # a pull fell due sooner than the pull loop sleeps
        self._pull_due: list[tuple[float, bytes]] = []  # heap of (due_s, id); stale rows skipped
        self._queue: asyncio.Queue[tuple[Connection | None, tuple[bytes, ...]]] = asyncio.Queue(
            maxsize=INGEST_QUEUE_FRAMES
        )
        self._known: OrderedDict[bytes, bytes] = OrderedDict()  # entry id -> signature
        self._recent: OrderedDict[bytes, bytes] = OrderedDict()  # entry id -> wire, the newest RECENT_WIRES
        self._inflight: dict[bytes, bytes] = {}  # queued for the ledger: id -> signature (bounded by the queue)
        self._waiting: OrderedDict[tuple[bytes, int], _Waiting] = OrderedDict()
        self._waiting_by_link: dict[Connection, int] = {}  # of _waiting, how many each link sent
        self._release_lock = asyncio.Lock()  # one release pass at a time (ingest and repair both run one)
        self._frauds: OrderedDict[bytes, bytes] = OrderedDict()  # fraud entry id -> wire
        self._published_proofs: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self._subscribers: set[asyncio.Queue[Entry]] = set()
        self._tips_cache: tuple[int, Tips, list[bytes], dict[bytes, bytes]] | None = None
        self._digest: tuple[int, bytes] | None = None

    # -- background tasks (owned by the peer's TaskGroup)

    async def run_ingest(self) -> None:
        while True:
            origin, wires = await self._queue.get()
            batch = [(origin, w) for w in wires]
            while len(batch) < self.batch_wires and not self._queue.empty():
                origin, wires = self._queue.get_nowait()
                batch.extend((origin, w) for w in wires)
            try:
                results = await self.port.append_wires([w for _, w in batch])
                await self._dispatch(batch, results)
            except SwarmError as exc:
                _log.error("ingest batch of %d failed: %s", len(batch), exc)
            finally:
                for _, wire in batch:
                    self._inflight.pop(entry_key(wire), None)
            await self.notify()

    async def run_repair(self) -> None:
        while True:
            await asyncio.sleep(REPAIR_INTERVAL_S)
            try:
                await self._repair(time.monotonic())
            except SwarmError as exc:
                _log.error("repair pass failed: %s", exc)

    async def run_pull(self) -> None:
        while True:
            self._pull_wake.clear()
            self._pull(time.monotonic())
            sleep_s = None if not self._pull_due else max(PULL_TICK_S, self._pull_due[0][0] - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep_s):
                    await self._pull_wake.wait()
            await asyncio.sleep(PULL_TICK_S)

    # -- what connections call

    def on_have(self, conn: Connection, ids: tuple[bytes, ...]) -> None:
        now = time.monotonic()
        for eid in ids:
            conn.mark_known(eid)
            pull = self._pulls.get(eid)
            if pull is not None:
                if conn not in pull.announcers and len(pull.announcers) < MAX_ANNOUNCERS:
                    pull.announcers.append(conn)
            elif eid not in self._known and eid not in self._inflight:
                if len(self._pulls) >= MAX_PULLS or self._pulls_by_peer.get(conn, 0) >= MAX_PULLS_PER_PEER:
                    self.pulls_dropped += 1
                    continue
                due_s = now + self.pull_delay_s(conn.rtt_min_ms)
                if not self._pull_due or due_s < self._pull_due[0][0]:
                    self._pull_wake.set()
                self._pulls[eid] = _Pull(conn, [conn], due_s)
                heapq.heappush(self._pull_due, (due_s, eid))
                self._pulls_by_peer[conn] = self._pulls_by_peer.get(conn, 0) + 1

    def pull_delay_s(self, rtt_ms: float | None) -> float:
        """How long an announced entry may take to come in full from another peer before we ask.

        About one in three peers gets no full copy at all (each holder sends one to a random
        peer), so every wait is pure delay for them: wait about as long as a copy takes over the
        announcer's own link, never longer than pull_after_s (also used while no RTT is known)."""
        if rtt_ms is None:
            return self.pull_after_s
        return min(self.pull_after_s, max(PULL_MIN_S, PULL_RTT_FACTOR * rtt_ms / 1000))

    async def on_entries(self, conn: Connection, wires: tuple[bytes, ...]) -> None:
        fresh = []
        for wire in wires:
            eid = entry_key(wire)
            conn.mark_known(eid)
            # the same bytes (signature included) held or on their way in: a duplicate. A copy
            # with another signature goes on to be checked, so a forged copy cannot shadow it.
            signature = wire[32:96]
            if self._known.get(eid) == signature or self._inflight.get(eid) == signature:
                conn.stats.duplicates_in += 1
            else:
                self._inflight[eid] = signature
                fresh.append(wire)
        if fresh:
            await self._queue.put((conn, tuple(fresh)))

    async def on_sync(self, conn: Connection, message: SyncMessage) -> None:
        try:
            if isinstance(message, HeldQuery):
                conn.push(HeldReply(message.nonce, await self.port.holds(message.entry_id)), urgent=True)
                return
            if isinstance(message, WantIds):
                await self._serve_ids(conn, message.ids)
                return
            await self._send_frauds(conn)
            if isinstance(message, Digest):
                # Tables differ all the time while entries are in flight, and pushes settle
                # that. Act only when the peer's table stood still for a whole interval yet
                # differs from ours: then our heads make it send what we lack.
                stable = message.digest == conn.peer_digest
                conn.peer_digest = message.digest
                await self.notify()  # Peer.wait_synced compares it with ours
                if stable and message.digest != await self.digest():
                    await self.send_heads(conn)
                return
            if isinstance(message, Heads):
                mine, authors = await self._tips()
                wants = lacking(mine, authors, message)
            elif isinstance(message, HeadsDelta):
                mine, _ = await self._tips()
                wants, asks = compare_rows(mine, message.heads)
                for start in range(0, len(asks), MAX_WANTS_PER_FRAME):
                    conn.push(Want(tuple(asks[start:start + MAX_WANTS_PER_FRAME])))
            else:
                wants = [(author, after, b"") for author, after in message.wants]
            budget = MAX_SYNC_ENTRIES_PER_PAGE
            for author, after, tip in wants:
                budget = await self._send_feed(conn, author, after, tip, budget)
                if budget <= 0:
                    break
        except SwarmError as exc:
            _log.error("anti-entropy towards %r failed: %s", conn, exc)

    async def send_heads(self, conn: Connection) -> None:
        """Starts an anti-entropy round towards `conn`: our heads, page by page."""
        mine, _ = await self._tips()
        conn.sent_heads = mine   # never mutated: _tips builds a new table when the ledger moves
        for page in heads_pages(mine, self.heads_page_size):
            await conn.send_bulk(page)

    async def send_heads_delta(self, conn: Connection) -> bool:
        """Our heads rows that changed since the last heads sent to `conn`; False if none did."""
        mine, _ = await self._tips()
        head_ids = self._tips_cache[3] if self._tips_cache is not None else {}
        rows = heads_delta(conn.sent_heads, mine, lambda author: author in head_ids and conn.knows(head_ids[author]))
        conn.sent_heads = mine
        for start in range(0, len(rows), MAX_HEADS_PER_FRAME):
            await conn.send_bulk(HeadsDelta(tuple(rows[start:start + MAX_HEADS_PER_FRAME])))
        return bool(rows)

    async def digest(self) -> bytes:
        """sha256 over our sorted heads table; equal digests mean equal tables."""
        count = await self.port.count()
        if self._digest is None or self._digest[0] != count:
            mine, authors = await self._tips()
            h = hashlib.sha256()
            for author in authors:
                seq, tip = mine[author]
                h.update(author + seq.to_bytes(8, "big") + tip)
            self._digest = (count, h.digest())
        return self._digest[1]

    async def _tips(self) -> tuple[Tips, list[bytes]]:
        """Our heads with tips and the sorted authors, cached until the ledger's row count moves
        (every anti-entropy message of every link would otherwise rebuild them)."""
        count = await self.port.count()
        if self._tips_cache is None or self._tips_cache[0] != count:
            heads = await self.port.heads_ids()
            mine = {a: (seq, eid[:TIP_BYTES]) for a, (seq, eid) in heads.items()}
            self._tips_cache = (count, mine, sorted(mine), {a: eid for a, (_, eid) in heads.items()})
        return self._tips_cache[1], self._tips_cache[2]

    # -- publishing our own entries

    async def publish(self, body: Body) -> Entry:
        entry = await self.port.publish(self.identity, body, int(time.time() * 1000))
        self.announce(entry)
        await self.notify()
        return entry

    def announce(self, entry: Entry) -> None:
        """Pushes an entry already in our ledger (e.g. published by the node directly)."""
        self._remember(entry.id, entry.wire)
        self._appended(entry, None)

    @contextlib.asynccontextmanager
    async def subscribe(self, maxsize: int = SUBSCRIBER_QUEUE) -> AsyncIterator[asyncio.Queue[Entry]]:
        """Every entry appended through replication or publish, while the context is open."""
        queue: asyncio.Queue[Entry] = asyncio.Queue(maxsize=maxsize)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    # -- internals

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def _remember(self, eid: bytes, wire: bytes) -> None:
        self._drop_pull(eid)
        self._known[eid] = wire[32:96]
        self._known.move_to_end(eid)
        if len(self._known) > KNOWN_IDS:
            self._known.popitem(last=False)
        self._recent[eid] = wire
        if len(self._recent) > RECENT_WIRES:
            self._recent.popitem(last=False)

    async def _dispatch(self, batch: list[tuple[Connection | None, bytes]], results: list[Result]) -> None:
        appended_authors: set[bytes] = set()
        for (origin, wire), result in zip(batch, results):
            if result.verdict is Verdict.APPENDED:
                entry = result.entry or decode_entry(wire, signature_checked=True)
                self._remember(entry.id, wire)
                if origin is not None:
                    origin.stats.entries_in += 1
                appended_authors.add(entry.author)
                self._appended(entry, origin)
            elif result.verdict is Verdict.DUPLICATE:
                self._remember(entry_key(wire), wire)
                appended_authors.add(wire[:32])  # a copy of a waiting entry: it may be held now
                if origin is not None:
                    origin.stats.duplicates_in += 1
            elif result.verdict is Verdict.PENDING:
                if origin is not None:
                    origin.stats.pending_in += 1
                    if self._waiting_by_link.get(origin, 0) >= PENDING_PER_LINK:
                        # more waiting entries than one link's share of the area: its flood, not ours
                        origin.misbehaved("pending_flood")
                self._track(wire, origin)
            elif result.verdict is Verdict.FORK:
                if origin is not None:
                    origin.misbehaved("fork")
                if result.fraud is not None:
                    await self._publish_fraud(result.fraud)
            elif origin is not None:
                if result.reason in BLAMED:
                    origin.misbehaved(result.reason)
                elif result.reason == "pending_full" and self._waiting_by_link.get(origin, 0) >= PENDING_PER_LINK:
                    origin.misbehaved("pending_full")  # the area is full of this sender's entries
                else:
                    origin.stats.reject(result.reason)
        if appended_authors and self._waiting:
            await self._release(lambda w: w.entry.author in appended_authors)

    def _appended(self, entry: Entry, origin: Connection | None) -> None:
        self.appended_total += 1
        urgent = isinstance(entry.body, Fraud)
        if urgent:
            self._frauds[entry.id] = entry.wire
            if len(self._frauds) > MAX_FRAUDS:
                self._frauds.popitem(last=False)
        targets = [c for c in self.conns.values() if c is not origin and not c.knows(entry.id)]
        lazy: list[Connection]
        if urgent or entry.author == self.identity.public_key:
            full, lazy = targets, []
        else:
            full, lazy = split_targets(targets, self.eager_fanout, self._rng)
        frame = encode_message(Entries((entry.wire,)))
        for conn in full:
            conn.mark_known(entry.id)
            if urgent:
                conn.note_fraud(entry.id)
            conn.push_frame(frame, urgent=urgent)
            conn.stats.entries_out += 1
        if lazy:
            have = encode_message(Have((entry.id,)))
            for conn in lazy:
                conn.mark_known(entry.id)
                conn.push_frame(have)
        for queue in self._subscribers:
            try:
                queue.put_nowait(entry)
            except asyncio.QueueFull:
                self.subscriber_dropped += 1

    async def _publish_fraud(self, proof: Fraud) -> None:
        key = (proof.first, proof.second)
        if key in self._published_proofs:
            return
        self._published_proofs[key] = None
        if len(self._published_proofs) > MAX_FRAUDS:
            self._published_proofs.popitem(last=False)
        try:
            await self.publish(proof)
            self.frauds_published += 1
        except SwarmError as exc:
            _log.error("could not publish a fork proof: %s", exc)

    def _track(self, wire: bytes, origin: Connection | None) -> None:
        try:
            entry = decode_entry(wire, signature_checked=True)
        except InvalidEntry:
            return  # the ledger accepted it to wait, so this does not happen; never trust it
        slot = (entry.author, entry.seq)
        if slot in self._waiting:
            return
        self._waiting[slot] = _Waiting(wire, entry, origin, time.monotonic())
        if origin is not None:
            self._waiting_by_link[origin] = self._waiting_by_link.get(origin, 0) + 1
        if len(self._waiting) > TRACKED_PENDING:
            self._unwait(next(iter(self._waiting)))

    def _unwait(self, slot: tuple[bytes, int]) -> None:
        waiting = self._waiting.pop(slot)
        if waiting.origin is not None:
            left = self._waiting_by_link.get(waiting.origin, 1) - 1
            if left > 0:
                self._waiting_by_link[waiting.origin] = left
            else:
                self._waiting_by_link.pop(waiting.origin, None)

    async def _release(self, pick: Callable[[_Waiting], bool] | None) -> None:
        """Forwards tracked entries that the store has since appended from its pending area.

        run_ingest (after a batch) and run_repair (on its timer) both call this, and each awaits
        the ledger between looking at a slot and taking it; the lock makes one pass at a time,
        and a slot is taken only if it still holds the same waiting entry (_track may have
        evicted or replaced it during the await)."""
        async with self._release_lock:
            for slot, waiting in list(self._waiting.items()):
                if pick is not None and not pick(waiting):
                    continue
                if await self.port.head_seq(waiting.entry.author) < waiting.entry.seq:
                    continue
                if self._waiting.get(slot) is not waiting:
                    continue
                self._unwait(slot)
                if not await self.port.holds(waiting.entry.id):
                    continue  # dropped from the pending area (e.g. its chain broke): never forwarded
                self._remember(waiting.entry.id, waiting.wire)
                self.released += 1
                self._appended(waiting.entry, waiting.origin)

    async def _repair(self, now_s: float) -> None:
        if not self._waiting:
            return
        before = self.appended_total
        await self._release(None)
        if self.appended_total != before:
            await self.notify()
        wants: dict[Connection, dict[bytes, int]] = {}
        for slot, waiting in list(self._waiting.items()):
            if self._waiting.get(slot) is not waiting:
                continue  # taken by a release pass while we awaited the ledger below
            age = now_s - waiting.since_s
            if age > TRACKED_PENDING_TTL_S:
                self._unwait(slot)
                continue
            origin = waiting.origin
            if age < WANT_AFTER_S or origin is None or origin.closed.is_set():
                continue
            author = waiting.entry.author
            per = wants.setdefault(origin, {})
            if author not in per and len(per) < MAX_WANTS_PER_FRAME:
                per[author] = await self.port.head_seq(author)
            waiting.since_s = now_s  # ask again only after another WANT_AFTER_S
        for conn, per in wants.items():
            conn.push(Want(tuple(per.items())))

    def _drop_pull(self, eid: bytes) -> None:
        pull = self._pulls.pop(eid, None)
        if pull is not None:
            left = self._pulls_by_peer.get(pull.first, 1) - 1
            if left > 0:
                self._pulls_by_peer[pull.first] = left
            else:
                self._pulls_by_peer.pop(pull.first, None)

    def _pull(self, now_s: float) -> None:
        """Asks for announced entries still missing: each from an announcer not asked before."""
        asks: dict[Connection, list[bytes]] = {}
        later: list[tuple[float, bytes]] = []
        while self._pull_due and self._pull_due[0][0] <= now_s:
            due_s, eid = heapq.heappop(self._pull_due)
            pull = self._pulls.get(eid)
            if pull is None or pull.due_s != due_s:
                continue  # dropped, or rescheduled (its newer row is in the heap)
            if eid in self._known or eid in self._inflight:
                self._drop_pull(eid)
                continue
            if pull.asked:
                self.pulls_passed_over += 1
            fresh = [c for c in pull.announcers if c not in pull.asked and not c.closed.is_set()]
            if not fresh:
                self._drop_pull(eid)
                self.pulls_dropped += 1
                continue
            batch = asks.setdefault(fresh[0], [])
            if len(batch) >= MAX_IDS_PER_FRAME:
                pull.due_s = now_s + PULL_TICK_S  # one frame per peer per tick: the rest go next tick
                later.append((pull.due_s, eid))
                continue
            batch.append(eid)
            pull.asked.append(fresh[0])
            pull.due_s = now_s + self.want_timeout_s
            later.append((pull.due_s, eid))
        for row in later:
            heapq.heappush(self._pull_due, row)
        for conn, ids in asks.items():
            self.pulls_asked += len(ids)
            conn.push(WantIds(tuple(ids)))

    async def _serve_ids(self, conn: Connection, ids: tuple[bytes, ...]) -> None:
        # a pull asks for entries announced a moment ago: nearly always still in memory
        wires = [w for w in [self._recent.get(eid) or await self.port.wire(eid) for eid in ids] if w is not None]
        for wire in wires:
            conn.mark_known(entry_key(wire))
        for frame in pack_frames(wires):
            await conn.send_bulk(frame)
            conn.stats.entries_out += len(frame.wires)

    async def _send_frauds(self, conn: Connection) -> None:
        for eid, wire in list(self._frauds.items()):
            if eid not in conn.sent_frauds:
                conn.note_fraud(eid)
                conn.mark_known(eid)
                conn.push(Entries((wire,)), urgent=True)

    async def _send_feed(self, conn: Connection, author: bytes, after: int, tip: bytes, budget: int) -> int:
        if tip and after >= 1:
            # our entry at their head's seq: if it is not theirs, it proves a fork there
            ours = await self.port.wires_after(author, after - 1, 1)
            if ours and entry_key(ours[0])[: len(tip)] != tip:
                await conn.send_bulk(Entries((ours[0],)))
        while budget > 0:
            wires = await self.port.wires_after(author, after, min(SYNC_READ_ENTRIES, budget))
            if not wires:
                break
            after += len(wires)  # a held feed has every seq from 1 to its head
            budget -= len(wires)
            # the peer's heads say it lacks these: send even those we once pushed (a push may
            # have been dropped from a full queue); a copy in flight is a cheap duplicate there
            for wire in wires:
                conn.mark_known(entry_key(wire))
            for frame in pack_frames(wires):
                await conn.send_bulk(frame)
                conn.stats.entries_out += len(frame.wires)
            if len(wires) < SYNC_READ_ENTRIES:
                break
        return budget
