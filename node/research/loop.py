"""The research loop: per worker, pick the most valuable work, run it through the trainer, publish.

Theory of operation. Each worker (one per GPU, or the CPU) repeats:
  1. the baseline, if its platform class has no successful claim of the genesis commit yet;
  2. else a verification: the most promising unverified claim of its class (node/research/verifier.py),
     replayed with the claim's steps and seed, published as the verifier identity's Verify, then
     the record mint and the verification fee where the credit rules allow;
  3. else an experiment of its own: parent = the class's best verified commit (the baseline
     before anything is verified), an edit from the proposer that no claim in the ledger has
     tried, a git commit, a timed run, and a Claim for every result, failures included; an
     improvement on the class's best also gets a thin bundle against its parent, stored under
     HOME/bundles by its hash.
The ledger is the memory: a restart re-reads it (node/research/history.py) and carries on. Workers share
this object; reservations keep two of them off the same claim or the same program.

Knows nothing about terminals or signals (node/display.py, node/wiring.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ledger import credits
from ledger.bodies import Body, Claim, Profile, Verify
from ledger.entry import Entry
from ledger.keys import Identity, short_id
from ledger.spec import SignedSpec
from ledger.store import Ledger
from swarm import bundles, gitrepo
from swarm.gitrepo import Repository
from trainer.constants import PROFILES

from node.research import screening
from node.research import verifier
from node.web.backend import Submission
from node.config import NodeConfig
from node.display import Display
from node.errors import NoProposal, SetupError
from node.research.experiment import RunRequest, RunResult, machine_slot, run_trainer
from node.research.fetch import CommitFetcher, keep_bundle
from node.research.history import ClaimRecord, History
from node.market.loop import Market
from node.research.noise import run_to_run_noise
from node.home import DataInfo, Layout
from node.platform import Device, torch_version
from node.research.program import BadProgram, normalized_key, summarize
from node.research.proposer import Proposal, Settings, describe, propose
from node.research.submit import SubmitQueue
from node.research.waves import WaveQueue, WaveSettings, plan_wave

IDLE_S = 5.0                 # a worker with nothing to do looks again after this long
SLOW_REPLAY_TRIES = 3        # replays too slow for the budget before the verifier publishes that they do not fit
SLOW_REPLAY_WAIT_BUDGETS = 6  # a too-slow replay is tried again after this many budgets (a busy moment passes)
MAX_LOSS_POINTS = 16  # of the trainer's loss curve kept in a claim: most of a claim's bytes (docs/benchmarks.md, "Scale")
EVAL_ESTIMATE_S = {"cpu": 10.0, "gpu": 120.0}  # shown as part of "time left" only


@dataclass(slots=True)
class Stats:
    experiments: int = 0           # own experiments started by this process
    verifications: int = 0
    overheads_s: list[float] = field(default_factory=list)  # per experiment, outside the trainer
    last: list[str] = field(default_factory=list)           # short results, newest last


class Research:
    def __init__(self, config: NodeConfig, ledger: Ledger, repo: Repository, layout: Layout, data: DataInfo,
                 researcher: Identity, verifier_id: Identity, display: Display, scratch: Path,
                 rng: random.Random, clock: Callable[[], float] = time.time) -> None:
        self.config, self.ledger, self.repo, self.layout, self.data = config, ledger, repo, layout, data
        self.researcher, self.verifier = researcher, verifier_id
        self.display, self.scratch, self.rng, self.clock = display, scratch, rng, clock
        self.history = History()
        self.stats = Stats()
        self._busy_claims: set[bytes] = set()   # claims a worker is verifying now
        self._busy_keys: set[str] = set()       # programs a worker is running now
        self._baseline_running: set[str] = set()
        self._unavailable: set[bytes] = set()   # claims whose commit this node cannot read
        self._inconclusive: dict[bytes, tuple[int, float]] = {}  # claim -> (replays too slow, retry after: monotonic)
        self._settings = Settings(frozen=frozenset(config.frozen_constants))
        self._waves: dict[str, WaveQueue] = {}      # per class: the current wave's proposals ([research] waves)
        self.workers_of: dict[str, int] = {}        # per class: this node's workers
        self._last_wall_s: dict[tuple[str, bool], float] = {}  # (worker, replay) -> seconds
        self.submissions = SubmitQueue(repo, self.history, ledger.spec)
        self.commits: CommitFetcher | None = None   # fetches other nodes' commits, once peered
        self.on_publish: Callable[[Entry], None] = lambda entry: None  # the peer's announce, once peered
        self.running: dict[str, tuple[str, float]] = {}  # worker -> (what, expected monotonic end): the live view
        self.market: Market | None = None       # the credits market's jobs, run before our own work

    @property
    def spec(self) -> SignedSpec:
        return self.ledger.spec

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def publish(self, identity: Identity, body: Body) -> Entry:
        """Signs and appends one of our own entries, then hands it to the peer for gossip."""
        entry = await self.ledger.publish(identity, body, time_ms=self._now_ms())
        self.on_publish(entry)
        return entry

    def verifying_identity(self, platform_class: str) -> Identity | None:
        """Which of our keys verifies in this class: the verifier key where the swarm trusts it (our
        own solo swarm), else the research key where the swarm admitted it; None: we may not verify."""
        state = self.ledger.state
        for identity in (self.verifier, self.researcher):
            if credits.trusted(state, identity.public_key, platform_class):
                return identity
        return None

    def _never_vouch_for(self, verifying: Identity, platform_class: str) -> frozenset[bytes]:
        """Our own research key's claims, once some other trusted verifier can vouch for them instead."""
        if verifying.public_key == self.researcher.public_key:
            return frozenset()   # the ledger refuses an author verifying itself anyway
        mine = {self.researcher.public_key, self.verifier.public_key}
        others = any(platform_class in classes and key not in mine for key, classes in self.ledger.state.verifiers.items())
        return frozenset({self.researcher.public_key}) if others else frozenset()

    async def publish_profile(self, device: Device) -> None:
        """The research identity's first entry says what hardware its claims come from."""
        if await self.ledger.head(self.researcher.public_key) is not None:
            return
        body = Profile(platform_class=device.platform_class, gpu=device.name if device.index is not None else "",
                       gpu_memory_mb=device.memory_mb, driver=device.driver, torch=torch_version(),
                       cpu=device.name if device.index is None else "")
        await self.publish(self.researcher, body)

    async def catch_up(self) -> int:
        """Publishes mints owed from before a stop (a verify entry whose mints never followed)."""
        published = 0
        for verifying in (self.verifier, self.researcher):
            me = verifying.public_key
            for claim_id in verifier.owed_records(self.ledger.state, me):
                mint, _ = verifier.record_mint(self.ledger.state, me, claim_id)  # against the state as it is now
                if mint is not None:
                    await self.publish(verifying, mint)
                    published += 1
            for fee in verifier.owed_fees(self.ledger.state, me):
                await self.publish(verifying, fee)
                published += 1
        return published

    # -- choosing

    def _waiting(self) -> set[bytes]:
        """Claims whose last replay here was too slow, until their retry time."""
        now = time.monotonic()
        return {claim for claim, (_, after) in self._inconclusive.items() if after > now}

    def _done(self) -> bool:
        limit = self.config.max_experiments
        return limit is not None and self.stats.experiments >= limit

    async def run_worker(self, device: Device) -> None:
        """Works until max_experiments is reached and nothing is left to verify (forever without a limit)."""
        cls = device.platform_class
        self.workers_of[cls] = self.workers_of.get(cls, 0) + 1
        while True:
            await self.history.sync(self.ledger)
            # a verifier whose replay came before the quorum completed mints once the others' arrive
            if owed := await self.catch_up():
                self.display.event(f"[{device.label}] published {owed} mints owed for verified records")
            state = self.ledger.state
            if not self.history.baseline_ok(cls, self.spec.spec.baseline_commit) and cls not in self._baseline_running:
                await self._baseline(device, self.config.seed)
                continue
            calibration_seed = self._calibration_seed(cls)
            if calibration_seed is not None:
                await self._baseline(device, calibration_seed)
                continue
            work = self.market.take() if self.market is not None else None
            if work is not None and self.market is not None:
                # paid work first: a payment is held for it, and its payer waits
                await self.market.execute(work, functools.partial(self._run_job, device))
                continue
            verifying = self.verifying_identity(cls)
            queue = [] if verifying is None else verifier.verification_queue(
                state, self.history, verifying.public_key, cls,
                self._busy_claims | self._unavailable | self._waiting(),
                own=self._never_vouch_for(verifying, cls), now_ms=self._now_ms())
            if queue and verifying is not None:
                await self._verify(device, verifying, queue[0])
                continue
            submission = self.submissions.take()
            if submission is not None:
                await self._experiment(device, submission)
                continue
            if self._done():
                if not self._busy_claims and not self._busy_keys:
                    return
            else:
                try:
                    await self._experiment(device, None)
                    continue
                except (NoProposal, BadProgram) as exc:
                    self.display.event(f"[{device.label}] no experiment to run: {exc}")
            await self.submissions.wait(IDLE_S)  # a submission wakes the worker early

    def parent_of(self, platform_class: str) -> bytes:
        """The class's best verified commit; the baseline until something is verified."""
        rows = [r for r in self.ledger.state.records if r.platform_class == platform_class]
        return rows[-1].commit if rows else self.spec.spec.baseline_commit

    # -- running

    def _expected_s(self, device: Device, steps: int | None) -> float:
        # the last run of the same kind on this worker is the best guess; a formula before the first
        known = self._last_wall_s.get((device.label, steps is not None))
        if known is not None:
            return known
        budget = self.config.budget_s(device.device)
        return budget + PROFILES[device.profile].startup_allowance_s / 6 + EVAL_ESTIMATE_S[device.profile]

    async def _materialize(self, device: Device, commit: bytes, parent: bytes | None) -> tuple[Path, Path | None]:
        folder = self.scratch / device.label
        cand, base = folder / "candidate" / "train.py", folder / "parent" / "train.py"
        for path in (cand, base):
            path.parent.mkdir(parents=True, exist_ok=True)
        cand.write_bytes(await gitrepo.read_file(self.repo, commit, "train.py"))
        if parent is None:
            return cand, None
        base.write_bytes(await gitrepo.read_file(self.repo, parent, "train.py"))
        return cand, base

    async def _run_job(self, device: Device, train_py: Path, budget_s: int, steps: int | None, seed: int,
                       horizon: int | None) -> RunResult:
        """A market job (or its spot check) through the same sandboxed trainer as experiments."""
        return await self._run(device, f"job {train_py.parent.parent.name[:8]}", train_py, None, steps=steps,
                               seed=seed, horizon=horizon, budget_s=budget_s)

    async def _run(self, device: Device, what: str, cand: Path, parent: Path | None, *, steps: int | None,
                   seed: int, horizon: int | None = None, budget_s: int | None = None) -> RunResult:
        env = {"AUTOSWARM_HOME": str(self.layout.home)}  # the sandbox hides the home (keys) by this
        if device.index is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(device.index)
        request = RunRequest(train_py=cand, parent_py=parent, profile=device.profile,
                             budget_s=budget_s or self.config.budget_s(device.device), steps=steps, horizon=horizon,
                             seed=seed, data=self.data.path, scratch=self.scratch / device.label / "tmp", env=env)
        expected_s = self._expected_s(device, steps)
        async with machine_slot(self.config.machine_lock):
            self.display.start(device.label, what, expected_s)
            self.running[device.label] = (what, time.monotonic() + expected_s)
            try:
                result = await run_trainer(request, lambda line: self.display.trainer_line(device.label, line))
            finally:
                self.display.stop(device.label)
                self.running.pop(device.label, None)
        self._last_wall_s[(device.label, steps is not None)] = result.wall_s
        changed = result.status == "rejected" and "harness changed" in result.reason  # the runner's own check
        if changed or (result.harness_hash and result.harness_hash != self.spec.spec.harness_hash.hex()):
            raise SetupError("the trainer's harness changed while the node ran; restart the node "
                             "(a new harness is a new swarm)")
        return result

    def _claim(self, device: Device, commit: bytes, parent: bytes | None, result: RunResult, summary: str,
               message: str, bundle: bytes | None) -> Claim:
        curve = list(result.loss_curve)
        if len(curve) > MAX_LOSS_POINTS:
            every = -(-len(curve) // MAX_LOSS_POINTS)
            curve = curve[::every]
        note = message if result.status == "ok" else f"{message}: {result.reason}"
        return Claim(commit=commit, parent=parent, platform_class=device.platform_class, status=result.status,
                     val_bpb=result.val_bpb, num_steps=max(0, result.num_steps),
                     planned_steps=max(0, result.planned_steps), seed=result.seed, training_s=max(0.0, result.training_s), wall_s=max(0.0, result.total_s or result.wall_s),
                     peak_vram_mb=max(0.0, result.peak_vram_mb), loss_curve=curve, diff_summary=summary,
                     message=note[:1000], bundle=bundle)

    async def _publish_claim(self, body: Claim) -> ClaimRecord:
        entry = await self.publish(self.researcher, body)
        record = ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, body)
        self.history.add(record)
        return record

    async def _store_bundle(self, commit: bytes, parent: bytes | None) -> bytes:
        data = await bundles.make_bundle(self.repo, commit, have=[] if parent is None else [parent])
        digest = bundles.bundle_hash(data)
        await keep_bundle(self.layout.bundles, digest, data)
        return digest

    def _remember(self, text: str) -> None:
        self.stats.last = (self.stats.last + [text])[-3:]

    # -- the three kinds of work

    def _calibration_seed(self, platform_class: str) -> int | None:
        """The data seed of the next calibration run, if this node created the swarm and owes one."""
        if self.spec.spec.creator != self.researcher.public_key or platform_class in self._baseline_running:
            return None
        runs = self.history.baseline_runs(platform_class, self.spec.spec.baseline_commit, self.researcher.public_key)
        if not runs or len(runs) > self.config.calibration_runs:
            return None
        return self.config.seed + len(runs)

    async def _baseline(self, device: Device, seed: int) -> None:
        cls, baseline = device.platform_class, self.spec.spec.baseline_commit
        calibration = seed != self.config.seed
        what = f"calibration (data seed {seed})" if calibration else "baseline"
        self._baseline_running.add(cls)
        try:
            cand, _ = await self._materialize(device, baseline, None)
            source = cand.read_text()
            result = await self._run(device, what, cand, None, steps=None, seed=seed)
            bundle = await self._store_bundle(baseline, None) if result.status == "ok" else None
            message = f"calibration: the genesis train.py, data seed {seed}" if calibration \
                else "baseline: the genesis train.py"
            record = await self._publish_claim(self._claim(device, baseline, None, result, summarize(None, source),
                                                           message, bundle))
        finally:
            self._baseline_running.discard(cls)
        self.display.event(f"[{device.label}] {what} {_result_text(result)} claim {record.id.hex()[:12]}")
        self._remember(f"base {_short_value(result)}")
        if result.status != "ok" and not calibration:
            raise SetupError(f"the genesis train.py does not run here: {result.status}: {result.reason[:300]}")
        if calibration:
            self._report_noise(cls)

    def _report_noise(self, platform_class: str) -> None:
        runs = self.history.baseline_runs(platform_class, self.spec.spec.baseline_commit, self.researcher.public_key)
        found = run_to_run_noise([v for r in runs if (v := r.body.val_bpb) is not None])
        if found is None:
            return
        spec_noise = self.spec.spec.noise_bpb[platform_class]
        text = (f"run-to-run noise of {platform_class}: sd {found.sigma_bpb:.4f} bpb over {found.samples} runs "
                f"(tolerance {found.tolerance_bpb:.4f}); the swarm's noise_bpb is {spec_noise}")
        if found.tolerance_bpb > spec_noise:
            text += ": below the measured tolerance, so some records may be noise (raise [swarm] noise_bpb)"
        self.display.event(text)

    async def _have(self, commit: bytes) -> bool:
        """Whether the commit is here, fetching it (and missing ancestors) from peers if not."""
        if await gitrepo.has_commit(self.repo, commit):
            return True
        return self.commits is not None and await self.commits.fetch(commit)

    async def _verify(self, device: Device, verifying: Identity, record: ClaimRecord) -> None:
        body, cls = record.body, device.platform_class
        self._busy_claims.add(record.id)
        try:
            if not await self._have(body.commit) or (body.parent is not None and not await self._have(body.parent)):
                self._unavailable.add(record.id)  # asked again after a restart, or once a peer serves it
                self.display.event(f"[{device.label}] skip verifying {record.id.hex()[:12]}: its commit is "
                                   "not here and no peer served its bundle")
                return
            cand, parent = await self._materialize(device, body.commit, body.parent)
            result = await self._run(device, f"verify {record.id.hex()[:8]}", cand, parent, steps=body.num_steps,
                                     seed=body.seed, horizon=body.planned_steps or None)
            status, value, reason = result.status, result.val_bpb, result.reason
            budget = self.config.budget_s(device.device)
            killed = status == "timeout"
            if killed or status == "ok" and not verifier.fits_budget(result.training_s, budget):
                # Too slow: the claimed steps may not fit the budget on this class, or this machine is
                # just busy (other nodes' trainers, other jobs). Only a replay too slow every time is
                # evidence; one killed at its wall-clock limit never is (an absurd step count stays
                # unverified and mints nothing).
                tries = self._inconclusive.get(record.id, (0, 0.0))[0] + 1
                slow = f"replay trained {result.training_s:.1f} s, budget {budget} s"
                if killed or tries < SLOW_REPLAY_TRIES:
                    self._inconclusive[record.id] = (tries, time.monotonic() + budget * SLOW_REPLAY_WAIT_BUDGETS)
                    if tries >= SLOW_REPLAY_TRIES:
                        self._unavailable.add(record.id)  # killed every time: left to other verifiers
                    self.display.event(f"[{device.label}] replay {tries} of {record.id.hex()[:12]} too slow "
                                       f"({(reason if killed else slow)[:120]}): inconclusive, not published")
                    return
                status, value, reason = "timeout", None, slow
            verify = Verify(claim=record.id, commit=body.commit, platform_class=cls, status=status, val_bpb=value,
                            num_steps=max(0, result.num_steps), seed=result.seed,
                            training_s=max(0.0, result.training_s))
            entry = await self.publish(verifying, verify)
            self.stats.verifications += 1
            await self._mint(device, verifying, record, entry.id, value, f"{status}: {reason[:160]}")
        finally:
            self._busy_claims.discard(record.id)

    async def _mint(self, device: Device, verifying: Identity, record: ClaimRecord, verify_id: bytes,
                    value: float | None, failure: str) -> None:
        claimed = record.body.val_bpb
        agreed = "" if value is None or claimed is None else f" (claimed {claimed:.4f}, diff {value - claimed:+.4f})"
        text = f"[{device.label}] verified {record.id.hex()[:12]}: {value:.4f}{agreed}" if value is not None else \
            f"[{device.label}] verification of {record.id.hex()[:12]} failed ({failure}): refuted"
        state = self.ledger.state
        mint, why = verifier.record_mint(state, verifying.public_key, record.id)
        if mint is not None:
            await self.publish(verifying, mint)
            text += (f"; RECORD, minted {mint.amount / 1e6:.6f} credits to {short_id(mint.to)}" if mint.prev_best is not None
                     else "; RECORD (the verifier's first in this class: by the credit rules it mints nothing)")
        elif record.id in state.verified:
            text += "; a confirmation re-run of the best (earns the fee, not a record share)" \
                if why == "the minter must be part of the quorum" else f"; {why}"
        elif record.id in state.refuted:
            text += f"; REFUTED: the quorum measured {state.refuted[record.id]:.4f}, beyond the noise of the claim"
        fee = verifier.verification_mint(self.ledger.state, verifying.public_key, verify_id)
        if fee is not None:
            await self.publish(verifying, fee)
        self.display.event(text)

    def _propose(self, device: Device, parent_source: str) -> Proposal:
        """Our next edit of the class's best program: a screened winner to confirm (two-tier), the
        next point of a wave (several workers), else the proposer's own draw."""
        cls, state, config = device.platform_class, self.ledger.state, self.config
        tried = self.history.keys | self._busy_keys
        if config.screening_classes and cls == config.reference_class:
            found = screening.next_confirmation(state, self.history, parent_source, reference_class=cls,
                                                screening_classes=config.screening_classes, busy=self._busy_keys)
            if found is not None:
                return found.proposal
        trials = self.history.trials(state, cls)
        if config.waves and self.workers_of.get(cls, 1) > 1:
            queue, parent_key = self._waves.setdefault(cls, WaveQueue()), normalized_key(parent_source)
            if (proposal := queue.take(parent_key, tried)) is None:
                with contextlib.suppress(NoProposal):
                    queue.load(plan_wave(parent_source, profile=device.profile, trials=trials, tried=tried,
                                         n=self.workers_of[cls], rng=self.rng,
                                         settings=WaveSettings(proposer=self._settings)))
                    proposal = queue.take(parent_key, tried)
            if proposal is not None:
                return proposal
        return propose(parent_source, profile=device.profile, trials=trials, tried=tried, rng=self.rng,
                       settings=self._settings)

    async def _experiment(self, device: Device, submission: Submission | None) -> None:
        """One run and its claim: a submitted commit (an agent's), or a proposal of our own."""
        started = time.monotonic()
        cls = device.platform_class
        if submission is None:
            parent = self.parent_of(cls)
            if not await self._have(parent):
                raise NoProposal(f"the best commit {parent.hex()[:12]} is not here yet (no peer served it)")
            parent_source = (await gitrepo.read_file(self.repo, parent, "train.py")).decode()
            proposal = self._propose(device, parent_source)
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
                commit = await gitrepo.commit_file(self.repo, parent, {"train.py": source.encode()}, what,
                                                   f"{self.researcher.node_id[:12]} <node@autoswarm>", int(self.clock()))
            else:
                commit = submission.commit
            cand, base = await self._materialize(device, commit, parent)
            result = await self._run(device, what[:80], cand, base, steps=None, seed=self.config.seed)
            best = self.ledger.state.best.get(cls)
            improved = result.val_bpb is not None and (best is None or result.val_bpb < best)
            bundle = await self._store_bundle(commit, parent) if improved else None
            try:
                summary = summarize(parent_source, source)
            except BadProgram as exc:   # an agent's train.py need not be one the proposer can read
                summary = f"not parsed: {exc}"[:200]
            record = await self._publish_claim(self._claim(device, commit, parent, result, summary, what, bundle))
        finally:
            self._busy_keys.discard(key)
        overhead_s = time.monotonic() - started - result.wall_s
        self.stats.overheads_s.append(overhead_s)
        mark = " *improvement*" if improved else ""
        self.display.event(f"[{device.label}] experiment {self.stats.experiments}: {what[:120]}: {_result_text(result)}"
                           f"{mark} claim {record.id.hex()[:12]} (node overhead {overhead_s:.2f} s)")
        self._remember(_short_value(result))


def _result_text(result: RunResult) -> str:
    if result.val_bpb is not None:
        return f"val_bpb {result.val_bpb:.4f} in {result.num_steps} steps"
    return f"{result.status} ({result.reason[:120]})"


def _short_value(result: RunResult) -> str:
    return f"{result.val_bpb:.4f}" if result.val_bpb is not None else result.status
