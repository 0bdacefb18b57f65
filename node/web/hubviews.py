"""AgentHub's JSON of commits: the swarm's claims and this node's queue seen as a git log.

Pure except `CommitView.commit`, which asks the repository for a queued commit's time. Knows
the node only through `Backend`.
"""
from __future__ import annotations

import collections
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ledger.fold import State
from ledger.keys import node_id_text
from swarm import gitrepo
from swarm.errors import SwarmError

from node.research.history import ClaimRecord
from node.web.backend import Backend, Submission
from node.web.common import untrusted
from node.web.posts import HubNotes, iso_time


@dataclass(frozen=True, slots=True)
class Known:
    """A commit the swarm knows: the baseline, claimed by some node, or queued here."""

    commit: bytes
    parent: bytes | None
    claims: tuple[ClaimRecord, ...]  # oldest first
    queued: Submission | None
    time_ms: int                     # of the first claim; 0 while only queued, and for the baseline

    @property
    def status(self) -> str:
        return "queued" if self.queued is not None else "claimed" if self.claims else "the baseline"


def known_commits(claims: Mapping[bytes, ClaimRecord], queued: list[Submission], baseline: bytes
                  ) -> dict[bytes, Known]:
    """Pure: every claimed or queued commit, with the parent its first claim names, and the
    baseline from the first second (an agent on a fresh node needs something to build on)."""
    by_commit: dict[bytes, list[ClaimRecord]] = collections.defaultdict(list)
    for record in claims.values():
        by_commit[record.body.commit].append(record)
    known: dict[bytes, Known] = {}
    for commit, records in by_commit.items():
        records.sort(key=lambda r: (r.time_ms, r.id))
        # the baseline has no parent, whatever a claim of it says
        parent = None if commit == baseline else records[0].body.parent
        known[commit] = Known(commit, parent, tuple(records), None, records[0].time_ms)
    for item in queued:
        if item.commit not in known:
            known[item.commit] = Known(item.commit, item.parent, (), item, 0)
    known.setdefault(baseline, Known(baseline, None, (), None, 0))
    return known


def newest_first(known: Mapping[bytes, Known]) -> list[Known]:
    """Queued commits first (they have no claim yet), then by their first claim's time."""
    return sorted(known.values(), key=lambda k: (k.queued is not None, k.time_ms, k.commit), reverse=True)


def children_of(known: Mapping[bytes, Known]) -> dict[bytes, list[bytes]]:
    """Parent -> its known children, newest first."""
    out: dict[bytes, list[bytes]] = collections.defaultdict(list)
    for k in newest_first(known):
        if k.parent is not None:
            out[k.parent].append(k.commit)
    return out


class CommitView:
    """One request's JSON of commits: the fold's numbers and labels read once."""

    def __init__(self, backend: Backend, notes: HubNotes, state: State, mine: Collection[bytes]) -> None:
        self.backend, self.notes, self.state, self.mine = backend, notes, state, mine
        self.verifications = collections.Counter(v.claim for v in state.verifies.values())

    def claim(self, record: ClaimRecord) -> dict[str, Any]:
        author = node_id_text(record.author)
        body = record.body
        return {
            "id": record.id.hex(), "author": author, "platform": body.platform_class, "status": body.status,
            "val_bpb": body.val_bpb, "verified_val_bpb": self.state.verified.get(record.id),
            "verifications": self.verifications[record.id], "created_at": iso_time(record.time_ms),
            "message": body.message, "untrusted": untrusted([record.author], self.mine),
        }

    async def commit(self, known: Known) -> dict[str, Any]:
        hex_id = known.commit.hex()
        out: dict[str, Any] = {"hash": hex_id, "parent_hash": known.parent.hex() if known.parent else None}
        if known.queued is not None:
            item = known.queued
            info = await self._commit_info(known.commit)
            created_s = info.time_s if info is not None else None
            out.update(agent_id=item.agent, author=self.backend.node_id, message=item.message,
                       created_at=iso_time(created_s * 1000) if created_s is not None else None,
                       platform=None, status="queued", val_bpb=None, verified_val_bpb=None, verifications=0,
                       claims=0, position=item.position, untrusted=False)
            return out
        if not known.claims:  # the baseline before anyone claimed it
            info = await self._commit_info(known.commit)
            out.update(agent_id=None, author=None, message=info.message if info else None,
                       created_at=iso_time(info.time_s * 1000) if info else None, platform=None,
                       status="baseline", val_bpb=None, verified_val_bpb=None, verifications=0, claims=0,
                       untrusted=False)
            return out
        own = [r for r in known.claims if r.author in self.mine]
        primary = (own or list(known.claims))[0]
        author = node_id_text(primary.author)
        mine = not untrusted([primary.author], self.mine)
        same = [r for r in known.claims if r.body.platform_class == primary.body.platform_class]
        verified = [self.state.verified[r.id] for r in same if r.id in self.state.verified]
        out.update(
            agent_id=(self.notes.commit_agents.get(hex_id) or author) if mine else author,
            author=author, message=primary.body.message, created_at=iso_time(primary.time_ms),
            platform=primary.body.platform_class, status=primary.body.status, val_bpb=primary.body.val_bpb,
            verified_val_bpb=min(verified) if verified else None,
            verifications=sum(self.verifications[r.id] for r in same), claims=len(known.claims),
            untrusted=not mine,
        )
        return out

    async def _commit_info(self, commit: bytes) -> gitrepo.CommitInfo | None:
        try:
            return await gitrepo.commit_info(self.backend.repo, commit)
        except SwarmError:
            return None
