"""Rate limits, misbehaviour scores and bans: pure bookkeeping, the clock passed in.

Knows nothing about sockets or messages; the peer reports what a connection did and asks
whether to drop a frame, disconnect, or refuse a node.

A peer starts at score 0. Each bad input costs the penalty of its reason; the score recovers
SCORE_RECOVERY_PER_S toward 0 while the peer behaves. At BAN_SCORE or below the peer is
disconnected and its node id banned for BAN_S. Honest peers make occasional mistakes (a
duplicate, an entry that waits for a dependency): those cost nothing.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

BAN_SCORE = -100.0
SCORE_RECOVERY_PER_S = 1.0
BAN_S = 600.0
MAX_BANS = 4096

FRAMES_PER_S = 500.0        # sustained frames from one peer
FRAME_BURST = 2000.0
BYTES_PER_S = 16 * 1024 * 1024
BYTE_BURST = 64 * 1024 * 1024
SYNCS_PER_S = 2.0           # heads pages and wants from one peer: each costs a scan of our heads
SYNC_BURST = 64.0
HANDSHAKES_PER_S = 20.0     # inbound connection attempts, all peers together
REQUEST_WINDOW_S = 30.0     # after we ask a peer for entries or heads, its answers are not penalized
MAX_THROTTLE_S = 5.0        # one over-rate answer waits at most this long for tokens
HANDSHAKE_BURST = 200.0
# Unasked copies of entries we hold: honest pushes race (0.6 per peer per entry in bench_swarm at
# 64 peers), a flood of one valid entry over and over costs a hash each and must end in a ban.
DUPLICATES_PER_S = 200.0
DUPLICATE_BURST = 4000.0

# Reason -> penalty. A reason not listed costs DEFAULT_PENALTY.
PENALTIES: dict[str, float] = {
    "malformed": 20.0,        # not msgpack, wrong shape or types
    "oversized": 50.0,        # a frame over MAX_FRAME_BYTES
    "text_frame": 20.0,
    "bad_signature": 25.0,    # an entry whose signature does not verify
    "invalid_entry": 20.0,    # signed, but not a valid entry (bad fields, kind or size)
    "wrong_swarm": 20.0,      # an entry of another swarm
    "rejected_entry": 10.0,   # refused by the ledger (broken chain, frozen author, pending full)
    "fork": 0.0,              # forwarding someone's fork proves the fork: not the sender's fault
    "rate": 2.0,              # over its rate limit: the frame is dropped
    "pending_flood": 2.0,     # an entry that waits for a dependency, past the link's share of the area
    "pending_full": 2.0,      # refused for a full pending area that this link's entries fill
    "unexpected": 10.0,       # a message out of place
    "bad_addr": 5.0,
    "quota": 1.0,             # an unasked entry over its author's or its address's quota (swarm/quota.py)
    "bad_stamp": 20.0,        # an identity stamp that does not check (swarm/stamp.py)
    "duplicate_flood": 1.0,   # an unasked copy of an entry we hold, past DUPLICATES_PER_S
}
DEFAULT_PENALTY = 10.0


@dataclass(slots=True)
class TokenBucket:
    rate_per_s: float
    burst: float
    tokens: float
    updated_s: float

    @classmethod
    def full(cls, rate_per_s: float, burst: float, now_s: float) -> TokenBucket:
        return cls(rate_per_s, burst, burst, now_s)

    def wait_s(self, amount: float, now_s: float) -> float:
        """Seconds until `amount` tokens are there (0: now); never takes any."""
        elapsed = max(0.0, now_s - self.updated_s)
        tokens = min(self.burst, self.tokens + elapsed * self.rate_per_s)
        if tokens >= amount:
            return 0.0
        return (min(amount, self.burst) - tokens) / self.rate_per_s

    def take(self, amount: float, now_s: float) -> bool:
        """Takes `amount` tokens if there are enough; False (taking nothing) if not."""
        elapsed = max(0.0, now_s - self.updated_s)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate_per_s)
        self.updated_s = now_s
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True


@dataclass(slots=True)
class Score:
    value: float = 0.0
    updated_s: float = 0.0

    def penalize(self, reason: str, now_s: float, times: int = 1) -> float:
        self._recover(now_s)
        self.value -= PENALTIES.get(reason, DEFAULT_PENALTY) * times
        return self.value

    def current(self, now_s: float) -> float:
        self._recover(now_s)
        return self.value

    def _recover(self, now_s: float) -> None:
        elapsed = max(0.0, now_s - self.updated_s)
        self.value = min(0.0, self.value + elapsed * SCORE_RECOVERY_PER_S)
        self.updated_s = now_s


def should_ban(score: float) -> bool:
    return score <= BAN_SCORE


@dataclass(slots=True)
class ConnectionLimits:
    """One connection's rate limits and score."""

    frames: TokenBucket
    bytes: TokenBucket
    syncs: TokenBucket
    score: Score
    # Until then the peer is answering a request of ours (heads, wants, a digest): frames over
    # the rate are then slowed down (through TCP), never penalized — a syncing node must not ban
    # the peer for sending what it asked for.
    requested_until_s: float = 0.0
    # Answers inside that window pay from these instead, so a big catch-up cannot drain the
    # buckets that the peer's pings and digests need.
    answer_frames: TokenBucket | None = None
    answer_bytes: TokenBucket | None = None
    duplicates: TokenBucket | None = None   # unasked copies of held entries (DUPLICATES_PER_S)

    @classmethod
    def fresh(cls, now_s: float) -> ConnectionLimits:
        return cls(
            TokenBucket.full(FRAMES_PER_S, FRAME_BURST, now_s),
            TokenBucket.full(BYTES_PER_S, BYTE_BURST, now_s),
            TokenBucket.full(SYNCS_PER_S, SYNC_BURST, now_s),
            Score(0.0, now_s),
            duplicates=TokenBucket.full(DUPLICATES_PER_S, DUPLICATE_BURST, now_s),
        )

    def duplicate_ok(self, now_s: float) -> bool:
        """Whether one more unasked copy of an entry we hold is within the link's allowance."""
        if self.duplicates is None:
            self.duplicates = TokenBucket.full(DUPLICATES_PER_S, DUPLICATE_BURST, now_s)
        return self.duplicates.take(1.0, now_s)

    def note_request(self, now_s: float) -> None:
        self.requested_until_s = now_s + REQUEST_WINDOW_S

    def requested(self, now_s: float) -> bool:
        return now_s < self.requested_until_s

    def answer_wait_s(self, size: int, now_s: float) -> float:
        """How long an answer of `size` bytes must wait for the answer buckets; takes the tokens
        (the caller waits that long, then hands the frame on: it is never dropped or penalized)."""
        if self.answer_frames is None or self.answer_bytes is None:
            self.answer_frames = TokenBucket.full(FRAMES_PER_S, FRAME_BURST, now_s)
            self.answer_bytes = TokenBucket.full(BYTES_PER_S, BYTE_BURST, now_s)
        wait_s = max(self.answer_frames.wait_s(1.0, now_s), self.answer_bytes.wait_s(float(size), now_s))
        # pay now, as if at now + wait_s: tokens may go negative, which is the debt the wait covers
        for bucket, amount in ((self.answer_frames, 1.0), (self.answer_bytes, float(size))):
            bucket.take(0.0, now_s)
            bucket.tokens -= min(amount, bucket.burst)
        return wait_s

    def admit(self, size: int, now_s: float) -> bool:
        """Whether a frame of `size` bytes is within the limits (both buckets, or neither, pay)."""
        if not self.frames.take(1.0, now_s):
            return False
        if not self.bytes.take(float(size), now_s):
            self.frames.tokens += 1.0
            return False
        return True


class Bans:
    """Node ids (or addresses) banned until a time; bounded, the soonest to expire goes first."""

    def __init__(self, max_bans: int = MAX_BANS) -> None:
        self.max_bans = max_bans
        self._until: OrderedDict[bytes | str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def ban(self, key: bytes | str, now_s: float, duration_s: float = BAN_S) -> None:
        self._until.pop(key, None)
        while len(self._until) >= self.max_bans:
            soonest = min(self._until, key=self._until.__getitem__)
            del self._until[soonest]
        self._until[key] = now_s + duration_s

    def banned(self, key: bytes | str, now_s: float) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if until <= now_s:
            del self._until[key]
            return False
        return True
