"""Commits handed to the research loop by agents and people: checked, queued, picked up by a worker.

A submission is a commit already in the node's repository (an agent's pushed bundle, or
`python -m node submit train.py`). It is accepted only if the swarm can judge it: its parent is
the baseline or a commit some claim names, it changes train.py and nothing else, and its train.py
parses as Python (else a run would be spent on a signed failure). After the run, a claim whose
numbers no run of its class could produce (ledger/plausible.py: steps beyond the spec's
max_steps, training beyond the budget) is published as `rejected` (`refuse_implausible`): an
agent's train.py prints its own step count, and no verifier should spend a replay on a claim the
swarm refuses on sight. Workers take submissions
before proposing experiments of their own (node/research/loop.py), so an external agent *is* the
proposer while it keeps the queue filled.

The queue is durable when given a path: every change rewrites one small JSON file (atomically),
and `restore` reads it back after a restart, checking each commit again. A submission a worker
has taken stays in the file until its claim is published (`finish`), so a stop mid-run puts it
back in the queue, not out of it.

Knows nothing of HTTP or the trainer.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ledger.bodies import Claim
from ledger.plausible import implausible
from ledger.spec import SignedSpec, SwarmSpec
from swarm import gitrepo
from swarm.errors import SwarmError
from swarm.gitrepo import Repository

from node.errors import AlreadySubmitted, BadSubmission, QueueFull
from node.research.history import History
from node.research.program import parse_module
from node.research.limits import MAX_CLAIM_MESSAGE

MAX_QUEUED = 64
MAX_QUEUE_FILE_BYTES = 1 << 20   # a queue file larger than this is not one we wrote


@dataclass(frozen=True, slots=True)
class Submission:
    """A commit handed to the research loop to run through the trainer and claim."""

    commit: bytes          # 20-byte git id, already in the node's repository
    parent: bytes          # its parent; a commit the swarm knows (the baseline or a claimed one)
    agent: str             # who submitted it: an AgentHub agent id, or "cli"
    message: str           # the commit message, shown with the claim
    position: int          # 1-based place in the queue when submitted


class BadTrainPy(BadSubmission):
    """The submitted train.py is not Python that parses (or not UTF-8): `line` and `column` say
    where (1-based; 0 when unknown)."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.line, self.column = line, column


def check_source(data: bytes, name: str = "train.py") -> None:
    """Raises BadTrainPy, with the line and column, unless `data` is UTF-8 Python that parses."""
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise BadTrainPy(f"{name} is not UTF-8 (byte {exc.start})") from None
    try:
        parse_module(text, filename=name)
    except SyntaxError as exc:
        line, column = exc.lineno or 0, exc.offset or 0
        raise BadTrainPy(f"{name} does not parse: line {line}, column {column}: {exc.msg}", line, column) from None
    except ValueError as exc:   # a NUL byte in the source
        raise BadTrainPy(f"{name} does not parse: {exc}") from None


def refuse_implausible(spec: SwarmSpec, claim: Claim) -> Claim:
    """The claim to publish for a run: as it is, or `rejected` with the reason when its numbers
    cannot be true on the swarm's classes (its figures stay, so the reason can be checked)."""
    why = implausible(spec, claim)
    if not why:
        return claim
    note = f"refused: {why}"
    message = f"{claim.message}: {note}" if claim.message else note
    return dataclasses.replace(claim, status="rejected", val_bpb=None, message=message[:MAX_CLAIM_MESSAGE])


