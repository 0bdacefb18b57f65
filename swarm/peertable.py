"""Addresses of peers we know, kept across restarts in a small JSON file; bounded.

Knows nothing about sockets. The peer reports what happened (connected, failed, learned from
someone) and asks `choose_dials` whom to dial next; choice is a pure function of the table, the
clock and an `rng` passed in, so it has property tests. Files are written whole to a temporary
name and renamed, so a crash leaves the old table or the new one, never half of either.
"""
from __future__ import annotations

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


@dataclass(slots=True)
class PeerRecord:
    addr: str
    node: str = ""             # hex node id once a handshake named it
    bootstrap: bool = False
    last_ok_s: float = 0.0     # wall-clock time of the last successful handshake
    failures: int = 0
    next_try_s: float = 0.0


class PeerTable:
    def __init__(self, max_peers: int = MAX_PEERS) -> None:
        self.max_peers = max_peers
        self.records: dict[str, PeerRecord] = {}

    def __len__(self) -> int:
        return len(self.records)

    def add(self, addr: str, *, bootstrap: bool = False) -> bool:
        """Adds an address (validated); returns whether it is in the table afterwards."""
        try:
            check_addr(addr)
        except BadMessage:
            return False
        record = self.records.get(addr)
        if record is not None:
            record.bootstrap = record.bootstrap or bootstrap
            return True
        if len(self.records) >= self.max_peers and not self._evict():
            return False
        self.records[addr] = PeerRecord(addr, bootstrap=bootstrap)
        return True

    def _evict(self) -> bool:
        # the worst gossiped address: most failures, then least recently good
        candidates = [r for r in self.records.values() if not r.bootstrap]
        if not candidates:
            return False
        worst = max(candidates, key=lambda r: (r.failures, -r.last_ok_s))
        del self.records[worst.addr]
        return True

    def succeeded(self, addr: str, node_hex: str, now_s: float) -> None:
        if not self.add(addr):
            return
        record = self.records[addr]
        record.node, record.last_ok_s, record.failures, record.next_try_s = node_hex, now_s, 0, 0.0

    def failed(self, addr: str, now_s: float) -> None:
        record = self.records.get(addr)
        if record is None:
            return
        record.failures += 1
        if record.failures >= FORGET_AFTER_FAILURES and not record.bootstrap:
            del self.records[addr]
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
    random order within each group so that many nodes do not all dial the same few.
    """
    if want <= 0:
        return []
    due = [
        r for r in table.records.values()
        if r.next_try_s <= now_s and r.addr not in connected and r.addr not in own
        and r.addr not in banned and (not r.node or r.node not in banned)
    ]
    known = [r.addr for r in due if r.last_ok_s > 0]
    fresh = [r.addr for r in due if r.last_ok_s <= 0]
    rng.shuffle(known)
    rng.shuffle(fresh)
    return (known + fresh)[:want]
