"""Addresses of peers we know, kept across restarts in a small JSON file; bounded.

Against eclipse (one party surrounding a node with its own peers), as Bitcoin Core's address
manager does: every gossiped address is filed in a bucket keyed by the source group (the /16,
or IPv6 /32, of the peer that told us), a bucket holds at most MAX_PER_SOURCE addresses that
never answered (a new one from a full bucket replaces the oldest there, so one peer churns only
its own bucket), and `choose_dials` takes at most one address per group in a round and none in
a group we are already connected to. Addresses that can never be a peer (unspecified,
multicast, broadcast) are refused. Anchors (swarm/peer.py) keep good peers across restarts.

Knows nothing about sockets. The peer reports what happened (connected, failed, learned from
someone) and asks `choose_dials` whom to dial next; choice is a pure function of the table, the
clock and an `rng` passed in, so it has property tests. Files are written whole to a temporary
name and renamed, so a crash leaves the old table or the new one, never half of either.
"""
from __future__ import annotations

import functools
import ipaddress
import json
import os
import random
import re
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from swarm.errors import BadMessage, SwarmError
from swarm.protocol import check_addr

MAX_PEERS = 1000
MAX_FILE_BYTES = 1 << 20
RETRY_BASE_S = 2.0        # after a failure, wait RETRY_BASE_S * 2^failures (capped) before redialing
RETRY_MAX_S = 600.0
FORGET_AFTER_FAILURES = 10  # a gossiped address that never answered goes; bootstrap ones stay
MAX_PER_SOURCE = 64         # never-answered addresses filed from one source group


def host_of(addr: str) -> str:
    """The host part of host:port or [v6]:port."""
    host = addr.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


