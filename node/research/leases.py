"""Leases across nodes: "I am running program K on class C until T", signed and gossiped, respected.

Without them two nodes run the same edit during the gossip delay: a node learns of another's
experiment only from its claim, five minutes after it started. A lease is published when a run
starts and every proposer adds the programs under live leases to what it treats as tried.

The ledger has no lease body yet, so a lease rides in a Post on channel LEASE_CHANNEL whose text
is one strict line, `lease v1 <class> <key> <until_ms>`; it is signed, chained and gossiped like
any entry. (A dedicated body, with the fold expiring it, is the change docs/architecture.md should
get; see the report of issue 16.) Pure apart from LeaseBook.sync, which reads posts from the ledger.

A lease is an unverifiable promise, so it is bounded like the rest of the memory
(node/research/memory.py): it lives at most MAX_LEASE_S from its entry's time; an author with
standing (a verified claim) holds at most MAX_PER_AUTHOR live leases (one per GPU is normal), one
without standing at most MAX_PER_STRANGER, and all strangers together at most MAX_STRANGERS, the
earliest kept. A flood of leases therefore blocks a bounded set of keys and expires by itself;
the optimizer's continuous values leave the space of untried programs effectively unbounded anyway.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ledger.bodies import Post
from ledger.store import Ledger

from node.errors import NodeError

LEASE_CHANNEL = "lease"
MAX_LEASE_S = 1200.0        # a run's budget plus startup and evaluation, with room: longer is refused
MAX_PER_AUTHOR = 64         # live leases an author with standing holds at once
MAX_PER_STRANGER = 2        # ... an author without standing
MAX_STRANGERS = 64          # ... all authors without standing together
SYNC_BATCH = 512            # posts read per sync
LEASE_SLACK = 1.5           # a lease lasts the run's expected seconds times this, plus LEASE_GRACE_S ...
LEASE_GRACE_S = 60.0        # ... so a slow run and its claim's gossip stay covered (a claim then blocks the key)
_LINE = re.compile(r"lease v1 ([a-z0-9][a-z0-9._-]{0,63}) (k1-[0-9a-f]{32}) ([0-9]{1,16})")


class BadLease(NodeError):
    """A lease post that does not say what a lease must."""


@dataclass(frozen=True, slots=True)
class Lease:
    author: bytes
    platform_class: str
    key: str              # the normalized key of the program (node/research/program.py)
    start_ms: int         # the entry's time
    until_ms: int

    def __post_init__(self) -> None:
        if not 0 <= self.until_ms - self.start_ms <= MAX_LEASE_S * 1000:
            raise BadLease(f"a lease lasts 0 to {MAX_LEASE_S:.0f} s, not {(self.until_ms - self.start_ms) / 1000:.0f} s")


def encode(platform_class: str, key: str, until_ms: int) -> Post:
    """The post that announces a lease (its author and time come from the entry that carries it)."""
    text = f"lease v1 {platform_class} {key} {until_ms}"
    if not _LINE.fullmatch(text):
        raise BadLease(f"cannot announce a lease on {platform_class!r} for {key!r}")
    return Post(channel=LEASE_CHANNEL, text=text, reply_to=None)


def lease_seconds(expected_run_s: float) -> float:
    """How long a lease on a run expected to take `expected_run_s` lasts: past the run, never past MAX_LEASE_S
    (a longer run's lease ends early: a duplicate is then possible, never a key blocked for good)."""
    return min(MAX_LEASE_S, max(0.0, expected_run_s) * LEASE_SLACK + LEASE_GRACE_S)


def decode(post: Post, author: bytes, time_ms: int) -> Lease:
    found = _LINE.fullmatch(post.text) if post.channel == LEASE_CHANNEL else None
    if found is None:
        raise BadLease("not a lease line")
    return Lease(author, found.group(1), found.group(2), time_ms, int(found.group(3)))


def live_keys(leases: Iterable[Lease], platform_class: str, now_ms: int, standing: Mapping[bytes, int],
              me: bytes | None = None) -> set[str]:
    """The keys under live leases of the class that a proposer should treat as taken (our own
    excluded: the node's own running set covers those)."""
    per_author: dict[bytes, int] = {}
    strangers = 0
    out: set[str] = set()
    for lease in sorted(leases, key=lambda x: (x.start_ms, x.author, x.key)):
        if lease.platform_class != platform_class or lease.author == me or not lease.start_ms <= now_ms < lease.until_ms:
            continue
        held = per_author.get(lease.author, 0)
        proven = standing.get(lease.author, 0) > 0
        if held >= (MAX_PER_AUTHOR if proven else MAX_PER_STRANGER) or (not proven and strangers >= MAX_STRANGERS):
            continue
        per_author[lease.author] = held + 1
        strangers += not proven
        out.add(lease.key)
    return out


@dataclass(slots=True)
class LeaseBook:
    """The leases the ledger holds, read incrementally; expired ones are dropped on each sync."""

    leases: list[Lease] = field(default_factory=list)
    row: int = 0
    refused: int = 0           # lease posts that did not parse or lasted too long

    async def sync(self, ledger: Ledger, now_ms: int) -> int:
        added = 0
        while True:
            batch = await ledger.entries_since(self.row, ["post"], SYNC_BATCH)
            for row, entry in batch:
                if row <= self.row:
                    continue   # another worker's sync, awaiting beside this one, read it already
                self.row = row
                if not isinstance(entry.body, Post) or entry.body.channel != LEASE_CHANNEL:
                    continue
                try:
                    self.leases.append(decode(entry.body, entry.author, entry.time_ms))
                    added += 1
                except BadLease:
                    self.refused += 1
            if len(batch) < SYNC_BATCH:
                break
        self.leases = [x for x in self.leases if x.until_ms > now_ms]
        return added

    def taken(self, platform_class: str, now_ms: int, standing: Mapping[bytes, int], me: bytes | None) -> set[str]:
        """The keys of the class under other nodes' live leases (live_keys over the book)."""
        return live_keys(self.leases, platform_class, now_ms, standing, me)