class SubmitQueue:
    def __init__(self, repo: Repository, history: History, spec: SignedSpec, maxsize: int = MAX_QUEUED,
                 path: Path | None = None) -> None:
        self.repo, self.history, self.spec, self.maxsize, self.path = repo, history, spec, maxsize, path
        self._queue: collections.deque[Submission] = collections.deque()
        self._taken: dict[bytes, Submission] = {}   # taken by a worker, claim not yet published
        self._changed = asyncio.Event()

    async def submit(self, commit: bytes, agent: str) -> Submission:
        item = await self._check(commit, agent)
        self._queue.append(item)
        self._save()
        self._changed.set()
        return item

    async def _check(self, commit: bytes, agent: str) -> Submission:
        if len(commit) != 20:
            raise BadSubmission("a commit id is 20 bytes (40 hex digits)")
        if len(self._queue) >= self.maxsize:
            raise QueueFull(f"the queue holds {self.maxsize} submissions already; try again later")
        if (any(s.commit == commit for s in self._queue) or commit in self._taken
                or commit in self.history.by_commit):
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
        try:
            source = await gitrepo.read_file(self.repo, commit, "train.py")
        except SwarmError as exc:
            raise BadSubmission(f"commit {commit.hex()[:12]}: {exc}") from None
        check_source(source)
        return Submission(commit=commit, parent=parent, agent=agent, message=info.message[:MAX_CLAIM_MESSAGE],
                          position=len(self._queue) + 1)

    def queued(self) -> list[Submission]:
        return list(self._queue)

    def take(self) -> Submission | None:
        """The oldest submission, out of the queue (kept on disk until `finish`); None when empty."""
        if not self._queue:
            return None
        item = self._queue.popleft()
        self._taken[item.commit] = item
        return item

    def finish(self, commit: bytes) -> None:
        """The submission's claim is published: it is gone from the file too."""
        if self._taken.pop(commit, None) is not None:
            self._save()

    async def restore(self) -> tuple[list[Submission], list[str]]:
        """The submissions the file kept from before a restart, queued again after the same checks
        as a new one (taken ones first: their run was cut short); and why any others were dropped.
        Call once, after the history holds the ledger's claims (a claimed commit is not run twice)."""
        if self.path is None:
            return [], []
        try:
            raw = await asyncio.to_thread(_read_small, self.path)
        except FileNotFoundError:
            return [], []
        except (OSError, ValueError) as exc:
            return [], [f"{self.path}: {exc}"]
        kept, dropped = [], []
        for row in raw:
            try:
                commit, agent = bytes.fromhex(str(row["commit"])), str(row["agent"])[:200]
            except (KeyError, TypeError, ValueError):
                dropped.append(f"{self.path}: an entry that is not a submission: {str(row)[:80]}")
                continue
            if commit in self.history.by_commit:
                continue   # its claim was published just before the stop
            try:
                item = await self._check(commit, agent)
            except BadSubmission as exc:
                dropped.append(f"{commit.hex()[:12]}: {exc}")
                continue
            self._queue.append(item)
            kept.append(item)
        self._save()
        if kept:
            self._changed.set()
        return kept, dropped

    def _save(self) -> None:
        """Rewrites the queue file: taken submissions first, then the queue, in order. Small
        (at most MAX_QUEUED rows), so written in place of an await: no interleaving can reorder it."""
        if self.path is None:
            return
        rows = [{"commit": s.commit.hex(), "agent": s.agent} for s in [*self._taken.values(), *self._queue]]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
        os.replace(tmp, self.path)

    async def wait(self, timeout_s: float) -> None:
        """Returns when something is submitted or after `timeout_s`, whichever is first; at once
        while the queue holds a submission. (The event is cleared here: once set by a submission
        that a worker has taken since, it made every idle worker's wait return at once, a busy loop.)"""
        if self._queue:
            return
        self._changed.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()
        except TimeoutError:
            pass


def _read_small(path: Path) -> list[dict[str, object]]:
    with path.open("rb") as f:
        data = f.read(MAX_QUEUE_FILE_BYTES + 1)
    if len(data) > MAX_QUEUE_FILE_BYTES:
        raise ValueError(f"larger than {MAX_QUEUE_FILE_BYTES} bytes: not a queue this node wrote")
    rows = json.loads(data)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError("not a list of submissions")
    return rows
