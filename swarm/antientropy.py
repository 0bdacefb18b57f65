"""Anti-entropy: heads tables sent and compared, and the feeds a peer lacks sent to it.

Owned by swarm/gossip.py's Replicator, which registers the connections, decides when a round
starts (swarm/links.py schedules them) and hands it every sync message but held-queries and
pulls' `WantIds`. Reaches the ledger only through swarm/ledgerport.py; the pure rules (pages,
deltas, what the other side lacks) live in swarm/heads.py. Knows nothing about sockets.

On connect each side sends its {author: highest seq} in pages over author ranges; for each page
the receiver sends what the sender lacks, fork proofs first, in frames through the bounded send
queue. Every interval after that each side sends only a digest of its table; a peer that gets
the same digest twice in a row, different from its own, answers with its full pages. Now and
then a heads delta goes instead: only the rows that changed since the heads last sent on that
link. The receiver sends what the sender lacks among those rows and asks (`Want`) for what it
lacks itself. Fork proofs (our `fraud` entries) go first, in the urgent lane, on every link.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

from swarm.connection import Connection, entry_key
from swarm.heads import Tips, compare_rows, heads_delta, heads_pages, lacking, pack_frames
from swarm.ledgerport import LedgerPort
from swarm.protocol import (MAX_HEADS_PER_FRAME, MAX_WANTS_PER_FRAME, TIP_BYTES, Digest, Entries, Heads, HeadsDelta, Stamps,
                            Want)

# the stamps of these authors that this link has not had yet (the Replicator's stamps_for)
StampsFor = Callable[[Connection, Iterable[bytes]], list[Stamps]]

SYNC_READ_ENTRIES = 256         # per wires_after call
MAX_SYNC_ENTRIES_PER_PAGE = 20_000  # one heads page answers at most this many; the next round goes on
MAX_FRAUDS = 256                # fork proofs kept to send first on every link


class AntiEntropy:
    """Our heads (cached until the ledger moves), the fork proofs we send first, and the answers to a
    peer's heads, digests and wants."""

    def __init__(self, port: LedgerPort, recent: OrderedDict[bytes, bytes],
                 notify: Callable[[], Awaitable[None]], stamps_for: StampsFor = lambda _c, _a: []) -> None:
        self.port = port
        self._stamps_for = stamps_for
        self.heads_page_size = MAX_HEADS_PER_FRAME
        self._frauds: OrderedDict[bytes, bytes] = OrderedDict()  # our fraud entries: id -> wire
        self._published_proofs: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self._recent = recent    # the Replicator's recently appended wires, served without a SQLite read
        self._notify = notify
        self._tips_cache: tuple[int, Tips, list[bytes], dict[bytes, bytes]] | None = None
        self._digest: tuple[int, bytes] | None = None

    async def answer(self, conn: Connection, message: Digest | Heads | HeadsDelta | Want) -> None:
        if isinstance(message, Digest):
            # Tables differ all the time while entries are in flight, and pushes settle
            # that. Act only when the peer's table stood still for a whole interval yet
            # differs from ours: then our heads make it send what we lack.
            stable = message.digest == conn.peer_digest
            conn.peer_digest = message.digest
            await self._notify()  # Peer.wait_synced compares it with ours
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

    async def serve_ids(self, conn: Connection, ids: tuple[bytes, ...]) -> None:
        # a pull asks for entries announced a moment ago: nearly always still in memory
        wires = [w for w in [self._recent.get(eid) or await self.port.wire(eid) for eid in ids] if w is not None]
        for wire in wires:
            conn.mark_known(entry_key(wire))
        for stamps in self._stamps_for(conn, (w[:32] for w in wires)):
            await conn.send_bulk(stamps)
        for frame in pack_frames(wires):
            await conn.send_bulk(frame)
            conn.stats.entries_out += len(frame.wires)

    def keep_fraud(self, eid: bytes, wire: bytes) -> None:
        """A fraud entry to send first on every link (the newest MAX_FRAUDS)."""
        self._frauds[eid] = wire
        if len(self._frauds) > MAX_FRAUDS:
            self._frauds.popitem(last=False)

    def first_sight(self, proof: tuple[bytes, bytes]) -> bool:
        """True the first time a fork proof (its two entry ids) is seen: publish it once."""
        if proof in self._published_proofs:
            return False
        self._published_proofs[proof] = None
        if len(self._published_proofs) > MAX_FRAUDS:
            self._published_proofs.popitem(last=False)
        return True

    async def send_frauds(self, conn: Connection) -> None:
        for eid, wire in list(self._frauds.items()):
            if eid not in conn.sent_frauds:
                conn.note_fraud(eid)
                conn.mark_known(eid)
                for stamps in self._stamps_for(conn, (wire[:32],)):
                    conn.push(stamps, urgent=True)
                conn.push(Entries((wire,)), urgent=True)

    async def _send_feed(self, conn: Connection, author: bytes, after: int, tip: bytes, budget: int) -> int:
        for stamps in self._stamps_for(conn, (author,)):
            await conn.send_bulk(stamps)
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
