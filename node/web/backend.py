"""What the node's local HTTP surfaces (AgentHub API, the node's own API, the dashboard) may use.

One Protocol, implemented by the running node (node/wiring.py) and, in tests, by a small real
object over a real Ledger and a real Repository. The web modules know this interface and
nothing about workers, peers or the trainer: they read the ledger and the repository, publish
signed entries through `publish`, and hand commits to the research loop through `submit`.

Everything here is the node's own view: its ledger (every entry it holds, from any node), its
git repository (every commit it has: its own, fetched bundles, agents' pushes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ledger.bodies import Body
from ledger.entry import Entry
from ledger.store import Ledger
from swarm.gitrepo import Repository

from node.market.policy import JobRequest
from node.research.history import History
from node.research.submit import Submission

__all__ = ["Backend", "MarketPort", "Submission"]


class MarketPort(Protocol):
    """What the web may ask of the node's credits market (node/market/loop.py's `Market`)."""

    async def keep_bundle(self, commit: bytes, base: bytes) -> bytes:
        """Bundles `commit` thin against `base` for executors to pull by hash; its sha256."""
        ...

    async def submit(self, request: JobRequest) -> Entry:
        """Checks and publishes a job of this node's (spends its credits into escrow)."""
        ...

    async def cancel(self, job_id: bytes) -> Entry:
        """Cancels an open job of this node's."""
        ...




class Backend(Protocol):
    home: Path
    ledger: Ledger
    repo: Repository
    history: History                 # every claim body the ledger holds, by id (call `await history.sync(ledger)`)
    platform_classes: list[str]      # of this node's workers

    @property
    def node_id(self) -> str:
        """This node's research identity, as text."""
        ...

    @property
    def market(self) -> MarketPort | None:
        """The credits market's loop (node/market/loop.py), where the node runs one."""
        ...

    async def publish(self, body: Body) -> Entry:
        """Signs `body` with the node's research identity, appends it and gossips it to peers."""
        ...

    async def submit(self, commit: bytes, agent: str) -> Submission:
        """Queues `commit` (already in `repo`) for a run-and-claim on this node's next free worker.

        Raises node.errors.BadSubmission when the commit is unknown, its parent is not a commit
        the swarm knows, it changes a file other than train.py, or the queue is full.
        """
        ...

    def queued(self) -> list[Submission]:
        """Submissions not yet picked up by a worker, oldest first."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Live, JSON-able: workers (what each runs, seconds left), peers, counters, last results."""
        ...
