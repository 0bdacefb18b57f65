"""What the node API's route groups (nodeapi_research, nodeapi_notes, nodeapi_market) share: the
fold's state kept in step with the claim index, commit resolution, and the JSON of a claim.

Knows the node only through `Backend`; HTTP only as far as a route's `web.Request`.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from ledger.bodies import UCR_PER_CREDIT
from ledger.fold import State
from ledger.keys import node_id_text
from swarm import gitrepo

from node.research.history import ClaimRecord
from node.web import views
from node.web.agents import AgentRegistry
from node.web.backend import Backend, Submission
from node.web.common import COMMIT_HEX, ApiError, echo, full_hex, match_prefix, own_keys, untrusted

TOP_N = 10                           # frontier rows per list, top earners
DEFAULT_LIMIT = 20
MAX_LIMIT = 500


class NodeContext:
    """One node's Backend as the routes read it; shared by every route group."""

    def __init__(self, backend: Backend, agents: AgentRegistry) -> None:
        self.backend, self.agents = backend, agents
        self.mine = own_keys(backend)
        self._sync_lock = asyncio.Lock()

    async def state(self) -> State:
        # one sync at a time: two concurrent ones would both index the same new claim
        async with self._sync_lock:
            await self.backend.history.sync(self.backend.ledger)
        return self.backend.ledger.state

    def classes(self) -> list[str]:
        return list(self.backend.ledger.spec.spec.platform_classes)

    def default_class(self) -> str:
        mine = [c for c in self.backend.platform_classes if c in self.classes()]
        return (mine or self.classes())[0]

    @property
    def baseline(self) -> bytes:
        return self.backend.ledger.spec.spec.baseline_commit

    def best_commit(self, state: State, cls: str) -> bytes:
        """What a new edit builds on by default: the class's record, else the baseline."""
        best = views.best_record(state, cls)
        return best.commit if best is not None else self.baseline

    def known_commits(self) -> set[bytes]:
        history = self.backend.history
        known = set(history.by_commit) | {r.body.parent for r in history.claims.values() if r.body.parent}
        known.add(self.baseline)
        known.update(s.commit for s in self.backend.queued())
        return known

    async def resolve(self, text: str) -> bytes:
        """A full commit hash, or an abbreviation of a commit the swarm knows, as a 20-byte id."""
        full = full_hex(text, COMMIT_HEX)
        if full is not None:  # any commit at all: the caller looks it up
            return full
        await self.state()
        return match_prefix(text, self.known_commits(), "commit", COMMIT_HEX)

    def author(self, key: bytes) -> dict[str, Any]:
        return {"author": node_id_text(key), "untrusted": untrusted([key], self.mine)}

    def from_others(self, commit: bytes) -> bool:
        """Whether a commit's code came from other nodes only: claimed, and by none of ours."""
        history = self.backend.history
        return untrusted({history.claims[i].author for i in history.by_commit.get(commit, [])}, self.mine)

    def claim_view(self, state: State, record: ClaimRecord, verify_count: dict[bytes, int]) -> dict[str, Any]:
        b = record.body
        return {
            "claim": record.id.hex(), "commit": b.commit.hex(), "parent": b.parent.hex() if b.parent else None,
            "platform_class": b.platform_class, "status": b.status, "val_bpb": b.val_bpb,
            "verified_val_bpb": state.verified.get(record.id), "verifications": verify_count.get(record.id, 0),
            "num_steps": b.num_steps, "training_s": b.training_s, "peak_vram_mb": b.peak_vram_mb,
            "time_ms": record.time_ms, "message": b.message, "diff_summary": b.diff_summary,
            **self.author(record.author),
        }

    async def commit_train_py(self, parent: bytes, source: str, message: str, agent: str) -> bytes:
        """A commit of `source` as train.py on `parent`, authored by the agent (a label, not a key)."""
        return await gitrepo.commit_file(self.backend.repo, parent, {"train.py": source.encode()}, message,
                                         f"{agent} <{agent}@autoswarm.local>", int(time.time()))

    def check_class(self, cls: str) -> str:
        if cls not in self.classes():
            raise ApiError(f"unknown platform class {echo(cls)}; this swarm has {', '.join(self.classes())}")
        return cls


def credits(ucr: int) -> float:
    return ucr / UCR_PER_CREDIT


def balances(state: State, mine: frozenset[bytes]) -> dict[str, Any]:
    return {node_id_text(k): {"ucr": state.balances.get(k, 0), "credits": credits(state.balances.get(k, 0))}
            for k in sorted(mine)}


def verify_counts(state: State) -> dict[bytes, int]:
    counts: dict[bytes, int] = {}
    for v in state.verifies.values():
        counts[v.claim] = counts.get(v.claim, 0) + 1
    return counts


def submission(s: Submission) -> dict[str, Any]:
    return {"commit": s.commit.hex(), "parent": s.parent.hex(), "agent": s.agent, "message": s.message,
            "position": s.position}
