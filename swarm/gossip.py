"""Replication: push gossip of new entries and anti-entropy of feeds, over open connections.

Owns what happens to an entry the ledger judged (push, fork proofs, subscribers) and composes
the parts: swarm/ingest.py (the ingest queue and the duplicates it skips), swarm/pulls.py
(announced ids we lack), swarm/waiting.py (entries waiting in the store's pending area) and
swarm/antientropy.py (heads, digests, fork proofs and the feeds a peer lacks); when to start an
anti-entropy round is swarm/links.py's. Knows nothing about sockets or handshakes
(swarm/connection.py, swarm/peer.py) and reaches the ledger only through swarm/ledgerport.py;
its pure rules live in swarm/heads.py.
`Replicator` is about 265 lines, over the 250 STYLE.md asks of a class: about twenty of its
methods are the few-line entry points a connection calls (swarm/links.py's handler), and routing
them to the parts above is what the class is for.

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
  with its full pages and so gets what it lacks. Every links.FULL_SYNC_EVERY-th interval a heads
  delta goes instead: only the rows that changed since the heads last sent on that link, so a
  busy swarm (digests never stand still) still repairs without resending every author's row.
  The receiver sends what the sender lacks among those rows and asks (`Want`) for what it lacks
  itself. A lost delta is repaired by the digest rule above, and every links.FULL_HEADS_EVERY-th
  delta round sends the full pages anyway.
- Forks. A FORK outcome carries the proof; we publish it as our own `fraud` entry (once per
  proof) and push it to everyone first.
- Quotas. Before an entry from a peer is queued, swarm/strangers.py charges its author (and the
  sending subnet) to swarm/quota.py or refuses it with a typed reason; the charge is settled once
  the ledger has judged the entry. An author's stamp (swarm/stamp.py) goes ahead of its entries on every link
  that has not had it from us, so the receiver counts the author as stamped.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Iterable

from ledger.bodies import Body, Fraud
from ledger.entry import Entry, decode_entry
from ledger.keys import Identity
from swarm.antientropy import MAX_FRAUDS, MAX_SYNC_ENTRIES_PER_PAGE, SYNC_READ_ENTRIES, AntiEntropy
from swarm.connection import Connection, SyncMessage, entry_key
from swarm.errors import SwarmError
from swarm.heads import split_targets
from swarm.ingest import INGEST_QUEUE_FRAMES, KNOWN_IDS, RECENT_WIRES, Ingest
from swarm.ledgerport import BLAMED, LedgerPort, Result, Verdict
from swarm.protocol import Entries, Have, HeldQuery, HeldReply, Stamps, Want, WantIds, encode_message
from swarm.pulls import MAX_ANNOUNCERS, MAX_PULLS, MAX_PULLS_PER_PEER, PULL_TICK_S, Pulls
from swarm.quota import QuotaLimits, Quotas
from swarm.stamp import STAMP_BITS
from swarm.strangers import StrangerGate
from swarm.waiting import TRACKED_PENDING, TRACKED_PENDING_TTL_S, WANT_AFTER_S, Waiting, WaitingEntries

INGEST_BATCH_WIRES = 256        # wires per append_wires call at most
PENDING_PER_LINK = 1_000        # waiting entries one link may have sent us: a tenth of the store's area
REPAIR_INTERVAL_S = 0.5
SUBSCRIBER_QUEUE = 1024
EAGER_FANOUT = 1                # peers that get a forwarded entry in full; the others get its id
PULL_AFTER_S = 0.5              # an announced entry not here by then is asked for (an eager copy may be on its way)
PULL_RTT_FACTOR = 1.5           # ... or sooner: this many round trips of the announcer's link (measured)
PULL_MIN_S = 0.01
WANT_TIMEOUT_S = 2.0            # an asked announcer that has not delivered by then is passed over

# the constants that moved with their code stay importable from here
__all__ = ["EAGER_FANOUT", "INGEST_BATCH_WIRES", "INGEST_QUEUE_FRAMES", "KNOWN_IDS", "MAX_ANNOUNCERS",
           "MAX_FRAUDS", "MAX_PULLS", "MAX_PULLS_PER_PEER", "MAX_SYNC_ENTRIES_PER_PAGE", "PULL_AFTER_S",
           "PULL_MIN_S", "PULL_RTT_FACTOR", "PULL_TICK_S", "RECENT_WIRES", "SYNC_READ_ENTRIES",
           "TRACKED_PENDING", "TRACKED_PENDING_TTL_S", "WANT_AFTER_S", "WANT_TIMEOUT_S", "Replicator"]

_log = logging.getLogger(__name__)


class Replicator:
    """Moves entries between the ledger and the connections the peer registers in `conns`."""

    def __init__(self, port: LedgerPort, identity: Identity, *, batch_wires: int = INGEST_BATCH_WIRES,
                 eager_fanout: int | None = EAGER_FANOUT, rng: random.Random | None = None,
                 quotas: Quotas | None = None) -> None:
        self.port = port
        self.quotas = quotas or Quotas(QuotaLimits(), swarm=port.swarm_id, stamp_bits=STAMP_BITS,
                                       own=identity.public_key, valued=port.valued)
        self.gate = StrangerGate(self.quotas)
        self.identity = identity
        self.batch_wires = batch_wires
        self.eager_fanout = eager_fanout   # None: every entry in full to every peer (a plain flood)
        self.pull_after_s = PULL_AFTER_S
        self.want_timeout_s = WANT_TIMEOUT_S
        self._rng = rng or random.Random()
        self.conns: dict[bytes, Connection] = {}
        self.changed = asyncio.Condition()   # notified after every ingest batch and publish
        self.appended_total = 0
        self.subscriber_dropped = 0
        self.frauds_published = 0
        self.released = 0          # entries the store appended from its pending area, then forwarded
        self.pulls = Pulls()
        self.ingest = Ingest()
        self.waiting = WaitingEntries(port)
        self._subscribers: set[asyncio.Queue[Entry]] = set()
        self.sync = AntiEntropy(port, self.ingest.recent, self.notify, self.stamps_for)

    # -- background tasks (owned by the peer's TaskGroup)

    async def run_ingest(self) -> None:
        while True:
            batch = await self.ingest.next_batch(self.batch_wires)
            try:
                results = await self.port.append_wires([w for _, w in batch])
                await self._dispatch(batch, results)
            except SwarmError as exc:
                _log.error("ingest batch of %d failed: %s", len(batch), exc)
                for _, wire in batch:
                    self.gate.settle(wire, kept=False)
            finally:
                self.ingest.landed(batch)
            await self.notify()

    async def run_repair(self) -> None:
        while True:
            await asyncio.sleep(REPAIR_INTERVAL_S)
            try:
                await self._repair(time.monotonic())
            except SwarmError as exc:
                _log.error("repair pass failed: %s", exc)

    async def run_pull(self) -> None:
        pulls = self.pulls
        while True:
            pulls.wake.clear()
            pulls.ask(time.monotonic(), self.ingest.held, self.want_timeout_s)
            sleep_s = None if not pulls.due else max(PULL_TICK_S, pulls.due[0][0] - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep_s):
                    await pulls.wake.wait()
            await asyncio.sleep(PULL_TICK_S)

    # -- what connections call

    def on_have(self, conn: Connection, ids: tuple[bytes, ...]) -> None:
        self.pulls.on_have(conn, ids, time.monotonic() + self.pull_delay_s(conn.rtt_min_ms), self.ingest.held)

    @property
    def pulls_asked(self) -> int:
        return self.pulls.asked

    @property
    def pulls_passed_over(self) -> int:
        return self.pulls.passed_over

    @property
    def pulls_dropped(self) -> int:
        return self.pulls.dropped

    def pull_delay_s(self, rtt_ms: float | None) -> float:
        """How long an announced entry may take to come in full from another peer before we ask.

        About one in three peers gets no full copy at all (each holder sends one to a random
        peer), so every wait is pure delay for them: wait about as long as a copy takes over the
        announcer's own link, never longer than pull_after_s (also used while no RTT is known)."""
        if rtt_ms is None:
            return self.pull_after_s
        return min(self.pull_after_s, max(PULL_MIN_S, PULL_RTT_FACTOR * rtt_ms / 1000))

    async def on_entries(self, conn: Connection, wires: tuple[bytes, ...]) -> None:
        admitted = self.gate.admit(conn, wires, self.ingest.held)
        if admitted:
            await self.ingest.offer(conn, tuple(admitted))

    def on_stamps(self, conn: Connection, message: Stamps) -> None:
        self.gate.on_stamps(conn, message)

    def stamps_for(self, conn: Connection, authors: Iterable[bytes]) -> list[Stamps]:
        """Frames with the stamps we know of `authors` that `conn` has not had from us (marked sent)."""
        return self.gate.stamps_for(conn, authors)

    async def on_sync(self, conn: Connection, message: SyncMessage) -> None:
        try:
            if isinstance(message, HeldQuery):
                conn.push(HeldReply(message.nonce, await self.port.holds(message.entry_id)), urgent=True)
                return
            if isinstance(message, WantIds):
                await self._serve_ids(conn, message.ids)
                return
            await self.sync.send_frauds(conn)
            await self.sync.answer(conn, message)
        except SwarmError as exc:
            _log.error("anti-entropy towards %r failed: %s", conn, exc)

    async def send_heads(self, conn: Connection) -> None:
        """Starts an anti-entropy round towards `conn`: our heads, page by page."""
        await self.sync.send_heads(conn)

    async def send_heads_delta(self, conn: Connection) -> bool:
        """Our heads rows that changed since the last heads sent to `conn`; False if none did."""
        return await self.sync.send_heads_delta(conn)

    async def digest(self) -> bytes:
        """sha256 over our sorted heads table; equal digests mean equal tables."""
        return await self.sync.digest()

    @property
    def heads_page_size(self) -> int:
        return self.sync.heads_page_size

    @heads_page_size.setter
    def heads_page_size(self, size: int) -> None:
        self.sync.heads_page_size = size

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
        self.pulls.drop(eid)
        self.ingest.remember(eid, wire)

    async def _dispatch(self, batch: list[tuple[Connection | None, bytes]], results: list[Result]) -> None:
        appended_authors: set[bytes] = set()
        for (origin, wire), result in zip(batch, results):
            # kept (appended, a copy of one held, waiting): its bytes stay charged; refused: refunded
            self.gate.settle(wire, kept=result.verdict not in (Verdict.REJECTED, Verdict.FORK))
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
                    if self.waiting.by_link.get(origin, 0) >= PENDING_PER_LINK:
                        # more waiting entries than one link's share of the area: its flood, not ours
                        origin.misbehaved("pending_flood")
                self.waiting.track(wire, origin)
            elif result.verdict is Verdict.FORK:
                if origin is not None:
                    origin.misbehaved("fork")
                if result.fraud is not None:
                    await self._publish_fraud(result.fraud)
            elif origin is not None:
                if result.reason in BLAMED:
                    origin.misbehaved(result.reason)
                elif result.reason == "pending_full" and self.waiting.by_link.get(origin, 0) >= PENDING_PER_LINK:
                    origin.misbehaved("pending_full")  # the area is full of this sender's entries
                else:
                    origin.stats.reject(result.reason)
        if appended_authors and self.waiting:
            await self.waiting.release(lambda w: w.entry.author in appended_authors, self._forward_released)

    def _appended(self, entry: Entry, origin: Connection | None) -> None:
        self.appended_total += 1
        urgent = isinstance(entry.body, Fraud)
        if urgent:
            self.sync.keep_fraud(entry.id, entry.wire)
        targets = [c for c in self.conns.values() if c is not origin and not c.knows(entry.id)]
        lazy: list[Connection]
        if urgent or entry.author == self.identity.public_key:
            full, lazy = targets, []
        else:
            full, lazy = split_targets(targets, self.eager_fanout, self._rng)
        frame = encode_message(Entries((entry.wire,)))
        for conn in full:
            for stamps in self.stamps_for(conn, (entry.author,)):
                conn.push(stamps, urgent=urgent)
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
        if not self.sync.first_sight((proof.first, proof.second)):
            return
        try:
            await self.publish(proof)
            self.frauds_published += 1
        except SwarmError as exc:
            _log.error("could not publish a fork proof: %s", exc)

    def _forward_released(self, waiting: Waiting) -> None:
        self._remember(waiting.entry.id, waiting.wire)
        self.released += 1
        self._appended(waiting.entry, waiting.origin)

    async def _repair(self, now_s: float) -> None:
        if not self.waiting:
            return
        before = self.appended_total
        await self.waiting.release(None, self._forward_released)
        if self.appended_total != before:
            await self.notify()
        for conn, per in (await self.waiting.wants(now_s)).items():
            conn.push(Want(tuple(per.items())))

    async def _serve_ids(self, conn: Connection, ids: tuple[bytes, ...]) -> None:
        await self.sync.serve_ids(conn, ids)
