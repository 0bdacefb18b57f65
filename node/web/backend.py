"""What the node's local HTTP surfaces (AgentHub API, the node's own API, the dashboard) may use.

One Protocol, implemented by the running node (node/wiring.py) and, in tests, by a small real
object over a real Ledger and a real Repository. The web modules know this interface and
nothing about workers, peers or the trainer: they read the ledger and the repository, publish
signed entries through `publish`, and hand commits to the research loop through `submit`.

Everything here is the node's own view: its ledger (every entry it holds, from any node), its
git repository (every commit it has: its own, fetched bundles, agents' pushes).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ledger.bodies import Body
from ledger.entry import Entry
from ledger.store import Ledger
from swarm.gitrepo import Repository

from node.research.history import History

if TYPE_CHECKING:
    from node.market.loop import Market


@dataclass(frozen=True, slots=True)
class Submission:
    """A commit handed to the research loop to run through the trainer and claim."""

    commit: bytes          # 20-byte git id, already in the node's repository
    parent: bytes          # its parent; a commit the swarm knows (the baseline or a claimed one)
    agent: str             # who submitted it: an AgentHub agent id, or "cli"
    message: str           # the commit message, shown with the claim
    position: int          # 1-based place in the queue when submitted


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
    def market(self) -> Market | None:
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
