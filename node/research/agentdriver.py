"""The coding-agent driver: per worker, an operator's agent command proposes the next experiment.

Theory of operation. With `[agent] command` set (or `python -m node --agent CMD`), node/wiring.py
starts one driver task per worker. Each round of a driver:
  1. waits until its previous submission has left the queue (taken by a worker), so an agent
     prepares the next experiment while the last one trains, and never floods the queue;
  2. fixes the parent: the class's best commit here (Research.parent_here), and writes a scratch
     folder holding that commit's train.py (read from the node's repository) and BRIEF.md
     (node/research/agentbrief.py: the best and its val_bpb, what was tried and verified, the
     noise and the record margin, the rules);
  3. runs the command there (node/research/agentproc.py: bounded by `[agent] timeout_s`, its whole
     process tree stopped on timeout, when the node stops, and by a watchdog when the node is
     SIGKILLed);
  4. takes the edited train.py, if any: over MAX_TRAIN_PY_BYTES or not parsing is refused here,
     with the reason; otherwise it is committed on the fixed parent and queued through the same
     SubmitQueue as `python -m node submit` (node/research/submit.py, which checks it again), so a
     worker runs and claims it like any submission;
  5. says what happened (an event line, and the next brief's "your previous run"), and backs off
     when the agent produced nothing, so a broken command does not spin.
A refusal never stops the node: it is one line, and the next round starts.

The agent's environment: AUTOSWARM_BRIEF, AUTOSWARM_TRAIN_PY, AUTOSWARM_PARENT, AUTOSWARM_MESSAGE
(where it may write a one-line description) and AUTOSWARM_WORKER, beside the node's own environment
minus its secrets (nothing of the node's home, no API token is passed).

Knows nothing of HTTP, terminals or signals.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import trainer
from ledger.store import Ledger
from swarm import gitrepo
from swarm.errors import SwarmError
from swarm.gitrepo import Repository

from node.contract import MAX_TRAIN_PY_BYTES
from node.errors import BadSubmission, NodeError
from node.platform import Device
from node.research import agentbrief
from node.research.agentproc import AgentExit, AgentFailed, run_agent
from node.research.history import History
from node.research.limits import MAX_CLAIM_MESSAGE
from node.research.submit import SubmitQueue, check_source

QUEUE_POLL_S = 1.0           # how often a driver looks whether its last submission was taken
BACKOFF_S = (5.0, 30.0, 120.0, 600.0)   # after rounds that queued nothing: a broken command waits longer
MAX_MESSAGE_BYTES = 4096     # of message.txt; the claim keeps MAX_CLAIM_MESSAGE characters of its first line
BRIEF_FILE, MESSAGE_FILE, LOG_FILE = "BRIEF.md", "message.txt", "agent.log"
# environment variables an agent never needs and must not see (the node's own settings and secrets)
_HIDDEN_ENV = ("AUTOSWARM_", "HUB")


@dataclass(frozen=True, slots=True)
class AgentSettings:
    command: str                 # a shell line; empty: no agent
    timeout_s: float             # one agent run, start to exit
    name: str = "agent"          # submissions are labelled `<name>-<worker>`
    frozen_constants: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one round produced: a queued commit, or the reason nothing was queued."""

    queued: bytes | None
    text: str


class AgentRefused(BadSubmission):
    """The agent's edit is not one the node queues (unchanged, too large, not Python, gone)."""


def clean_message(raw: bytes, default: str) -> str:
    """The claim message from an agent's message.txt: its first non-empty line, printable, bounded."""
    for line in raw[:MAX_MESSAGE_BYTES].decode(errors="replace").splitlines():
        text = agentbrief.one_line(line, MAX_CLAIM_MESSAGE)
        if text:
            return text
    return default


def check_edit(before: bytes, after: bytes | None) -> bytes:
    """`after`, unless it is no edit to queue: AgentRefused (or BadTrainPy, with line and column)."""
    if after is None:
        raise AgentRefused("the agent left no train.py")
    if len(after) > MAX_TRAIN_PY_BYTES:
        raise AgentRefused(f"train.py is {len(after)} bytes, over the limit of {MAX_TRAIN_PY_BYTES}")
    if after == before:
        raise AgentRefused("the agent did not change train.py")
    check_source(after)
    return after


def agent_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(_HIDDEN_ENV)}
    env.update(extra)
    return env


