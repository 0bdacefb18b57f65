"""Where the quotas meet the links: each entry frame a peer sends is charged or refused before the
ledger sees it, and identity stamps are learned from, and passed on to, each link.

Composes swarm/quota.py (the pure rules), swarm/asked.py (what we asked a link for) and the
link's score; owned by swarm/gossip.py's Replicator, which queues what is admitted and settles
each charge once the ledger has judged the entry. Knows nothing about the ledger.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from swarm.admission import subnet_of
from swarm.connection import SENT_STAMPS, Connection, entry_key
from swarm.peertable import host_of
from swarm.protocol import MAX_STAMPS_PER_FRAME, Stamps
from swarm.quota import BLAMED, Quotas


class StrangerGate:
    def __init__(self, quotas: Quotas) -> None:
        self.quotas = quotas

    def admit(self, conn: Connection, wires: tuple[bytes, ...], held: Callable[[bytes], bool]) -> list[bytes]:
        """The wires to queue: each new one charged to the quotas, or refused with its reason
        (counted on the link). Each refusal the sender is to blame for costs it a penalty,
        unless we asked for the entry (over-quota answers: forgiven from a bucket)."""
        now = time.monotonic()
        subnet = subnet_of(conn.remote_host or host_of(conn.addr))
        admitted: list[bytes] = []
        blamed = duplicates = 0
        for wire in wires:
            eid = entry_key(wire)
            asked = conn.asked.covers(wire[:32], eid, now)
            if held(eid):
                # held or on its way: the ledger will call it a duplicate (or refuse a forged copy);
                # no charge, but an unasked stream of copies past the link's allowance costs it
                admitted.append(wire)
                duplicates += not asked and not conn.limits.duplicate_ok(now)
                continue
            # charged under its signature: a forged copy of a charged entry (same id) cannot refund it
            reason = self.quotas.admit(wire[32:96], wire[:32], len(wire), subnet, now, asked=asked)
            if reason is None:
                admitted.append(wire)
                continue
            conn.stats.reject(reason)
            # our disk full, or what we asked for: never the sender's fault; but an asked-for
            # answer over its author's quota is forgiven only so often (swarm/asked.py)
            if reason in BLAMED and (not asked or (reason == "quota_author" and not conn.asked.forgive(now))):
                blamed += 1
        if blamed:
            conn.misbehaved("quota", blamed)
        if duplicates:
            conn.misbehaved("duplicate_flood", duplicates)
        return admitted

    def settle(self, wire: bytes, kept: bool) -> None:
        self.quotas.settle(wire[32:96], kept)

    def on_stamps(self, conn: Connection, message: Stamps) -> None:
        bad = 0
        for author, nonce in message.stamps:
            if self.quotas.learn_stamp(author, nonce):
                _remember_sent(conn, author)   # it has this stamp: never send it back
            else:
                bad += 1
        if bad:
            conn.misbehaved("bad_stamp")

    def stamps_for(self, conn: Connection, authors: Iterable[bytes]) -> list[Stamps]:
        """Frames with the stamps we know of `authors` that `conn` has not had from us (marked sent)."""
        pairs = []
        for author in dict.fromkeys(authors):
            nonce = self.quotas.stamp_of(author)
            if nonce is not None and author not in conn.stamps_sent:
                _remember_sent(conn, author)
                pairs.append((author, nonce))
        return [Stamps(tuple(pairs[i:i + MAX_STAMPS_PER_FRAME])) for i in range(0, len(pairs), MAX_STAMPS_PER_FRAME)]


def _remember_sent(conn: Connection, author: bytes) -> None:
    conn.stamps_sent[author] = None
    conn.stamps_sent.move_to_end(author)
    if len(conn.stamps_sent) > SENT_STAMPS:
        conn.stamps_sent.popitem(last=False)
