"""Pulls: entries peers announced by id (`Have`) that we lack, and when to ask whom for them.

Owned by swarm/gossip.py's Replicator, which tells it what we hold and how long an announced
entry may take to come in full (`Replicator.pull_delay_s`), and runs the loop that calls `ask`.
Knows nothing about the ledger or sockets: it reads a connection's state and pushes `WantIds`.

An announced id we do not hold becomes a pull, due after the announcer's delay; when due, the
first announcer not asked yet is asked. One that has not delivered within `want_timeout_s` is
passed over for the next, and with none left the pull is dropped (anti-entropy fills the gap).
Pulls are bounded in all and per first announcer, so a peer that announces ids it never serves
costs a timeout, never a stall.
"""
from __future__ import annotations

import asyncio
import heapq
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from swarm.connection import Connection
from swarm.protocol import MAX_IDS_PER_FRAME, WantIds

PULL_TICK_S = 0.002             # pulls falling due within this are asked together (fewer frames)
MAX_PULLS = 16_384              # announced ids we lack and track, all peers together
MAX_PULLS_PER_PEER = 2_048      # of them first announced by one peer
MAX_ANNOUNCERS = 8              # peers remembered per pull


@dataclass(slots=True)
class Pull:
    """An entry a peer announced and we lack."""

    first: Connection                  # its first announcer (for the per-peer bound)
    announcers: list[Connection]
    due_s: float                       # when to ask (again); its (due_s, id) is in the due heap
    asked: list[Connection] = field(default_factory=list)


class Pulls:
    """The bounded table of pulls, and the heap of when each falls due."""

    def __init__(self) -> None:
        self.asked = 0           # ids asked for by WantIds
        self.passed_over = 0     # asks that timed out, so the next announcer was asked
        self.dropped = 0         # pulls given up (no announcer left) or refused (bounds): anti-entropy's
        self.wake = asyncio.Event()   # a pull fell due sooner than the pull loop sleeps
        self.due: list[tuple[float, bytes]] = []  # heap of (due_s, id); stale rows skipped
        self._pulls: OrderedDict[bytes, Pull] = OrderedDict()
        self._by_peer: dict[Connection, int] = {}

    def on_have(self, conn: Connection, ids: tuple[bytes, ...], due_s: float, held: Callable[[bytes], bool]) -> None:
        """`conn` announced `ids`; those neither pulled already nor `held` are asked for from `due_s`."""
        for eid in ids:
            conn.mark_known(eid)
            pull = self._pulls.get(eid)
            if pull is not None:
                if conn not in pull.announcers and len(pull.announcers) < MAX_ANNOUNCERS:
                    pull.announcers.append(conn)
            elif not held(eid):
                if len(self._pulls) >= MAX_PULLS or self._by_peer.get(conn, 0) >= MAX_PULLS_PER_PEER:
                    self.dropped += 1
                    continue
                if not self.due or due_s < self.due[0][0]:
                    self.wake.set()
                self._pulls[eid] = Pull(conn, [conn], due_s)
                heapq.heappush(self.due, (due_s, eid))
                self._by_peer[conn] = self._by_peer.get(conn, 0) + 1

    def drop(self, eid: bytes) -> None:
        pull = self._pulls.pop(eid, None)
        if pull is not None:
            left = self._by_peer.get(pull.first, 1) - 1
            if left > 0:
                self._by_peer[pull.first] = left
            else:
                self._by_peer.pop(pull.first, None)

    def ask(self, now_s: float, held: Callable[[bytes], bool], want_timeout_s: float) -> None:
        """Asks for announced entries still missing: each from an announcer not asked before."""
        asks: dict[Connection, list[bytes]] = {}
        later: list[tuple[float, bytes]] = []
        while self.due and self.due[0][0] <= now_s:
            due_s, eid = heapq.heappop(self.due)
            pull = self._pulls.get(eid)
            if pull is None or pull.due_s != due_s:
                continue  # dropped, or rescheduled (its newer row is in the heap)
            if held(eid):
                self.drop(eid)
                continue
            if pull.asked:
                self.passed_over += 1
            fresh = [c for c in pull.announcers if c not in pull.asked and not c.closed.is_set()]
            if not fresh:
                self.drop(eid)
                self.dropped += 1
                continue
            batch = asks.setdefault(fresh[0], [])
            if len(batch) >= MAX_IDS_PER_FRAME:
                pull.due_s = now_s + PULL_TICK_S  # one frame per peer per tick: the rest go next tick
                later.append((pull.due_s, eid))
                continue
            batch.append(eid)
            pull.asked.append(fresh[0])
            pull.due_s = now_s + want_timeout_s
            later.append((pull.due_s, eid))
        for row in later:
            heapq.heappush(self.due, row)
        for conn, ids in asks.items():
            self.asked += len(ids)
            conn.push(WantIds(tuple(ids)))
