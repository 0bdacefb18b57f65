"""The ingest queue, and what the replicator knows it holds or has on its way to the ledger.

Every connection's entry frames go to one bounded queue, drained by swarm/gossip.py's
Replicator into `append_wires` batches (group commit), so a fast sender waits, through TCP,
instead of growing memory. A wire whose id and signature we hold, or have queued, is counted
as a duplicate before the ledger sees it; the newest appended wires stay in memory for pulls.
Knows nothing about the ledger's verdicts: what to do with them is the Replicator's business.
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict

from swarm.connection import Connection, entry_key

INGEST_QUEUE_FRAMES = 256       # entry frames waiting for the ledger, all peers together
KNOWN_IDS = 65_536              # recently held entry ids -> signature, to skip duplicates early
RECENT_WIRES = 2_048            # recently appended wires kept in memory: pulls ask for these (no SQLite read)

Batch = list[tuple[Connection | None, bytes]]


class Ingest:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[Connection | None, tuple[bytes, ...]]] = asyncio.Queue(
            maxsize=INGEST_QUEUE_FRAMES
        )
        self._known: OrderedDict[bytes, bytes] = OrderedDict()  # entry id -> signature
        self.recent: OrderedDict[bytes, bytes] = OrderedDict()  # entry id -> wire, the newest RECENT_WIRES
        self._inflight: dict[bytes, bytes] = {}  # queued for the ledger: id -> signature (bounded by the queue)

    async def offer(self, conn: Connection, wires: tuple[bytes, ...]) -> None:
        """Queues the wires `conn` sent that are neither held nor queued already (waits while the queue is full)."""
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

    async def next_batch(self, max_wires: int) -> Batch:
        """The next frame in the queue, and the frames behind it up to `max_wires` wires."""
        origin, wires = await self._queue.get()
        batch = [(origin, w) for w in wires]
        while len(batch) < max_wires and not self._queue.empty():
            origin, wires = self._queue.get_nowait()
            batch.extend((origin, w) for w in wires)
        return batch

    def landed(self, batch: Batch) -> None:
        """The ledger has had its say on `batch`: its wires are no longer on their way."""
        for _, wire in batch:
            self._inflight.pop(entry_key(wire), None)

    def held(self, eid: bytes) -> bool:
        """Whether we hold `eid` or it is on its way to the ledger."""
        return eid in self._known or eid in self._inflight

    def remember(self, eid: bytes, wire: bytes) -> None:
        self._known[eid] = wire[32:96]
        self._known.move_to_end(eid)
        if len(self._known) > KNOWN_IDS:
            self._known.popitem(last=False)
        self.recent[eid] = wire
        if len(self.recent) > RECENT_WIRES:
            self.recent.popitem(last=False)
