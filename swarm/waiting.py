"""Waiting entries: those the store put in its pending area, tracked until they are appended.

The store does not report an entry it appends from its pending area when the dependency
arrives, so swarm/gossip.py's Replicator tracks each (bounded, and counted per sending link)
and a release pass finds it appended and forwards it; the repair pass asks the link that sent
an entry still waiting for the missing part of its feed. Reaches the ledger only through
swarm/ledgerport.py; what to forward and when to run a pass is the Replicator's business.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ledger.entry import Entry, decode_entry
from ledger.errors import InvalidEntry
from swarm.connection import Connection
from swarm.ledgerport import LedgerPort
from swarm.protocol import MAX_WANTS_PER_FRAME

TRACKED_PENDING = 10_000        # waiting entries we watch (the store's pending area is as big)
TRACKED_PENDING_TTL_S = 300.0
WANT_AFTER_S = 0.5              # a gap older than this is asked for


@dataclass(slots=True)
class Waiting:
    wire: bytes
    entry: Entry
    origin: Connection | None
    since_s: float


class WaitingEntries:
    """The tracked waiting entries by (author, seq), oldest first."""

    def __init__(self, port: LedgerPort) -> None:
        self.port = port
        self.slots: OrderedDict[tuple[bytes, int], Waiting] = OrderedDict()
        self.by_link: dict[Connection, int] = {}  # of slots, how many each link sent
        self._release_lock = asyncio.Lock()  # one release pass at a time (ingest and repair both run one)

    def __bool__(self) -> bool:
        return bool(self.slots)

    def track(self, wire: bytes, origin: Connection | None) -> None:
        try:
            entry = decode_entry(wire, signature_checked=True)
        except InvalidEntry:
            return  # the ledger accepted it to wait, so this does not happen; never trust it
        slot = (entry.author, entry.seq)
        if slot in self.slots:
            return
        self.slots[slot] = Waiting(wire, entry, origin, time.monotonic())
        if origin is not None:
            self.by_link[origin] = self.by_link.get(origin, 0) + 1
        if len(self.slots) > TRACKED_PENDING:
            self._unwait(next(iter(self.slots)))

    def _unwait(self, slot: tuple[bytes, int]) -> None:
        waiting = self.slots.pop(slot)
        if waiting.origin is not None:
            left = self.by_link.get(waiting.origin, 1) - 1
            if left > 0:
                self.by_link[waiting.origin] = left
            else:
                self.by_link.pop(waiting.origin, None)

    async def release(self, pick: Callable[[Waiting], bool] | None, forward: Callable[[Waiting], None]) -> None:
        """Calls `forward` for each tracked entry (those `pick` chooses) the store has since appended.

        The ingest loop (after a batch) and the repair loop (on its timer) both call this, and each
        awaits the ledger between looking at a slot and taking it; the lock makes one pass at a time,
        and a slot is taken only if it still holds the same waiting entry (`track` may have evicted
        or replaced it during the await)."""
        async with self._release_lock:
            for slot, waiting in list(self.slots.items()):
                if pick is not None and not pick(waiting):
                    continue
                if await self.port.head_seq(waiting.entry.author) < waiting.entry.seq:
                    continue
                if self.slots.get(slot) is not waiting:
                    continue
                self._unwait(slot)
                if not await self.port.holds(waiting.entry.id):
                    continue  # dropped from the pending area (e.g. its chain broke): never forwarded
                forward(waiting)

    async def wants(self, now_s: float) -> dict[Connection, dict[bytes, int]]:
        """Per sending link, the authors whose feed to ask for (after our head seq); drops old entries."""
        wants: dict[Connection, dict[bytes, int]] = {}
        for slot, waiting in list(self.slots.items()):
            if self.slots.get(slot) is not waiting:
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
        return wants
