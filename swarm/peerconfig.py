"""The peer's settings: one frozen dataclass, validated when built. Defaults suit a real node;
tests and benchmarks shorten the intervals."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swarm.connection import PING_INTERVAL_S, SEND_QUEUE_FRAMES
from swarm.errors import BadMessage, SwarmError
from swarm.gossip import EAGER_FANOUT, INGEST_BATCH_WIRES
from swarm.protocol import check_addr
from swarm.quota import FRESH_AUTHOR_BYTES, STAMPED_AUTHOR_BYTES, STRANGERS_BYTES, QuotaLimits
from swarm.stamp import MAX_STAMP_BITS, NONCE_BYTES, STAMP_BITS

ANTI_ENTROPY_INTERVAL_S = 10.0
DIAL_INTERVAL_S = 1.0
CONNECT_TIMEOUT_S = 5.0
HANDSHAKE_TIMEOUT_S = 5.0
STAMP_FILE = "stamp.json"
STAMPS_FILE = "stamps.json"     # others' stamps, beside the peer table
ADDR_BAN_S = 120.0              # a banned inbound peer's source address is refused this long: shorter
                                # than the key's ban (limits.BAN_S), since an address may be shared (NAT)


@dataclass(frozen=True, slots=True)
class PeerConfig:
    host: str = "127.0.0.1"
    port: int = 0                    # 0: any free port; `Peer.address` says which
    advertise: str = ""              # the address others should dial; default: the bound one
    dial_from: str = ""              # source IP of our outbound connections; "": the OS's choice
    bootstrap: tuple[str, ...] = ()
    peer_table_path: Path | None = None
    anchors_path: Path | None = None  # good outbound peers kept across restarts; None: not kept
    max_inbound: int = 32
    max_inbound_per_addr: int = 4    # slots one address may hold (half-open or open)
    max_inbound_per_subnet: int = 8  # ... one /24 (IPv4) or /48 (IPv6)
    max_half_open: int = 48          # upgraded connections still waiting for their hello (half of
                                     # max_inbound_per_subnet from one subnet: 12 subnets to fill them)
    reserved_useful: int = 8         # inbound slots only peers that delivered entries may take (a quarter at most)
    addr_ban_s: float = ADDR_BAN_S   # a banned inbound peer's address refused this long (0: keys only)
    max_outbound: int = 8
    dial_interval_s: float = DIAL_INTERVAL_S
    anti_entropy_interval_s: float = ANTI_ENTROPY_INTERVAL_S
    ping_interval_s: float = PING_INTERVAL_S
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    send_queue_frames: int = SEND_QUEUE_FRAMES
    ingest_batch_wires: int = INGEST_BATCH_WIRES
    peer_exchange: bool = True
    eager_fanout: int | None = EAGER_FANOUT  # peers that get a forwarded entry in full; None: all of them
    seed: int | None = None          # for the peer choice's rng; None: from the OS
    # Spam and disk (swarm/quota.py, swarm/stamp.py). Strangers: every author but us and those the
    # swarm valued (trusted verifiers, the creator, a positive balance).
    stranger_quota_bytes: int = STRANGERS_BYTES  # strangers' entries we store, all together
    fresh_author_bytes: int = FRESH_AUTHOR_BYTES      # one identity without a stamp
    stamped_author_bytes: int = STAMPED_AUTHOR_BYTES  # one identity with a stamp
    stamp_bits: int = STAMP_BITS     # the difficulty a stamp must meet here (the swarm's: keep it equal)
    stamp: bytes = b""               # our own stamp's nonce, if minted already
    stamp_path: Path | None = None   # where our stamp is kept; minted there (a thread) if missing;
                                     # None: beside the peer table (STAMP_FILE), if that is kept

    def stamp_file(self) -> Path | None:
        """Where our stamp is kept: `stamp_path`, or beside the peer table; None: no stamp minted
        (in-process test swarms, which run under the unstamped quota)."""
        if self.stamp_path is not None:
            return self.stamp_path
        return self.peer_table_path.with_name(STAMP_FILE) if self.peer_table_path is not None else None

    def stamps_file(self) -> Path | None:
        """Where others' stamps are kept across restarts: beside the peer table, if that is kept."""
        return self.peer_table_path.with_name(STAMPS_FILE) if self.peer_table_path is not None else None

    def quota_limits(self) -> QuotaLimits:
        return QuotaLimits(strangers_bytes=self.stranger_quota_bytes, fresh_author_bytes=self.fresh_author_bytes,
                           stamped_author_bytes=self.stamped_author_bytes)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SwarmError(f"config: port {self.port} out of range")
        if min(self.max_inbound, self.max_outbound, self.max_inbound_per_addr, self.max_inbound_per_subnet,
               self.max_half_open, self.reserved_useful) < 0:
            raise SwarmError("config: connection limits must not be negative")
        for addr in self.bootstrap + ((self.advertise,) if self.advertise else ()):
            try:
                check_addr(addr)
            except BadMessage as exc:
                raise SwarmError(f"config: {exc}") from None
        for name in ("dial_interval_s", "anti_entropy_interval_s", "ping_interval_s", "connect_timeout_s",
                     "handshake_timeout_s"):
            if getattr(self, name) <= 0:
                raise SwarmError(f"config: {name} must be positive")
        if self.addr_ban_s < 0:
            raise SwarmError("config: addr_ban_s must not be negative")
        if self.eager_fanout is not None and self.eager_fanout < 0:
            raise SwarmError("config: eager_fanout must not be negative")
        if self.send_queue_frames < 1 or self.ingest_batch_wires < 1:
            raise SwarmError("config: queue sizes must be positive")
        if min(self.stranger_quota_bytes, self.fresh_author_bytes, self.stamped_author_bytes) < 0:
            raise SwarmError("config: quotas must not be negative")
        if not 0 <= self.stamp_bits <= MAX_STAMP_BITS:
            raise SwarmError(f"config: stamp_bits must be 0 to {MAX_STAMP_BITS}")
        if self.stamp and len(self.stamp) != NONCE_BYTES:
            raise SwarmError(f"config: a stamp is {NONCE_BYTES} bytes")
