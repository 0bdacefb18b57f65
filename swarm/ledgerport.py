"""The one place the swarm meets `ledger.store`: if the store's names change, only this changes.

Knows nothing about peers. Turns store outcomes into the swarm's `Result` with a reject reason
from a small fixed vocabulary (so per-peer counters stay bounded) and whether the sender is to
blame for it.
"""
from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.bodies import Body, Fraud
from ledger.entry import Entry, decode_entry
from ledger.errors import InvalidEntry, LedgerError
from ledger.feed import feed_order
from ledger.keys import Identity
from ledger.store import Ledger
from ledger.writer import Outcome, Status
from swarm.errors import SwarmError
from swarm.protocol import TIP_BYTES


INLINE_BELOW = 16  # wires; smaller batches are verified on the event loop
SCAN_WIRES = 2_000  # wires per read when counting what each author holds


class Verdict(enum.Enum):
    APPENDED = "appended"
    DUPLICATE = "duplicate"
    PENDING = "pending"
    FORK = "fork"
    REJECTED = "rejected"


_VERDICTS = {
    Status.APPENDED: Verdict.APPENDED, Status.DUPLICATE: Verdict.DUPLICATE, Status.PENDING: Verdict.PENDING,
    Status.FORK: Verdict.FORK, Status.REJECTED: Verdict.REJECTED,
}


@dataclass(frozen=True, slots=True)
class Result:
    verdict: Verdict
    reason: str = ""          # for REJECTED: a key of limits.PENALTIES or a blameless reason
    detail: str = ""          # the store's own words, for logs
    fraud: Fraud | None = None
    entry: Entry | None = None  # the decoded entry, when this side decoded it (saves a second decode)


def reject_reason(detail: str) -> str:
    """Buckets the store's free-form reject text into a few counter keys."""
    text = detail.lower()
    if "signature" in text:
        return "bad_signature"
    if "pending area full" in text:
        return "pending_full"      # blamed on the sender only if its own entries fill the area (gossip)
    if "frozen" in text:
        return "frozen_author"     # honest peers forward until they learn of the fork
    if "broken chain" in text:
        return "broken_chain"      # one branch of a fork reached us first
    if "another swarm" in text:
        return "wrong_swarm"
    return "invalid_entry"


# Reasons that say the sender itself built or relayed something no honest node relays.
BLAMED = frozenset({"bad_signature", "wrong_swarm", "invalid_entry"})


def to_result(outcome: Outcome) -> Result:
    verdict = _VERDICTS[outcome.status]
    if verdict is Verdict.REJECTED:
        return Result(verdict, reject_reason(outcome.reason), outcome.reason)
    return Result(verdict, "", outcome.reason, outcome.fraud)


class LedgerPort:
    """What replication needs from an open ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @property
    def swarm_id(self) -> bytes:
        return self.ledger.swarm_id

    async def append_wires(self, wires: Sequence[bytes]) -> list[Result]:
        """One result per wire, in order. Big batches go to the store's batch append (signatures
        checked on every core); small ones — pushes, the common case — are checked here, on the
        loop: a thread round trip per hop costs more latency than the check itself."""
        try:
            if len(wires) >= INLINE_BELOW:
                return [to_result(o) for o in await self.ledger.append_wires(wires)]
            results: list[Result | None] = [None] * len(wires)
            good: list[tuple[int, Entry]] = []
            for i, wire in enumerate(wires):
                try:
                    good.append((i, decode_entry(wire, swarm=self.ledger.swarm_id)))  # verifies first
                except InvalidEntry as exc:
                    results[i] = Result(Verdict.REJECTED, reject_reason(str(exc)), str(exc))
            ordered = feed_order(good)
            if len(ordered) == 1:  # a push: skip gather's task
                outcomes = [await self.ledger.append(ordered[0][1])]
            else:
                outcomes = list(await asyncio.gather(*(self.ledger.append(entry) for _, entry in ordered)))
            for (i, entry), outcome in zip(ordered, outcomes):
                result = to_result(outcome)
                results[i] = Result(result.verdict, result.reason, result.detail, result.fraud, entry)
            return [r if r is not None else Result(Verdict.REJECTED, "invalid_entry", "not placed") for r in results]
        except LedgerError as exc:
            raise SwarmError(f"ledger refused a batch: {exc}") from exc

    async def publish(self, identity: Identity, body: Body, time_ms: int) -> Entry:
        try:
            return await self.ledger.publish(identity, body, time_ms=time_ms)
        except LedgerError as exc:
            raise SwarmError(f"ledger refused our own entry: {exc}") from exc

    async def heads(self) -> dict[bytes, int]:
        return await self.ledger.heads()

    async def heads_tips(self) -> dict[bytes, tuple[int, bytes]]:
        """Author -> (highest seq, the first TIP_BYTES of that entry's id)."""
        return {a: (seq, eid[:TIP_BYTES]) for a, (seq, eid) in (await self.heads_ids()).items()}

    async def heads_ids(self) -> dict[bytes, tuple[int, bytes]]:
        """Author -> (highest seq, that entry's whole id)."""
        out = {}
        for author in await self.ledger.heads():
            head = await self.ledger.head(author)
            if head is not None:
                out[author] = (head.seq, head.id)
        return out

    async def count(self) -> int:
        return await self.ledger.count()

    async def head_seq(self, author: bytes) -> int:
        head = await self.ledger.head(author)
        return head.seq if head is not None else 0

    async def wires_after(self, author: bytes, seq: int, limit: int) -> list[bytes]:
        try:
            return await self.ledger.wires_after(author, seq, limit)
        except LedgerError as exc:
            raise SwarmError(f"ledger read failed: {exc}") from exc

    async def wire(self, entry_id: bytes) -> bytes | None:
        try:
            entry = await self.ledger.get(entry_id)
        except LedgerError as exc:
            raise SwarmError(f"ledger read failed: {exc}") from exc
        return entry.wire if entry is not None else None

    async def holds(self, entry_id: bytes) -> bool:
        try:
            return await self.ledger.get(entry_id) is not None
        except LedgerError as exc:
            raise SwarmError(f"ledger read failed: {exc}") from exc

    @property
    def pending_count(self) -> int:
        return self.ledger.pending_count

    def valued(self, author: bytes) -> bool:
        """Whether the swarm valued this author's work: a trusted verifier, the spec's creator, or a
        positive balance (credits are minted only for verified work). Its entries are never a
        stranger's (swarm/quota.py). Reads the fold's state: a few dict lookups."""
        state = self.ledger.state
        return author in state.verifiers or author == state.spec.creator or state.balances.get(author, 0) > 0

    async def stored_bytes(self, skip: frozenset[bytes] = frozenset()) -> dict[bytes, int]:
        """Bytes each author holds in the ledger (every wire read once: at start, for the quotas)."""
        out: dict[bytes, int] = {}
        for author in await self.ledger.heads():
            if author in skip:
                continue
            seq = total = 0
            while True:
                wires = await self.wires_after(author, seq, SCAN_WIRES)
                total += sum(len(w) for w in wires)
                seq += len(wires)   # a held feed has every seq from 1 to its head
                if len(wires) < SCAN_WIRES:
                    break
            out[author] = total
        return out
