"""Per-peer counters and their plain-dict snapshot for the node and the dashboard.

Knows nothing about sockets; the connection bumps counters, readers take `snapshot()`.
Reject reasons come from a small fixed vocabulary (limits.PENALTIES' keys and a few more), so
the counters stay bounded however a peer misbehaves.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_REASONS = 64  # distinct reject reasons kept per peer; more fold into "other"


@dataclass(slots=True)
class PeerStats:
    node: str                  # the peer's node id as text
    addr: str                  # where we reached it, or where it says it listens
    inbound: bool
    connected_ms: int
    entries_in: int = 0        # entries this peer sent that we appended
    entries_out: int = 0
    duplicates_in: int = 0     # entries it sent that we already held
    pending_in: int = 0        # entries it sent that wait for a dependency
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped_out: int = 0       # frames dropped because its send queue was full
    throttled_in: int = 0      # over-rate frames answering our requests: slowed down, not penalized
    rtt_ms: float | None = None
    score: float = 0.0
    rejects: Counter[str] = field(default_factory=Counter)

    def reject(self, reason: str, times: int = 1) -> None:
        if reason not in self.rejects and len(self.rejects) >= MAX_REASONS:
            reason = "other"
        self.rejects[reason] += times

    def snapshot(self) -> dict[str, Any]:
        return {
            "node": self.node, "addr": self.addr, "inbound": self.inbound, "connected_ms": self.connected_ms,
            "entries_in": self.entries_in, "entries_out": self.entries_out,
            "duplicates_in": self.duplicates_in, "pending_in": self.pending_in,
            "frames_in": self.frames_in, "frames_out": self.frames_out,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "dropped_out": self.dropped_out,
            "throttled_in": self.throttled_in,
            "rtt_ms": self.rtt_ms, "score": round(self.score, 2), "rejects": dict(self.rejects),
        }


@dataclass(slots=True)
class SwarmStats:
    """Node-wide counters, including what happened before a handshake named the peer."""

    connections_in: int = 0
    connections_out: int = 0
    handshakes_failed: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # inbound refused: limit, banned, duplicate
    bans: int = 0
    closed_peers: Counter[str] = field(default_factory=Counter)  # accumulated rejects of gone peers

    def fail(self, counter: Counter[str], reason: str) -> None:
        if reason not in counter and len(counter) >= MAX_REASONS:
            reason = "other"
        counter[reason] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "connections_in": self.connections_in, "connections_out": self.connections_out,
            "handshakes_failed": dict(self.handshakes_failed), "refused": dict(self.refused),
            "bans": self.bans, "closed_peer_rejects": dict(self.closed_peers),
        }
