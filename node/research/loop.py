"""The research loop: per worker, pick the most valuable work, run it through the trainer, publish.

Theory of operation. Each worker (one per GPU, or the CPU) takes a snapshot of what it knows
(`situation`) and asks node/research/work.py's pure `choose_work` what to do, the order the
simulators use too: the baseline, a paid market job, a verification, a submission, the creator's
calibration runs (after its first experiment), an experiment of its own, or a wait. Then:
  - a baseline or calibration run: the genesis train.py with a data seed, claimed;
  - a verification (node/research/replay.py): the most promising unverified claim of its class,
    replayed with the claim's steps and seed, published as the verifier identity's Verify, then
    the record mint and the verification fee where the credit rules allow;
  - an experiment of its own: parent = the class's best verified commit (the baseline before
    anything is verified), an edit (node/research/proposing.py: the configured proposer's, a
    wave's or a screened winner's) that no counted claim has tried and no other node holds a live
    lease on, a lease announcing it (node/research/leases.py), a git commit, a timed run
    (node/research/runs.py), and a Claim for every result, failures included; an improvement on
    the class's best also gets a thin bundle against its parent, stored under HOME/bundles by its
    hash. A submission is run and claimed the same way.
The ledger is the memory: a restart re-reads it (node/research/history.py) and carries on. Workers share
this object; reservations keep two of them off the same claim or the same program.

Knows nothing about terminals or signals (node/display.py, node/wiring.py).
"""
from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from pathlib import Path

from ledger import assign
from ledger.bodies import Body, Claim, Profile, Seal
from ledger.entry import Entry
from ledger.keys import Identity
from ledger.spec import SignedSpec
from ledger.store import Ledger
from swarm import gitrepo
from swarm.gitrepo import Repository

from node.config import NodeConfig
from node.display import Display
from node.errors import NoProposal
from node.home import DataInfo, Layout
from node.market.loop import Market
from node.platform import Device, torch_version
from node.research import verifier, work
from node.research.baselines import Baselines
from node.research.fetch import CommitFetcher
from node.research.history import ClaimRecord, History
from node.research.program import BadProgram, summarize
from node.research.proposer import describe
from node.research.proposing import Proposing
from node.research.replay import Replays
from node.research.experiment import RunResult
from node.research.runs import Live, Runs, Stats, claim_body, result_text, short_value
from node.research.submit import SubmitQueue, refuse_implausible
from node.research.submit import Submission

IDLE_S = 5.0                 # a worker with nothing to do looks again after this long