class AgentDriver:
    """Runs the operator's agent command for the workers of one node; one `drive` task per worker."""

    def __init__(self, settings: AgentSettings, repo: Repository, ledger: Ledger, history: History,
                 queue: SubmitQueue, parent_of: Callable[[Device], Awaitable[bytes]], say: Callable[[str], None],
                 scratch: Path, ours: frozenset[bytes], environ: Mapping[str, str] | None = None) -> None:
        self.settings, self.repo, self.ledger, self.history, self.queue = settings, repo, ledger, history, queue
        self.parent_of, self.say, self.scratch, self.ours = parent_of, say, scratch, ours
        self.environ = dict(os.environ if environ is None else environ)
        self.rounds = 0              # agent runs started, all workers
        self.queued: list[bytes] = []  # commits this driver queued, in order

    def agent_name(self, device: Device) -> str:
        return f"{self.settings.name}-{device.label}"

    async def drive(self, device: Device) -> None:
        """Rounds forever (until cancelled), one agent run at a time for this worker."""
        last, idle_rounds = "", 0
        while True:
            await self._wait_until_taken(self.agent_name(device))
            outcome = await self.round(device, last)
            last = outcome.text
            self.say(f"[{device.label}] agent: {outcome.text}")
            idle_rounds = 0 if outcome.queued is not None else idle_rounds + 1
            if idle_rounds:
                await asyncio.sleep(BACKOFF_S[min(idle_rounds, len(BACKOFF_S)) - 1])

    async def _wait_until_taken(self, agent: str) -> None:
        """Returns once no submission of `agent` waits in the queue (a worker took it)."""
        while any(s.agent == agent for s in self.queue.queued()):
            await asyncio.sleep(QUEUE_POLL_S)

    async def round(self, device: Device, last: str = "") -> Outcome:
        """One agent run: the scratch folder, the command, the edit checked and queued."""
        self.rounds += 1
        folder = self.scratch / f"agent-{device.label}" / str(self.rounds)
        work = folder / "work"
        try:
            parent = await self.parent_of(device)
            before = await gitrepo.read_file(self.repo, parent, "train.py")
        except (NodeError, SwarmError) as exc:
            return Outcome(None, f"no parent to build on yet: {exc}")
        try:
            await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
            brief = self._brief(device, parent, last)
            await asyncio.to_thread(_write, work, before, brief)
            exit_ = await run_agent(self.settings.command, work, self._env(device, parent, work),
                                    self.settings.timeout_s, folder / LOG_FILE)
            return await self._take(device, parent, before, work, exit_)
        except AgentFailed as exc:
            return Outcome(None, str(exc))
        except OSError as exc:
            return Outcome(None, f"cannot prepare the agent's folder {work}: {exc.strerror}")
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    def _brief(self, device: Device, parent: bytes, last: str) -> str:
        state, cls = self.ledger.state, device.platform_class
        baseline = state.spec.baseline_commit
        values = {r.id: v for r in self.history.of_class(cls)
                  if r.body.commit == baseline and r.body.parent is None and (v := r.body.val_bpb) is not None}
        facts = agentbrief.facts_for(
            state, self.history.of_class(cls), self.ours, worker=device.label, platform_class=cls, parent=parent,
            timeout_s=self.settings.timeout_s, max_train_py_bytes=MAX_TRAIN_PY_BYTES,
            harness=str(Path(trainer.__file__).parent), frozen_constants=self.settings.frozen_constants,
            last_outcome=last, baseline_values=values)
        return agentbrief.render(facts)

    def _env(self, device: Device, parent: bytes, work: Path) -> dict[str, str]:
        return agent_env(self.environ, {
            "AUTOSWARM_BRIEF": str(work / BRIEF_FILE), "AUTOSWARM_TRAIN_PY": str(work / "train.py"),
            "AUTOSWARM_PARENT": parent.hex(), "AUTOSWARM_MESSAGE": str(work / MESSAGE_FILE),
            "AUTOSWARM_WORKER": device.label})

    async def _take(self, device: Device, parent: bytes, before: bytes, work: Path, exit_: AgentExit) -> Outcome:
        ran = f"ran {exit_.wall_s:.0f} s"
        if exit_.timed_out:
            return Outcome(None, f"killed after {self.settings.timeout_s:.0f} s (its time limit) with every "
                                 f"process it started; its edit is dropped")
        after, raw_message = await asyncio.to_thread(_read_edit, work)
        if exit_.returncode != 0 and (after is None or after == before):
            tail = agentbrief.one_line(exit_.log_tail[-300:], 300)
            return Outcome(None, f"exited with status {exit_.returncode} after {ran[4:]} without an edit: {tail}")
        agent = self.agent_name(device)
        try:
            source = check_edit(before, after)
            message = clean_message(raw_message, f"edit by {agent}")
            commit = await gitrepo.commit_file(self.repo, parent, {"train.py": source}, message,
                                               f"{agent} <{agent}@autoswarm.local>", int(time.time()))
            item = await self.queue.submit(commit, agent)
        except BadSubmission as exc:
            return Outcome(None, f"{ran}; its edit was refused: {exc}")
        except SwarmError as exc:
            return Outcome(None, f"{ran}; its edit could not be committed: {exc}")
        self.queued.append(commit)
        return Outcome(commit, f"{ran}; queued {commit.hex()[:12]} on {parent.hex()[:12]} at position "
                               f"{item.position}: {message}")


def _write(work: Path, train_py: bytes, brief: str) -> None:
    (work / "train.py").write_bytes(train_py)
    (work / BRIEF_FILE).write_text(brief)
    (work / MESSAGE_FILE).write_bytes(b"")   # there to edit: some agents (aider) only edit files that exist


def _read_edit(work: Path) -> tuple[bytes | None, bytes]:
    """train.py as the agent left it (None: gone; read one byte past the limit) and message.txt."""
    def head(path: Path, limit: int) -> bytes | None:
        try:
            with path.open("rb") as f:
                return f.read(limit + 1)
        except OSError:   # missing, a folder, unreadable
            return None
    return head(work / "train.py", MAX_TRAIN_PY_BYTES), head(work / MESSAGE_FILE, MAX_MESSAGE_BYTES) or b""