@functools.lru_cache(maxsize=4096)  # pure, and the dialer asks it for every known address each round
def group_of(host: str) -> str:
    """The /16 (IPv4) or /32 (IPv6) of an IP address; a host name is its own group."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 16 if ip.version == 4 else 32
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def dialable(addr: str) -> bool:
    """False for hosts that can never be one peer: unspecified, multicast, broadcast, port 0."""
    host, _, port = addr.rpartition(":")
    if port in ("", "0"):
        return False
    try:
        ip = ipaddress.ip_address(host_of(addr))
    except ValueError:
        return True  # a host name: resolved when dialed
    return not (ip.is_unspecified or ip.is_multicast or str(ip) == "255.255.255.255")


@dataclass(slots=True)
class PeerRecord:
    addr: str
    node: str = ""             # hex node id once a handshake named it
    bootstrap: bool = False
    last_ok_s: float = 0.0     # wall-clock time of the last successful handshake
    failures: int = 0
    next_try_s: float = 0.0
    source: str = ""           # group of the peer that told us ("": configured, or learned from the peer itself)


class PeerTable:
    def __init__(self, max_peers: int = MAX_PEERS) -> None:
        self.max_peers = max_peers
        self.records: dict[str, PeerRecord] = {}
        self._fresh: dict[str, dict[str, None]] = {}  # source -> its never-answered addresses, oldest first

    def __len__(self) -> int:
        return len(self.records)

    def add(self, addr: str, *, bootstrap: bool = False, source: str = "") -> bool:
        """Adds an address (validated); returns whether it is in the table afterwards.
        `source`: the group (`group_of`) of the peer that gossiped it, "" if nobody did."""
        try:
            check_addr(addr)
        except BadMessage:
            return False
        if not dialable(addr):
            return False
        record = self.records.get(addr)
        if record is not None:
            record.bootstrap = record.bootstrap or bootstrap
            return True
        bucket = self._fresh.get(source) if source else None
        if bucket is not None and len(bucket) >= MAX_PER_SOURCE:
            self._drop(next(iter(bucket)))  # the oldest from this source: it churns only its own bucket
        if len(self.records) >= self.max_peers and not self._evict():
            return False
        self.records[addr] = PeerRecord(addr, bootstrap=bootstrap, source=source)
        if source and not bootstrap:
            self._fresh.setdefault(source, {})[addr] = None
        return True

    def _drop(self, addr: str) -> None:
        record = self.records.pop(addr, None)
        if record is not None:
            self._unfresh(record)

    def _unfresh(self, record: PeerRecord) -> None:
        bucket = self._fresh.get(record.source)
        if bucket is not None:
            bucket.pop(record.addr, None)
            if not bucket:
                del self._fresh[record.source]

    def _evict(self) -> bool:
        # from the biggest source bucket: the worst gossiped address there (most failures, then
        # least recently good), so a flood of addresses from one group evicts its own
        candidates = [r for r in self.records.values() if not r.bootstrap]
        if not candidates:
            return False
        sizes: dict[str, int] = {}
        for r in candidates:
            sizes[r.source] = sizes.get(r.source, 0) + 1
        worst = max(candidates, key=lambda r: (r.last_ok_s <= 0, sizes[r.source], r.failures, -r.last_ok_s))
        self._drop(worst.addr)
        return True

    def succeeded(self, addr: str, node_hex: str, now_s: float) -> None:
        if not self.add(addr):
            return
        record = self.records[addr]
        record.node, record.last_ok_s, record.failures, record.next_try_s = node_hex, now_s, 0, 0.0
        self._unfresh(record)  # it answered: no longer one of its source's unproven addresses

    def failed(self, addr: str, now_s: float) -> None:
        record = self.records.get(addr)
        if record is None:
            return
        record.failures += 1
        if record.failures >= FORGET_AFTER_FAILURES and not record.bootstrap:
            self._drop(addr)
            return
        record.next_try_s = now_s + min(RETRY_MAX_S, RETRY_BASE_S * 2 ** min(record.failures, 20))

    def good_addrs(self, limit: int, rng: random.Random) -> list[str]:
        """Addresses worth telling others about: ones that answered at some point."""
        good = [r.addr for r in self.records.values() if r.last_ok_s > 0 and r.failures == 0]
        return rng.sample(good, min(limit, len(good)))

    # -- persistence

    def to_json(self) -> str:
        return json.dumps({"version": 1, "peers": [asdict(r) for r in self.records.values()]}, indent=1)

    @classmethod
    def from_json(cls, text: str, max_peers: int = MAX_PEERS) -> PeerTable:
        table = cls(max_peers)
        try:
            data = json.loads(text)
            rows = data["peers"] if isinstance(data, dict) and data.get("version") == 1 else None
        except (ValueError, KeyError, TypeError):
            rows = None
        if not isinstance(rows, list):
            raise SwarmError("peer table file is not a version-1 table")
        for row in rows[:max_peers]:
            if not isinstance(row, dict) or not table.add(row.get("addr", ""), bootstrap=bool(row.get("bootstrap"))):
                continue
            record = table.records[row["addr"]]
            node = _typed(row, "node", str, "")
            record.node = node if re.fullmatch(r"[0-9a-f]{64}", node) else ""
            record.last_ok_s = float(_typed(row, "last_ok_s", (int, float), 0.0))
            record.failures = max(0, int(_typed(row, "failures", int, 0)))
            record.source = str(_typed(row, "source", str, ""))[:64]
            if record.source and record.last_ok_s <= 0 and not record.bootstrap:
                table._fresh.setdefault(record.source, {})[record.addr] = None
        return table

    @classmethod
    def load(cls, path: Path, max_peers: int = MAX_PEERS) -> PeerTable:
        """The table in `path`; an empty one if the file is missing or unreadable (a cache, not truth)."""
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                return cls(max_peers)
            return cls.from_json(path.read_text(encoding="utf-8"), max_peers)
        except (OSError, UnicodeDecodeError, SwarmError):
            return cls(max_peers)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _typed(row: dict[str, Any], key: str, types: type | tuple[type, ...], default: Any) -> Any:
    value = row.get(key, default)
    return value if isinstance(value, types) and not isinstance(value, bool) else default


def choose_dials(
    table: PeerTable, *, connected: Collection[str], banned: Collection[str], own: Collection[str],
    want: int, now_s: float, rng: random.Random,
) -> list[str]:
    """Up to `want` addresses to dial now: due for a try, not connected, not banned, not us.

    Addresses that answered before come first (peers kept across restarts resist eclipse), in
    random order within each group so that many nodes do not all dial the same few. For
    diversity, at most one address per network group (`group_of`) in a round, and none in a
    group of an address already connected — unless every address is in one group (a swarm on
    one network, e.g. loopback), where diversity cannot help.
    """
    if want <= 0:
        return []
    due = [
        r for r in table.records.values()
        if r.next_try_s <= now_s and r.addr not in connected and r.addr not in own
        and r.addr not in banned and (not r.node or r.node not in banned) and dialable(r.addr)
    ]
    known = [r.addr for r in due if r.last_ok_s > 0]
    fresh = [r.addr for r in due if r.last_ok_s <= 0]
    rng.shuffle(known)
    rng.shuffle(fresh)
    taken = {group_of(host_of(a)) for a in connected}
    picked: list[str] = []
    for addr in known + fresh:
        group = group_of(host_of(addr))
        if group not in taken and len(picked) < want:
            picked.append(addr)
            taken.add(group)
    groups = {group_of(host_of(a)) for a in known + fresh} | {group_of(host_of(a)) for a in connected}
    if len(groups) <= 1:
        return (known + fresh)[:want]  # one network only (loopback, a lab): diversity cannot help
    return picked
