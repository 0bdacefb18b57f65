"""A real Backend for the web surfaces' tests: a real ledger file, a real git repository with the
genesis commit, the node's own submission queue; only the trainer is missing (nothing runs the
queue), so tests publish claims themselves with `claim`.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.bodies import Body, Claim, Seal
from ledger.entry import Entry
from ledger.keys import Identity
from ledger.spec import SignedSpec, SwarmSpec, sign_spec
from ledger.store import Ledger
from swarm import gitrepo
from swarm.gitrepo import Repository

from node import home
from node.web.agents import AgentRegistry
from node.web.backend import Submission
from node.research.history import ClaimRecord, History
from node.research.submit import SubmitQueue
from tests.ledger.factory import identity

CLASS = "cpu-tiny"
OPERATOR_TOKEN = "operator-test-token"


def spec_for(creator: Identity, verifiers: list[Identity], baseline: bytes, quorum: int = 1,
             spot_check_per_mille: int = 0, noise_dof: int = 16, noise_bpb: float = 0.01) -> SignedSpec:
    return sign_spec(creator, SwarmSpec(
        name="hubkit", creator=creator.public_key, created_ms=0, harness_hash=b"h" * 32, dataset_hash=b"d" * 32,
        tokenizer_hash=b"t" * 32, time_budget_s=30, metric="val_bpb", direction="min", baseline_commit=baseline,
        allowed_files=["train.py"], platform_classes=[CLASS], verifiers=[v.public_key for v in verifiers],
        quorum=quorum, noise_bpb={CLASS: noise_bpb}, record_ucr_per_bpb=10**9, verify_ucr=1000,
        spot_check_per_mille=spot_check_per_mille, noise_dof=noise_dof))


@dataclass
class KitBackend:
    home: Path
    ledger: Ledger
    repo: Repository
    me: Identity
    verifier: Identity
    queue: SubmitQueue
    agents: AgentRegistry
    history: History = field(default_factory=History)
    platform_classes: list[str] = field(default_factory=lambda: [CLASS])
    clock_ms: int = 1_000_000
    market: None = None  # no credits market in these tests (tests/node/test_market_*.py run one)

    @property
    def node_id(self) -> str:
        return self.me.node_id

    @property
    def baseline(self) -> bytes:
        return self.ledger.spec.spec.baseline_commit

    async def publish(self, body: Body) -> Entry:
        return await self.publish_as(self.me, body)

    async def publish_as(self, who: Identity, body: Body) -> Entry:
        self.clock_ms += 1
        entry = await self.ledger.publish(who, body, time_ms=self.clock_ms)
        await self.history.sync(self.ledger)
        return entry

    async def submit(self, commit: bytes, agent: str) -> Submission:
        return await self.queue.submit(commit, agent)

    def queued(self) -> list[Submission]:
        return self.queue.queued()

    def snapshot(self) -> dict[str, Any]:
        return {"workers": [], "peers": [], "queued": len(self.queue.queued())}

    async def commit(self, parent: bytes, source: bytes, message: str) -> bytes:
        return await gitrepo.commit_file(self.repo, parent, {"train.py": source}, message, "kit <kit@autoswarm>", 1)

    async def claim(self, commit: bytes, parent: bytes | None, val_bpb: float | None, *, who: Identity | None = None,
                    message: str = "", status: str = "ok") -> ClaimRecord:
        """Publishes a claim of `commit` as if a worker had run it, and the anchor's seal of it
        (ledger/assign.py: without one no replay counts), as an anchor's node does."""
        body = Claim(commit=commit, parent=parent, platform_class=CLASS, status=status, val_bpb=val_bpb,
                     num_steps=10 if val_bpb is not None else 0, planned_steps=10, seed=0, training_s=1.0,
                     wall_s=2.0, peak_vram_mb=0.0, loss_curve=[3.0, 2.5], diff_summary="", message=message,
                     bundle=None)
        entry = await self.publish_as(who or self.me, body)
        await self.publish_as(self.verifier, Seal(claims=[entry.id]))  # the anchor fixes who may verify it
        return self.history.claims[entry.id]


@contextlib.asynccontextmanager
async def backend(tmp_path: Path, *, claim_baseline: bool = True, noise_dof: int = 16,
                  noise_bpb: float = 0.01) -> AsyncIterator[KitBackend]:
    """A node home in tmp_path with a genesis commit, a ledger whose spec names it, and (unless
    `claim_baseline` is false: a fresh node whose baseline run has not ended) a baseline claim.
    `noise_dof`, `noise_bpb`: the spec's (noise_dof 0 lets a paired test decide on the spec's
    noise alone)."""
    me, verifier = identity(500), identity(501)
    async with Repository.open(tmp_path / "repo") as repo:
        baseline = await home.ensure_baseline(repo)
        spec = spec_for(me, [verifier], baseline, noise_dof=noise_dof, noise_bpb=noise_bpb)
        async with Ledger.open(tmp_path / "ledger.sqlite", spec) as ledger:
            history = History()
            agents = AgentRegistry.load(tmp_path / "agents.json", OPERATOR_TOKEN)
            kit = KitBackend(tmp_path, ledger, repo, me, verifier, SubmitQueue(repo, history, spec), agents, history)
            if claim_baseline:
                await kit.claim(baseline, None, 1.5, message="baseline: the genesis train.py")
            yield kit
