"""Market nodes for tests and the benchmark: a real ledger file, a real peer on 127.0.0.1, a real
git repository and node/market/loop.py's Market, with the real sandboxed trainer as the executor's worker.

Credits come the way a user earns them: claims of the user's, verified by the swarm's trusted
verifier, whose record mints pay the user (signed here with the verifier's key, as its node would).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger import credits
from ledger.entry import Entry
from ledger.keys import Identity
from ledger.spec import SignedSpec
from ledger.store import Ledger
from swarm import gitrepo
from swarm.gitrepo import Repository
from swarm.peer import Peer, PeerConfig

from node import home as node_home
from node.research.experiment import RunRequest, RunResult, run_trainer
from node.research.fetch import read_bundle
from node.market.loop import Market, MarketConfig, Runner, keep_job_bundle, running
from node.market.policy import JobRequest
from tests.ledger import factory
from tests.node.hubkit import CLASS, spec_for

FAST = {"anti_entropy_interval_s": 0.5, "dial_interval_s": 0.1, "ping_interval_s": 1.0}
_runs = itertools.count()
_log = logging.getLogger("marketkit")


def trainer_runner(data: Path, scratch: Path, home: Path) -> Runner:
    """The executor's worker: the real `python -m trainer run` in its sandbox, on the CPU."""
    async def run(train_py: Path, budget_s: int, steps: int | None, seed: int, horizon: int | None) -> RunResult:
        request = RunRequest(train_py=train_py, parent_py=None, profile="cpu", budget_s=budget_s, steps=steps,
                             horizon=horizon, seed=seed, data=data, scratch=scratch / f"run-{next(_runs)}",
                             env={}, home=home)
        return await run_trainer(request)
    return run


def lying_runner(val_bpb: float) -> Runner:
    """A cheater's worker: runs nothing and reports a result it never measured."""
    async def run(train_py: Path, budget_s: int, steps: int | None, seed: int, horizon: int | None) -> RunResult:
        return RunResult(status="ok", reason="", val_bpb=val_bpb, seed=seed, num_steps=steps or 1,
                         planned_steps=steps or 1, training_s=0.5, total_s=1.0, peak_vram_mb=0.0, loss_curve=(),
                         log_tail="trust me", harness_hash="", wall_s=1.0)
    return run


async def earned_credits(spec: SignedSpec, verifier: Identity, users: Sequence[Identity]) -> list[Entry]:
    """Entries in which each user earns credits by a verified record (the verifier's first mints 0)."""
    from ledger import fold
    state = fold.initial(spec.spec)
    add = factory.Appender(factory.Feeds(spec.swarm_id), state)
    rows = add.rows

    prev: float | None = None
    value = 1.6
    for n, user in enumerate([users[0], *users]):
        c = add(user, factory.claim(n + 1, value))
        add(verifier, factory.seal(c))
        v = add(verifier, factory.verify(c, value))
        amount = 0 if prev is None else credits.record_share_ucr(spec.spec.record_ucr_per_bpb, prev, value, 1)
        add(verifier, factory.record_mint(c, [v], value, prev, amount))
        prev, value = value, round(value - 0.1, 3)
    return rows


@dataclass
class MarketNode:
    name: str
    identity: Identity
    ledger: Ledger
    peer: Peer
    repo: Repository
    market: Market
    home: Path

    @property
    def key(self) -> bytes:
        return self.identity.public_key

    def balance(self) -> int:
        return self.ledger.state.balances.get(self.key, 0)

    async def submit(self, *, max_gpu_s: int = 60, price: int = 100, steps: int = 5, expires_s: int = 600,
                     job_type: str = "train") -> bytes:
        """A job of this node's: an edited train.py committed here, its bundle kept for executors."""
        baseline = self.ledger.spec.spec.baseline_commit
        source = await gitrepo.read_file(self.repo, baseline, "train.py")
        commit = await gitrepo.commit_file(self.repo, baseline, {"train.py": source + b"\n# job of " +
                                           self.name.encode() + b"\n"}, f"job of {self.name}",
                                           "kit <kit@autoswarm>", 1)
        bundle = await keep_job_bundle(self.repo, self.home / "bundles", commit, baseline)
        entry = await self.market.submit(JobRequest(job_type=job_type, commit=commit, bundle=bundle,
                                                    args=("--steps", str(steps), "--seed", "3"), platform_class=CLASS,
                                                    max_gpu_s=max_gpu_s, price_ucr_per_gpu_s=price,
                                                    expires_s=expires_s))
        return entry.id


async def make_spec(tmp: Path, creator: Identity, verifier: Identity, spot_check_per_mille: int = 0) -> SignedSpec:
    """A swarm whose baseline is the genesis commit every node derives (fixed author and time); the
    spec's spot-check rate picks which receipts a verifier replays (none unless a test asks)."""
    async with Repository.open(tmp / "genesis-repo") as repo:
        return spec_for(creator, [verifier], await node_home.ensure_baseline(repo),
                        spot_check_per_mille=spot_check_per_mille)


@contextlib.asynccontextmanager
async def market_node(tmp: Path, name: str, identity: Identity, spec: SignedSpec, seed: Sequence[Entry],
                      config: MarketConfig, *, bootstrap: tuple[str, ...] = (), checker: Identity | None = None,
                      runner: Runner | None = None) -> AsyncIterator[MarketNode]:
    folder = tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    async with Repository.open(folder / "repo") as repo, Ledger.open(folder / "ledger.sqlite", spec) as ledger:
        await node_home.ensure_baseline(repo)
        for entry in seed:
            await ledger.append(entry)
        peer_config = PeerConfig(bootstrap=bootstrap, **FAST)  # type: ignore[arg-type]
        async with Peer.open(peer_config, ledger, identity,
                             bundle_source=functools.partial(read_bundle, folder / "bundles")) as peer:
            market = Market(ledger, peer, repo, folder, identity, [checker] if checker else [], [CLASS], config,
                            on_event=lambda text: _log.info("%s: %s", name, text))
            async with running(market, runner):
                yield MarketNode(name, identity, ledger, peer, repo, market, folder)
