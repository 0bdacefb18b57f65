"""Anchors: a few good outbound peers written at shutdown and dialed first at the next start.

Knows nothing about sockets. An attacker who fills our address table while we are down still
meets the peers we trusted before (Bitcoin Core keeps its block-relay peers the same way). The
file is small, written whole to a temporary name and renamed; an unreadable one means no anchors.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from swarm.errors import BadMessage
from swarm.peertable import dialable
from swarm.protocol import check_addr

MAX_ANCHORS = 4
ANCHOR_MIN_S = 60.0        # an outbound link this old (and well-behaved) makes its peer an anchor
MAX_ANCHOR_FILE_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class LinkSummary:
    addr: str
    outbound: bool
    age_s: float
    score: float
    entries_in: int


def choose_anchors(links: list[LinkSummary], *, min_age_s: float | None = None, min_score: float = -20.0,
                   limit: int = MAX_ANCHORS) -> list[str]:
    """The outbound links old and well-behaved enough, most useful (entries delivered) first."""
    min_age_s = ANCHOR_MIN_S if min_age_s is None else min_age_s
    good = [link for link in links if link.outbound and link.age_s >= min_age_s and link.score > min_score]
    good.sort(key=lambda link: (-link.entries_in, -link.age_s))
    return [link.addr for link in good[:limit]]


def load_anchors(path: Path) -> list[str]:
    try:
        if path.stat().st_size > MAX_ANCHOR_FILE_BYTES:
            return []
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return []
    addrs = data.get("anchors") if isinstance(data, dict) else None
    out: list[str] = []
    for addr in addrs if isinstance(addrs, list) else []:
        try:
            check_addr(addr)
        except BadMessage:
            continue
        if dialable(addr) and addr not in out:
            out.append(addr)
    return out[:MAX_ANCHORS]


def save_anchors(path: Path, addrs: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"version": 1, "anchors": addrs[:MAX_ANCHORS]}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