class Research:
    def __init__(self, config: NodeConfig, ledger: Ledger, repo: Repository, layout: Layout, data: DataInfo,
                 researcher: Identity, verifier_id: Identity, display: Display, scratch: Path,
                 rng: random.Random, clock: Callable[[], float] = time.time, *,
                 queue_path: Path | None = None) -> None:
        self.config, self.ledger, self.repo, self.layout, self.data = config, ledger, repo, layout, data
        self.researcher, self.verifier = researcher, verifier_id
        self.display, self.scratch, self.rng, self.clock = display, scratch, rng, clock
        self.history = History(repo=repo)   # program keys read from the code, not the claimant's summary
        self.stats = Stats()
        self.runs = Runs(config, repo, layout, data, display, scratch, clock, ledger.spec.spec.harness_hash.hex())
        self.replays = Replays(config, ledger, self.history, researcher, verifier_id, self.runs, self.stats, display,
                               self.publish, self._have, clock)
        self.baselines = Baselines(config, ledger.spec, self.history, self.runs, self.stats, display,
                                   researcher.public_key, self._publish_claim)
        self.proposing = Proposing(config, ledger, repo, self.history, researcher.public_key, rng, self._now_ms,
                                   functools.partial(self.publish, researcher))   # our experiments' edits
        self._missing_best: dict[str, bytes] = {}   # per class: the best commit no peer served (said once)
        self.submissions = SubmitQueue(repo, self.history, ledger.spec, path=queue_path)  # durable with a path
        self.commits: CommitFetcher | None = None   # fetches other nodes' commits, once peered
        self.on_publish: Callable[[Entry], None] = lambda entry: None  # the peer's announce, once peered
        self.market: Market | None = None       # the credits market's jobs, run before our own work

    @property
    def spec(self) -> SignedSpec:
        return self.ledger.spec

    @property
    def running(self) -> dict[str, Live]:
        """Worker -> what it runs now (the live view)."""
        return self.runs.running

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def publish(self, identity: Identity, body: Body) -> Entry:
        """Signs and appends one of our own entries, then hands it to the peer for gossip."""
        entry = await self.ledger.publish(identity, body, time_ms=self._now_ms())
        self.on_publish(entry)
        return entry

    async def publish_profile(self, device: Device) -> None:
        """The research identity's first entry says what hardware its claims come from."""
        if await self.ledger.head(self.researcher.public_key) is not None:
            return
        body = Profile(platform_class=device.platform_class, gpu=device.name if device.index is not None else "",
                       gpu_memory_mb=device.memory_mb, driver=device.driver, torch=torch_version(),
                       cpu=device.name if device.index is None else "")
        await self.publish(self.researcher, body)

    # -- choosing

    def _done(self) -> bool:
        limit = self.config.max_experiments
        return limit is not None and self.stats.experiments >= limit

    def situation(self, device: Device, *, dry: bool = False) -> work.Situation:
        """This worker's snapshot for node/research/work.py's choose_work; `dry`: its last try at an
        experiment found nothing to propose."""
        cls, baseline = device.platform_class, self.spec.spec.baseline_commit
        _, queue = self.replays.queue(cls)
        return work.Situation(
            baseline_done=self.history.baseline_ok(cls, baseline), baseline_running=cls in self.baselines.running,
            calibration_seed=work.calibration_seed(
                self.history, cls, baseline, self.researcher.public_key,
                creator=self.spec.spec.creator == self.researcher.public_key, seed=self.config.seed,
                runs=self.config.calibration_runs),
            own_experiments=work.own_experiments(self.history, cls, self.researcher.public_key),
            paid_jobs=self.market.pending() if self.market is not None else 0, verify=queue,
            submissions=len(self.submissions.queued()), done=self._done(), dry=dry,
            busy=bool(self.replays.busy or self.proposing.busy), unsealed=self._unsealed(cls),
            experiments=self.config.experiments)

    def _unsealed(self, platform_class: str) -> int:
        """Claims of the class that our own seal loop (node/wiring.py) seals within seconds; 0 when
        none of our keys may seal (then whether anyone seals them is not ours to wait for)."""
        state = self.ledger.state
        for key in (self.verifier.public_key, self.researcher.public_key):
            if assign.may_seal(state, key):
                return sum(1 for c in verifier.sealable(state, key) if state.claims[c].platform_class == platform_class)
        return 0

    async def run_worker(self, device: Device) -> None:
        """Works until max_experiments is reached and nothing is left to verify (forever without a limit)."""
        cls = device.platform_class
        workers = self.proposing.workers_of
        workers[cls] = workers.get(cls, 0) + 1
        dry = False
        while True:
            await self.history.sync(self.ledger)
            # a verifier whose replay came before the quorum completed mints once the others' arrive
            if owed := await self.replays.catch_up():
                self.display.event(f"[{device.label}] published {owed} mints owed for verified records")
            match work.choose_work(self.situation(device, dry=dry)):
                case work.Baseline(seed=seed):
                    await self.baselines.run(device, self.config.seed if seed is None else seed)
                    continue
                case work.PaidJob():
                    job = self.market.take() if self.market is not None else None
                    if job is not None and self.market is not None:
                        await self.market.execute(job, functools.partial(self._run_job, device))
                    continue
                case work.Verify(claim=record):
                    verifying = self.replays.verifying_identity(cls)
                    if verifying is not None:
                        await self.replays.verify(device, verifying, record)
                    continue
                case work.RunSubmission():
                    submission = self.submissions.take()
                    if submission is not None:
                        await self._experiment(device, submission)
                    continue
                case work.Stop():
                    return
                case work.Experiment():
                    try:
                        await self._experiment(device, None)
                        continue
                    except (NoProposal, BadProgram) as exc:
                        self.display.event(f"[{device.label}] no experiment to run: {exc}")
                        dry = True
                        continue   # chosen again knowing it: owed calibration, else idle
                case work.Idle():
                    pass
            dry = False   # after a wait the ledger may hold new claims: the proposer may find something
            await self.submissions.wait(IDLE_S)  # a submission wakes the worker early

    def parent_of(self, platform_class: str) -> bytes:
        """The class's best verified commit; the baseline until something is verified."""
        rows = [r for r in self.ledger.state.records if r.platform_class == platform_class]
        return rows[-1].commit if rows else self.spec.spec.baseline_commit

    async def parent_here(self, device: Device) -> bytes:
        """The commit our next experiment builds on: the class's best when it is here or a peer serves
        it, else the newest record we hold (the baseline at worst). A record whose bundle no peer
        serves — its author went away, or never published it — must not stop our research."""
        cls = device.platform_class
        rows = [r for r in self.ledger.state.records if r.platform_class == cls]
        best = self.parent_of(cls)
        if await self._have(best):
            self._missing_best.pop(cls, None)
            return best
        held = self.spec.spec.baseline_commit
        for row in reversed(rows[:-1]):
            if await gitrepo.has_commit(self.repo, row.commit):
                held = row.commit
                break
        if held == best or not await self._have(held):
            raise NoProposal(f"the best commit {best.hex()[:12]} is not here yet (no peer served it)")
        if self._missing_best.get(cls) != best:
            self._missing_best[cls] = best
            self.display.event(f"[{device.label}] the best commit {best.hex()[:12]} is not here (no peer served "
                               f"it): building on {held.hex()[:12]}, the best one here, until it comes")
        return held

    # -- running

    async def _run_job(self, device: Device, train_py: Path, budget_s: int, steps: int | None, seed: int,
                       horizon: int | None) -> RunResult:
        """A market job (or its spot check) through the same sandboxed trainer as experiments."""
        return await self.runs.run(device, f"job {train_py.parent.parent.name[:8]}", train_py, None, steps=steps,
                                   seed=seed, horizon=horizon, budget_s=budget_s)

    async def _publish_claim(self, body: Claim) -> ClaimRecord:
        body = refuse_implausible(self.spec.spec, body)  # no verifier should spend a replay on it
        entry = await self.publish(self.researcher, body)
        record = ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, body)
        self.history.add(record)
        if body.val_bpb is not None and assign.may_seal(self.ledger.state, self.verifier.public_key):
            # our verifier key is an anchor (a solo swarm's): seal at once, so the claim's replay can be
            # the next work, as before seals; node/wiring.py's seal loop seals everyone else's claims
            await self.publish(self.verifier, Seal(claims=[entry.id]))
        return record

    async def _have(self, commit: bytes) -> bool:
        """Whether the commit is here, fetching it (and missing ancestors) from peers if not."""
        if await gitrepo.has_commit(self.repo, commit):
            return True
        return self.commits is not None and await self.commits.fetch(commit)

    # -- our own experiments (baselines and calibration: node/research/baselines.py)

    async def _experiment(self, device: Device, submission: Submission | None) -> None:
        """One run and its claim: a submitted commit (an agent's), or a proposal of our own."""
        started = self.clock()
        cls = device.platform_class
        if submission is None:
            parent = await self.parent_here(device)
            parent_source = (await gitrepo.read_file(self.repo, parent, "train.py")).decode()
            proposal = await self.proposing.next(device, parent_source)
            key, source, what = proposal.key, proposal.source, describe(proposal.changes)
        else:
            parent = submission.parent
            parent_source = (await gitrepo.read_file(self.repo, parent, "train.py")).decode(errors="replace")
            source = (await gitrepo.read_file(self.repo, submission.commit, "train.py")).decode(errors="replace")
            key, what = f"submission:{submission.commit.hex()}", f"{submission.agent}: {submission.message.strip()}"
        self.stats.experiments += 1
        self.proposing.busy.add(key)
        try:
            if submission is None:
                await self.proposing.lease(device, key, self.runs.expected_s(device, None))
                commit = await gitrepo.commit_file(self.repo, parent, {"train.py": source.encode()}, what,
                                                   f"{self.researcher.node_id[:12]} <node@autoswarm>", int(self.clock()))
            else:
                commit = submission.commit
            cand, base = await self.runs.materialize(device, commit, parent)
            result = await self.runs.run(device, what[:80], cand, base, steps=None, seed=self.config.seed)
            best = self.ledger.state.best.get(cls)
            improved = result.val_bpb is not None and (best is None or result.val_bpb < best)
            bundle = await self.runs.store_bundle(commit, parent) if improved else None
            try:
                summary = summarize(parent_source, source)
            except BadProgram as exc:   # an agent's train.py need not be one the proposer can read
                summary = f"not parsed: {exc}"[:200]
            record = await self._publish_claim(claim_body(device, commit, parent, result, summary, what, bundle))
            if submission is not None:
                self.submissions.finish(submission.commit)
        finally:
            self.proposing.busy.discard(key)
        overhead_s = self.clock() - started - result.wall_s
        self.stats.overheads_s.append(overhead_s)
        # Without a verified best every good run is "improved" (its bundle is kept for the verifiers),
        # but calling a run worse than the unverified baseline an improvement misleads the reader.
        mark = "" if not improved else " *improvement*" if best is not None else " (no verified best yet)"
        self.display.event(f"[{device.label}] experiment {self.stats.experiments}: {what[:120]}: {result_text(result)}"
                           f"{mark} claim {record.id.hex()[:12]} (node overhead {overhead_s:.2f} s)")
        self.stats.remember(short_value(result))

