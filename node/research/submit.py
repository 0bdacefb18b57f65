"""Commits handed to the research loop by agents and people: checked, queued, picked up by a worker.

A submission is a commit already in the node's repository (an agent's pushed bundle, or
`python -m node submit train.py`). It is accepted only if the swarm can judge it: its parent is
the baseline or a commit some claim names, and it changes train.py and nothing else. Workers
take submissions before proposing experiments of their own (node/research/loop.py), so an external
agent *is* the proposer while it keeps the queue filled.

Knows nothing of HTTP or the trainer.
"""
from __future__ import annotations

import asyncio
import collections

from ledger.spec import SignedSpec
from swarm import gitrepo
from swarm.errors import SwarmError
from swarm.gitrepo import Repository

from node.web.backend import Submission
from node.errors import AlreadySubmitted, BadSubmission, QueueFull
from node.research.history import History
from node.research.limits import MAX_CLAIM_MESSAGE

MAX_QUEUED = 64


class SubmitQueue:
    def __init__(self, repo: Repository, history: History, spec: SignedSpec, maxsize: int = MAX_QUEUED) -> None:
        self.repo, self.history, self.spec, self.maxsize = repo, history, spec, maxsize
        self._queue: collections.deque[Submission] = collections.deque()
        self._changed = asyncio.Event()

    async def submit(self, commit: bytes, agent: str) -> Submission:
        if len(commit) != 20:
            raise BadSubmission("a commit id is 20 bytes (40 hex digits)")
        if len(self._queue) >= self.maxsize:
            raise QueueFull(f"the queue holds {self.maxsize} submissions already; try again later")
        if any(s.commit == commit for s in self._queue) or commit in self.history.by_commit:
            raise AlreadySubmitted(f"commit {commit.hex()[:12]} is already queued or claimed")
        try:
            info = await gitrepo.commit_info(self.repo, commit)
        except SwarmError as exc:
            raise BadSubmission(f"commit {commit.hex()[:12]}: {exc}") from None
        if len(info.parents) != 1:
            raise BadSubmission(f"commit {commit.hex()[:12]} must have exactly one parent, has {len(info.parents)}")
        parent = info.parents[0]
        if parent != self.spec.spec.baseline_commit and parent not in self.history.by_commit:
            raise BadSubmission(
                f"the parent {parent.hex()[:12]} is not a commit of this swarm: build on the baseline "
                f"{self.spec.spec.baseline_commit.hex()} or on a claimed commit (GET /api/git/leaves)")
        try:
            paths = await gitrepo.changed_paths(self.repo, parent, commit)
        except SwarmError as exc:
            raise BadSubmission(f"commit {commit.hex()[:12]}: {exc}") from None
        allowed = set(self.spec.spec.allowed_files)
        if not paths:
            raise BadSubmission(f"commit {commit.hex()[:12]} changes nothing")
        if paths - allowed:
            raise BadSubmission(f"commit {commit.hex()[:12]} changes {', '.join(sorted(paths - allowed))}: "
                                f"only {', '.join(sorted(allowed))} may change")
        item = Submission(commit=commit, parent=parent, agent=agent, message=info.message[:MAX_CLAIM_MESSAGE],
                          position=len(self._queue) + 1)
        self._queue.append(item)
        self._changed.set()
        return item

    def queued(self) -> list[Submission]:
        return list(self._queue)

    def take(self) -> Submission | None:
        """The oldest submission, removed from the queue; None when empty."""
        if not self._queue:
            self._changed.clear()
            return None
        return self._queue.popleft()

    async def wait(self, timeout_s: float) -> None:
        """Returns when something was submitted or after `timeout_s`, whichever is first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()
        except TimeoutError:
            pass
