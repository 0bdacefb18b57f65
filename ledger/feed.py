"""Feeds: one author's entries chained by seq and prev, and the fork proofs that freeze them.

Pure: no storage, no clock. The store asks `place` where a new entry falls relative to the
author's head; two different entries at one (author, seq) become a `Fraud` body that any node
can check with `check_fraud` and nothing else.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from ledger.bodies import Fraud
from ledger.entry import Entry, decode_entry
from ledger.errors import InvalidEntry, LedgerError


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    id: bytes


class Place(enum.Enum):
    NEXT = "next"            # extends the feed: append
    DUPLICATE = "duplicate"  # already held: ignore
    GAP = "gap"              # a predecessor is missing: wait in the pending area
    CONFLICT = "conflict"    # same seq as a held entry, different id: a fork
    BROKEN = "broken"        # next seq but chained to an entry we do not hold at the head


def place(head: Head | None, entry: Entry, held_id_at_seq: bytes | None) -> Place:
    """Where `entry` falls in its author's feed; `held_id_at_seq` is the id we hold at its seq."""
    if held_id_at_seq is not None:
        return Place.DUPLICATE if held_id_at_seq == entry.id else Place.CONFLICT
    head_seq = head.seq if head is not None else 0
    if entry.seq > head_seq + 1:
        return Place.GAP
    if entry.seq == head_seq + 1:
        if head is not None and entry.prev != head.id:
            # It chains to an entry we never saw at head.seq: the author forked there, but that
            # is provable only once the other entry arrives, which then conflicts with our head.
            return Place.BROKEN
        return Place.NEXT
    raise LedgerError(f"feed invariant broken: nothing held at seq {entry.seq} <= head {head_seq}")


def make_fraud(a: Entry, b: Entry) -> Fraud:
    if (a.swarm, a.author, a.seq) != (b.swarm, b.author, b.seq) or a.id == b.id:
        raise InvalidEntry("a fork proof needs two different entries at one author and seq")
    first, second = sorted((a.wire, b.wire))  # canonical order: one proof per fork pair
    return Fraud(first=first, second=second)


def check_fraud(proof: Fraud, *, swarm: bytes) -> tuple[bytes, int]:
    """Returns (author, seq) of the forked feed, or raises InvalidEntry if the proof is bad."""
    a = decode_entry(proof.first, swarm=swarm)
    b = decode_entry(proof.second, swarm=swarm)
    if a.author != b.author or a.seq != b.seq:
        raise InvalidEntry("fork proof: entries differ in author or seq")
    if a.id == b.id:
        raise InvalidEntry("fork proof: both entries have the same content")
    return a.author, a.seq


def feed_order(entries: list[tuple[int, Entry]]) -> list[tuple[int, Entry]]:
    """Each author's entries in seq order, in the places its entries had (other authors stay put)."""
    places: dict[bytes, list[int]] = {}
    for at, (_, entry) in enumerate(entries):
        places.setdefault(entry.author, []).append(at)
    ordered = list(entries)
    for spots in places.values():
        for at, item in zip(spots, sorted((entries[s] for s in spots), key=lambda item: item[1].seq)):
            ordered[at] = item
    return ordered
