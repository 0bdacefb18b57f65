"""Quotas on what strangers may store here: bytes and rate per identity, bytes per address, a total.

Pure bookkeeping, the clock passed in; knows nothing about sockets, frames or the ledger. The
replicator asks `admit` for each entry a peer sends (before the ledger sees it), and settles the
charge once the ledger has judged it: kept if appended or waiting, refunded otherwise.

Who is a stranger. Our own entries and those of authors the swarm valued (a trusted verifier,
the spec's creator, a positive balance: credits are minted only for verified work) are never
limited; the caller says who they are. Everyone else is a stranger, in one of two classes:

- fresh: no stamp (swarm/stamp.py). Each may store `fresh_author_bytes`, and all of them together
  `fresh_share` of the strangers' quota: free keys share one small slice.
- stamped: a good stamp was shown. Each may store `stamped_author_bytes`.

On top of that, links from one subnet (/24, /48) may deliver `addr_share` of the quota per
ADDR_REFILL_S (a token bucket: a flood comes over live links, while an honest relay that carries
much of the swarm's traffic for days must not run dry), and all strangers together may hold
`strangers_bytes`. Each identity also has a byte rate (a token bucket) so a quota fills over
minutes, not in one burst.

What happens at a quota. The entry is refused with its reason (below) and never reaches the
ledger; rows are never deleted, so a quota is a bound on what is admitted, not a cache to evict.
Reasons in BLAMED are the sender's own doing (a node with our defaults would not have forwarded
the entry, or one address sends more than its share): the caller penalizes the sending link for
them unless it was answering our own request. "quota_fresh" and "quota_strangers" describe our
disk, not the sender's behaviour, and are never penalized.

Bytes stored per author are loaded from the ledger at start (`preload`), so a restart does not
give every stranger a fresh quota. Memory: one int per stranger author and per subnet; authors
are bounded by the quota itself (an entry is at least ~150 bytes).
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from swarm.limits import TokenBucket
from swarm.stamp import stamp_ok

MiB = 1 << 20
KiB = 1 << 10
MAX_STAMPS = 65_536          # stamped identities remembered; the least recently used is forgotten
MAX_RATE_BUCKETS = 16_384    # identities (and subnets) with a live rate bucket; the stalest go first
ADDR_REFILL_S = 3600.0       # a subnet's share of the quota comes back over an hour

# reason -> what it means; the reasons the sender is penalized for are in BLAMED
REASONS = {
    "quota_rate": "the author sends faster than its identity's byte rate",
    "quota_author": "the author's identity holds its whole quota here",
    "quota_addr": "links from this subnet delivered their share of the strangers' quota",
    "quota_fresh": "unstamped identities together hold their share of the strangers' quota",
    "quota_strangers": "strangers' entries fill the configured quota",
}
BLAMED = frozenset({"quota_rate", "quota_author", "quota_addr"})

STRANGERS_BYTES = 512 * MiB
FRESH_AUTHOR_BYTES = 256 * KiB
STAMPED_AUTHOR_BYTES = 16 * MiB


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    strangers_bytes: int = STRANGERS_BYTES            # every stranger's entries together
    fresh_author_bytes: int = FRESH_AUTHOR_BYTES      # one unstamped identity
    stamped_author_bytes: int = STAMPED_AUTHOR_BYTES  # one stamped identity
    fresh_share: float = 1 / 16           # of strangers_bytes: all unstamped identities together
    addr_share: float = 1 / 4             # of strangers_bytes: delivered over links from one subnet
    fresh_bytes_per_s: float = 4 * KiB    # one unstamped identity's rate (its burst: its whole quota)
    stamped_bytes_per_s: float = 64 * KiB
    stamped_burst_bytes: float = 4 * MiB

    def __post_init__(self) -> None:
        for name in ("strangers_bytes", "fresh_author_bytes", "stamped_author_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"quota: {name} must not be negative")
        if not (0 < self.fresh_share <= 1 and 0 < self.addr_share <= 1):
            raise ValueError("quota: shares must be in (0, 1]")
        if min(self.fresh_bytes_per_s, self.stamped_bytes_per_s, self.stamped_burst_bytes) <= 0:
            raise ValueError("quota: rates must be positive")


@dataclass(slots=True)
class Charge:
    author: bytes
    size: int
    subnet: str


class Quotas:
    def __init__(self, limits: QuotaLimits, *, swarm: bytes, stamp_bits: int, own: bytes,
                 valued: Callable[[bytes], bool] = lambda _author: False) -> None:
        self.limits = limits
        self.swarm = swarm
        self.stamp_bits = stamp_bits
        self.own = own
        self.valued = valued
        self.stamps: OrderedDict[bytes, bytes] = OrderedDict()  # author -> nonce, checked
        self.stored: dict[bytes, int] = {}          # stranger author -> bytes admitted (and kept)
        self.per_subnet: OrderedDict[str, TokenBucket] = OrderedDict()  # subnet -> bytes its links may still deliver
        self.fresh_total = 0                        # bytes of unstamped strangers
        self.strangers_total = 0
        self.refused: Counter[str] = Counter()
        self._buckets: OrderedDict[bytes, TokenBucket] = OrderedDict()
        self._charges: dict[bytes, Charge] = {}     # charge key (the wire's signature) -> its charge, until judged

    # -- stamps

    def learn_stamp(self, author: bytes, nonce: bytes) -> bool:
        """Checks and remembers a stamp; False if it is not good (the sender forged or mangled it)."""
        if author in self.stamps:
            self.stamps.move_to_end(author)
            return True
        if not stamp_ok(self.swarm, author, nonce, self.stamp_bits):
            return False
        self.stamps[author] = nonce
        self.fresh_total -= self.stored.get(author, 0)   # its bytes move to the stamped class
        self._buckets.pop(author, None)                  # a new bucket at the stamped rate
        if len(self.stamps) > MAX_STAMPS:
            forgotten, _ = self.stamps.popitem(last=False)
            self.fresh_total += self.stored.get(forgotten, 0)
        return True

    def stamp_of(self, author: bytes) -> bytes | None:
        return self.stamps.get(author)

    def exempt(self, author: bytes) -> bool:
        return author == self.own or self.valued(author)

    # -- admission

    def admit(self, key: bytes, author: bytes, size: int, subnet: str, now_s: float, *, asked: bool = False) -> str | None:
        """Charges an entry of `size` bytes by `author`, delivered from `subnet`, or says why not.

        A refused entry that was not `asked` for still spends the subnet's share: a sender that
        keeps pushing what we cannot take (a full disk, a full slice for unstamped keys) runs into
        "quota_addr", which is blamed, so a flood of refusals ends with the flooder banned."""
        if self.exempt(author):
            return None
        limits = self.limits
        fresh = author not in self.stamps
        reason = None
        if self.stored.get(author, 0) + size > (limits.fresh_author_bytes if fresh else limits.stamped_author_bytes):
            reason = "quota_author"
        elif self._subnet(subnet, now_s).wait_s(float(size), now_s) > 0:
            reason = "quota_addr"        # first of the shared bounds: refusals below drain it (see admit's doc)
        elif self.strangers_total + size > limits.strangers_bytes:
            reason = "quota_strangers"
        elif fresh and self.fresh_total + size > limits.fresh_share * limits.strangers_bytes:
            reason = "quota_fresh"
        elif not self._bucket(author, fresh, now_s).take(float(size), now_s):
            reason = "quota_rate"   # last: a refusal for another reason must not spend the rate
        if reason is not None:
            self.refused[reason] += 1
            if not asked and reason != "quota_addr":
                bucket = self._subnet(subnet, now_s)
                bucket.take(0.0, now_s)   # refill to now, then spend what is there
                bucket.tokens = max(0.0, bucket.tokens - size)
            return reason
        self._subnet(subnet, now_s).take(float(size), now_s)
        charge = Charge(author, size, subnet)
        self._add(charge, +1)
        self._charges[key] = charge
        return None

    def settle(self, key: bytes, kept: bool) -> None:
        """The ledger judged the entry charged under `key`: its bytes stay counted if it was kept
        (appended, a copy of one held, or waiting: one later dropped from the pending area stays
        counted, which errs on the side of the disk)."""
        charge = self._charges.pop(key, None)
        if charge is not None and not kept:
            self._add(charge, -1)

    def preload(self, stored: dict[bytes, int]) -> None:
        """Bytes each author already holds in the ledger (at start); own and valued authors skipped."""
        for author, size in stored.items():
            if not self.exempt(author) and size > 0:
                self._add(Charge(author, size, ""), +1)

    def snapshot(self) -> dict[str, object]:
        return {"strangers_bytes": self.strangers_total, "fresh_bytes": self.fresh_total,
                "strangers_quota_bytes": self.limits.strangers_bytes, "stamped_authors": len(self.stamps),
                "stranger_authors": len(self.stored), "refused": dict(self.refused)}

    # -- internals

    def _add(self, charge: Charge, sign: int) -> None:
        delta = sign * charge.size
        self.stored[charge.author] = left = self.stored.get(charge.author, 0) + delta
        if left <= 0:
            self.stored.pop(charge.author, None)
        if charge.author not in self.stamps:
            self.fresh_total += delta
        self.strangers_total += delta
        bucket = self.per_subnet.get(charge.subnet)
        if sign < 0 and bucket is not None:   # a refund: the subnet may deliver those bytes again
            bucket.tokens = min(bucket.burst, bucket.tokens + charge.size)

    def _subnet(self, subnet: str, now_s: float) -> TokenBucket:
        bucket = self.per_subnet.get(subnet)
        if bucket is None:
            share = self.limits.addr_share * self.limits.strangers_bytes
            bucket = self.per_subnet[subnet] = TokenBucket.full(max(1.0, share / ADDR_REFILL_S), share, now_s)
            if len(self.per_subnet) > MAX_RATE_BUCKETS:
                self.per_subnet.popitem(last=False)
        self.per_subnet.move_to_end(subnet)
        return bucket

    def _bucket(self, author: bytes, fresh: bool, now_s: float) -> TokenBucket:
        bucket = self._buckets.get(author)
        if bucket is None:
            limits = self.limits
            bucket = (TokenBucket.full(limits.fresh_bytes_per_s, float(limits.fresh_author_bytes), now_s) if fresh
                      else TokenBucket.full(limits.stamped_bytes_per_s, limits.stamped_burst_bytes, now_s))
            self._buckets[author] = bucket
            if len(self._buckets) > MAX_RATE_BUCKETS:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(author)
        return bucket
