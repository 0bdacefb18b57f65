"""The pure parts of replication (swarm/gossip.py): heads tables in pages over author ranges, what
a peer's page or rows say we should send or ask for, per-link heads deltas, packing wires into
frames, and the eager/announce split of a forward."""
from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from swarm.protocol import LAST_AUTHOR, MAX_ENTRIES_PER_FRAME, MAX_FRAME_BYTES, MAX_HEADS_PER_FRAME, Entries, Heads

_FRAME_OVERHEAD_BYTES = 64
_WIRE_OVERHEAD_BYTES = 8

Tips = dict[bytes, tuple[int, bytes]]  # author -> (highest seq, tip of its head's id)


def heads_pages(heads: Tips, page_size: int = MAX_HEADS_PER_FRAME) -> list[Heads]:
    """Splits {author: (seq, tip)} into pages covering (lo, hi] ranges that together cover every author."""
    authors = sorted(heads)
    pages: list[Heads] = []
    lo = b""
    for start in range(0, len(authors), page_size):
        chunk = authors[start : start + page_size]
        last = start + page_size >= len(authors)
        hi = LAST_AUTHOR if last else chunk[-1]
        pages.append(Heads(lo, hi, tuple((a, *heads[a]) for a in chunk)))
        lo = hi
    if not pages or not pages[-1].last:
        pages.append(Heads(lo, LAST_AUTHOR, ()))
    return pages


def lacking(mine: Tips, mine_sorted: list[bytes], page: Heads) -> list[tuple[bytes, int, bytes]]:
    """(author, their seq, their tip) for each author in the page's range where we hold more than
    they do, or as much but a different head (a fork: our head is its evidence)."""
    theirs = {author: (seq, tip) for author, seq, tip in page.heads}
    start = bisect.bisect_right(mine_sorted, page.lo) if page.lo else 0
    end = bisect.bisect_right(mine_sorted, page.hi)
    out = []
    for author in mine_sorted[start:end]:
        seq, tip = mine[author]
        their_seq, their_tip = theirs.get(author, (0, b""))
        if seq > their_seq or (seq == their_seq and tip != their_tip):
            out.append((author, their_seq, their_tip))
    return out


T = TypeVar("T")


def split_targets(targets: Sequence[T], fanout: int | None, rng: random.Random) -> tuple[list[T], list[T]]:
    """(full, announce): `fanout` targets at random get the entry, the rest its id; None: all full."""
    if fanout is None or fanout >= len(targets):
        return list(targets), []
    picked = set(rng.sample(range(len(targets)), fanout))
    return ([t for i, t in enumerate(targets) if i in picked], [t for i, t in enumerate(targets) if i not in picked])


def heads_delta(sent: Tips | None, mine: Tips, peer_holds: Callable[[bytes], bool] | None = None
                ) -> list[tuple[bytes, int, bytes]]:
    """Rows of `mine` that differ from the heads last sent (`sent`), ascending by author, less the
    authors for which `peer_holds(author)` says the link already carried our head entry (the peer
    sent or announced it, or we sent it): such a row would tell the peer nothing."""
    return [(a, *mine[a]) for a in sorted(mine)
            if (sent is None or sent.get(a) != mine[a]) and not (peer_holds is not None and peer_holds(a))]


def compare_rows(mine: Tips, rows: Iterable[tuple[bytes, int, bytes]]) -> tuple[
        list[tuple[bytes, int, bytes]], list[tuple[bytes, int]]]:
    """For a peer's heads rows: (author, their seq, their tip) where we hold more or a different
    head (we send), and (author, our seq) where they hold more (we ask)."""
    send, ask = [], []
    for author, their_seq, their_tip in rows:
        seq, tip = mine.get(author, (0, b""))
        if seq > their_seq or (seq == their_seq and tip != their_tip):
            send.append((author, their_seq, their_tip))
        elif seq < their_seq:
            ask.append((author, seq))
    return send, ask


def pack_frames(wires: Iterable[bytes], max_entries: int = MAX_ENTRIES_PER_FRAME,
                max_bytes: int = MAX_FRAME_BYTES) -> list[Entries]:
    frames: list[Entries] = []
    batch: list[bytes] = []
    size = _FRAME_OVERHEAD_BYTES
    for wire in wires:
        cost = len(wire) + _WIRE_OVERHEAD_BYTES
        if batch and (len(batch) >= max_entries or size + cost > max_bytes):
            frames.append(Entries(tuple(batch)))
            batch, size = [], _FRAME_OVERHEAD_BYTES
        batch.append(wire)
        size += cost
    if batch:
        frames.append(Entries(tuple(batch)))
    return frames
