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
    anything is verified), an edit from the configured proposer ([research] proposer,
    node/research/proposers.py) that no counted claim has tried and no other node holds a live
    lease on, a lease announcing it (node/research/leases.py), a git commit, a timed run
    (node/research/runs.py), and a Claim for every result, failures included; an improvement on
    the class's best also gets a thin bundle against its parent, stored under HOME/bundles by its
    hash. A submission is run and claimed the same way.
The ledger is the memory: a restart re-reads it (node/research/history.py) and carries on. Workers share
this object; reservations keep two of them off the same claim or the same program.

Knows nothing about terminals or signals (node/display.py, node/wiring.py).
"""
from __future__ import annotations

import contextlib
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
from node.errors import NoProposal, SetupError
from node.home import DataInfo, Layout
from node.market.loop import Market
from node.platform import Device, torch_version
from node.research import screening, verifier, work
from node.research.fetch import CommitFetcher
from node.research.history import ClaimRecord, History
from node.research.leases import BadLease, LeaseBook, encode as lease_post, lease_seconds
from node.research.memory import standing
from node.research.noise import calibration_report
from node.research.program import BadProgram, normalized_key, summarize
from node.research.proposer import Proposal, Settings, describe
from node.research.proposers import Chosen
from node.research.replay import Replays
from node.research.experiment import RunResult
from node.research.runs import Live, Runs, Stats, claim_body, result_text, short_value
from node.research.submit import SubmitQueue, refuse_implausible
from node.research.waves import WaveQueue, WaveSettings, plan_wave
from node.research.submit import Submission

IDLE_S = 5.0                 # a worker with nothing to do looks again after this long
BASELINE_TRIES = 3           # baselines killed at their wall-clock limit before the node says the machine is too slow


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
        self._busy_keys: set[str] = set()       # programs a worker is running now
        self._baseline_running: set[str] = set()
        self._baseline_timeouts: dict[str, int] = {}   # class -> our baselines killed at their wall-clock limit
        self._settings = Settings(frozen=frozenset(config.frozen_constants))
        self._waves: dict[str, WaveQueue] = {}      # per class: the current wave's proposals ([research] waves)
        self._chosen: Chosen | None = None           # [research] proposer, made once the genesis train.py is read
        self.leases = LeaseBook()                    # other nodes' running programs (node/research/leases.py)
        self.workers_of: dict[str, int] = {}        # per class: this node's workers
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
            baseline_done=self.history.baseline_ok(cls, baseline), baseline_running=cls in self._baseline_running,
            calibration_seed=work.calibration_seed(
                self.history, cls, baseline, self.researcher.public_key,
                creator=self.spec.spec.creator == self.researcher.public_key, seed=self.config.seed,
                runs=self.config.calibration_runs),
            own_experiments=work.own_experiments(self.history, cls, self.researcher.public_key),
            paid_jobs=self.market.pending() if self.market is not None else 0, verify=queue,
            submissions=len(self.submissions.queued()), done=self._done(), dry=dry,
            busy=bool(self.replays.busy or self._busy_keys), unsealed=self._unsealed(cls))

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
        self.workers_of[cls] = self.workers_of.get(cls, 0) + 1
        dry = False
        while True:
            await self.history.sync(self.ledger)
            # a verifier whose replay came before the quorum completed mints once the others' arrive
            if owed := await self.replays.catch_up():
                self.display.event(f"[{device.label}] published {owed} mints owed for verified records")
            match work.choose_work(self.situation(device, dry=dry)):
                case work.Baseline(seed=seed):
                    await self._baseline(device, self.config.seed if seed is None else seed)
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

    # -- our own work: the baseline, calibration, experiments

    async def _baseline(self, device: Device, seed: int) -> None:
        cls, baseline = device.platform_class, self.spec.spec.baseline_commit
        calibration = seed != self.config.seed
        what = f"calibration (data seed {seed})" if calibration else "baseline"
        self._baseline_running.add(cls)
        try:
            cand, _ = await self.runs.materialize(device, baseline, None)
            source = cand.read_text()
            result = await self.runs.run(device, self._phase(cls, what), cand, None, steps=None, seed=seed)
            if result.status == "timeout" and not calibration and self._slow_baseline(device, result.reason):
                return  # a busy moment says nothing about the genesis train.py: no claim, tried again
            bundle = await self.runs.store_bundle(baseline, None) if result.status == "ok" else None
            message = f"calibration: the genesis train.py, data seed {seed}" if calibration \
                else "baseline: the genesis train.py"
            record = await self._publish_claim(claim_body(device, baseline, None, result, summarize(None, source),
                                                           message, bundle))
        finally:
            self._baseline_running.discard(cls)
        self.display.event(f"[{device.label}] {what} {result_text(result)} claim {record.id.hex()[:12]}")
        self.stats.remember(f"base {short_value(result)}")
        if result.status != "ok" and not calibration:
            slow = " (every try; the machine may be too busy or too slow for this budget)" \
                if result.status == "timeout" else ""
            raise SetupError(f"the genesis train.py does not run here{slow}: {result.status}: {result.reason[:300]}")
        if calibration:
            self._report_noise(cls)

    def _slow_baseline(self, device: Device, reason: str) -> bool:
        """Whether a baseline killed at its wall-clock limit is tried again: a machine busy with other
        work (another trainer, a test suite) can make startup alone outlast the allowance, and that
        is no reason to stop the node. After BASELINE_TRIES such kills it is (SetupError follows)."""
        cls = device.platform_class
        tries = self._baseline_timeouts[cls] = self._baseline_timeouts.get(cls, 0) + 1
        if tries >= BASELINE_TRIES:
            return False
        self.display.event(f"[{device.label}] baseline {tries} of {BASELINE_TRIES} too slow ({reason[:120]}): "
                           "is the machine busy? not claimed, trying again")
        return True

    def _phase(self, platform_class: str, what: str) -> str:
        done = self.history.baseline_runs(platform_class, self.spec.spec.baseline_commit, self.researcher.public_key)
        creator = self.spec.spec.creator == self.researcher.public_key
        return work.phase(what, len(done), self.config.calibration_runs if creator else 0)

    def _report_noise(self, platform_class: str) -> None:
        """One line once the calibration runs are complete (node/research/noise.py calibration_report)."""
        runs = self.history.baseline_runs(platform_class, self.spec.spec.baseline_commit, self.researcher.public_key)
        text = calibration_report(platform_class, [v for r in runs if (v := r.body.val_bpb) is not None],
                                  self.spec.spec.noise_bpb[platform_class],
                                  complete=len(runs) > self.config.calibration_runs)
        if text is not None:
            self.display.event(text)

    async def _proposer(self) -> Chosen:
        """The configured proposer ([research] proposer); every program's ancestry starts at the genesis train.py."""
        if self._chosen is None:
            baseline = self.spec.spec.baseline_commit
            genesis = await gitrepo.read_file(self.repo, baseline, "train.py")
            self._chosen = Chosen(self.config.proposer, genesis.decode(errors="replace"), baseline, self.config.seed,
                                  self._settings)
        return self._chosen

    def _propose(self, device: Device, parent_source: str, chosen: Chosen) -> Proposal:
        """Our next edit of the class's best program: a screened winner to confirm (two-tier), the
        next point of a wave (several workers), else the configured proposer's own draw. Tried are
        the programs that count in the ledger, those our workers run, and those other nodes hold
        live leases on (synced by the caller)."""
        cls, state, config = device.platform_class, self.ledger.state, self.config
        leased = self.leases.taken(cls, self._now_ms(), standing(state), self.researcher.public_key)
        tried = self.history.keys | self._busy_keys | leased
        if config.screening_classes and cls == config.reference_class:
            found = screening.next_confirmation(state, self.history, parent_source, reference_class=cls,
                                                screening_classes=config.screening_classes, busy=self._busy_keys)
            if found is not None and found.proposal.key not in leased:   # another node confirms it already
                return found.proposal
        if config.waves and self.workers_of.get(cls, 1) > 1:
            trials = self.history.trials(state, cls)
            queue, parent_key = self._waves.setdefault(cls, WaveQueue()), normalized_key(parent_source)
            if (proposal := queue.take(parent_key, tried)) is None:
                with contextlib.suppress(NoProposal):
                    queue.load(plan_wave(parent_source, profile=device.profile, trials=trials, tried=tried,
                                         n=self.workers_of[cls], rng=self.rng,
                                         settings=WaveSettings(proposer=self._settings)))
                    proposal = queue.take(parent_key, tried)
            if proposal is not None:
                return proposal
        return chosen.propose(self.history, state, cls, device.profile, parent_source, tried=tried, rng=self.rng)

    async def _lease(self, device: Device, key: str) -> None:
        """Tells other nodes' proposers that we run `key` now: without a lease they learn of it only
        from our claim, a whole run later, and may run it too (node/research/leases.py)."""
        until_ms = self._now_ms() + int(lease_seconds(self.runs.expected_s(device, None)) * 1000)
        try:
            post = lease_post(device.platform_class, key, until_ms)
        except BadLease:
            return   # a class or key the lease line cannot carry: the claim still tells everyone, later
        await self.publish(self.researcher, post)

    async def _experiment(self, device: Device, submission: Submission | None) -> None:
        """One run and its claim: a submitted commit (an agent's), or a proposal of our own."""
        started = self.clock()
        cls = device.platform_class
        if submission is None:
            parent = await self.parent_here(device)
            parent_source = (await gitrepo.read_file(self.repo, parent, "train.py")).decode()
            await self.leases.sync(self.ledger, self._now_ms())
            proposal = self._propose(device, parent_source, await self._proposer())
            key, source, what = proposal.key, proposal.source, describe(proposal.changes)
        else:
            parent = submission.parent
            parent_source = (await gitrepo.read_file(self.repo, parent, "train.py")).decode(errors="replace")
            source = (await gitrepo.read_file(self.repo, submission.commit, "train.py")).decode(errors="replace")
            key, what = f"submission:{submission.commit.hex()}", f"{submission.agent}: {submission.message.strip()}"
        self.stats.experiments += 1
        self._busy_keys.add(key)
        try:
            if submission is None:
                await self._lease(device, key)
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
            self._busy_keys.discard(key)
        overhead_s = self.clock() - started - result.wall_s
        self.stats.overheads_s.append(overhead_s)
        mark = " *improvement*" if improved else ""
        self.display.event(f"[{device.label}] experiment {self.stats.experiments}: {what[:120]}: {result_text(result)}"
                           f"{mark} claim {record.id.hex()[:12]} (node overhead {overhead_s:.2f} s)")
        self.stats.remember(short_value(result))

