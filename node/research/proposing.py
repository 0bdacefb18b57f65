"""Which edit a worker's next experiment runs, and the lease that tells other nodes so.

`Proposing` keeps what that choice needs from one experiment to the next: the configured proposer
([research] proposer, node/research/proposers.py; made once the genesis train.py is read), the
wave queue of each class ([research] waves, node/research/waves.py), the leases other nodes hold
(node/research/leases.py) and the programs our own workers run now. The research loop
(node/research/loop.py) asks it once per experiment and marks the program busy while it runs.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable

from ledger.bodies import Body
from ledger.entry import Entry
from ledger.store import Ledger
from swarm import gitrepo
from swarm.gitrepo import Repository

from node.config import NodeConfig
from node.errors import NoProposal
from node.platform import Device
from node.research import screening
from node.research.history import History
from node.research.leases import BadLease, LeaseBook, encode as lease_post, lease_seconds
from node.research.memory import standing
from node.research.program import normalized_key
from node.research.proposer import Proposal, Settings
from node.research.proposers import Chosen
from node.research.waves import WaveQueue, WaveSettings, plan_wave


class Proposing:
    def __init__(self, config: NodeConfig, ledger: Ledger, repo: Repository, history: History, researcher: bytes,
                 rng: random.Random, now_ms: Callable[[], int], publish: Callable[[Body], Awaitable[Entry]]) -> None:
        self.config, self.ledger, self.repo, self.history = config, ledger, repo, history
        self.researcher, self.rng, self.now_ms, self.publish = researcher, rng, now_ms, publish
        self.busy: set[str] = set()                  # programs our workers run now
        self.workers_of: dict[str, int] = {}         # per class: this node's workers
        self.leases = LeaseBook()                    # other nodes' running programs
        self.settings = Settings(frozen=frozenset(config.frozen_constants))
        self.waves: dict[str, WaveQueue] = {}        # per class: the current wave's proposals
        self._chosen: Chosen | None = None

    async def proposer(self) -> Chosen:
        """The configured proposer; every program's ancestry starts at the genesis train.py."""
        if self._chosen is None:
            baseline = self.ledger.spec.spec.baseline_commit
            genesis = await gitrepo.read_file(self.repo, baseline, "train.py")
            self._chosen = Chosen(self.config.proposer, genesis.decode(errors="replace"), baseline, self.config.seed,
                                  self.settings)
        return self._chosen

    async def next(self, device: Device, parent_source: str) -> Proposal:
        """The next edit of `parent_source`, other nodes' leases synced first."""
        await self.leases.sync(self.ledger, self.now_ms())
        return self.propose(device, parent_source, await self.proposer())

    def propose(self, device: Device, parent_source: str, chosen: Chosen) -> Proposal:
        """Our next edit of the class's best program: a screened winner to confirm (two-tier), the
        next point of a wave (several workers), else the configured proposer's own draw. Tried are
        the programs that count in the ledger, those our workers run, and those other nodes hold
        live leases on (as last synced)."""
        cls, state, config = device.platform_class, self.ledger.state, self.config
        leased = self.leases.taken(cls, self.now_ms(), standing(state), self.researcher)
        tried = self.history.keys | self.busy | leased
        if config.screening_classes and cls == config.reference_class:
            found = screening.next_confirmation(state, self.history, parent_source, reference_class=cls,
                                                screening_classes=config.screening_classes, busy=self.busy)
            if found is not None and found.proposal.key not in leased:   # another node confirms it already
                return found.proposal
        if config.waves and self.workers_of.get(cls, 1) > 1:
            trials = self.history.trials(state, cls)
            queue, parent_key = self.waves.setdefault(cls, WaveQueue()), normalized_key(parent_source)
            if (proposal := queue.take(parent_key, tried)) is None:
                with contextlib.suppress(NoProposal):
                    queue.load(plan_wave(parent_source, profile=device.profile, trials=trials, tried=tried,
                                         n=self.workers_of[cls], rng=self.rng,
                                         settings=WaveSettings(proposer=self.settings)))
                    proposal = queue.take(parent_key, tried)
            if proposal is not None:
                return proposal
        return chosen.propose(self.history, state, cls, device.profile, parent_source, tried=tried, rng=self.rng)

    async def lease(self, device: Device, key: str, expected_s: float) -> None:
        """Tells other nodes' proposers that we run `key` now: without a lease they learn of it only
        from our claim, a whole run later, and may run it too."""
        until_ms = self.now_ms() + int(lease_seconds(expected_s) * 1000)
        try:
            post = lease_post(device.platform_class, key, until_ms)
        except BadLease:
            return   # a class or key the lease line cannot carry: the claim still tells everyone, later
        await self.publish(post)
