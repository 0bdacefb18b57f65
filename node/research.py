"""The research loop: per worker, pick the most valuable work, run it through the trainer, publish.

Theory of operation. Each worker (one per GPU, or the CPU) repeats:
  1. the baseline, if its platform class has no successful claim of the genesis commit yet;
  2. else a verification: the most promising unverified claim of its class (node/verifier.py),
     replayed with the claim's steps and seed, published as the verifier identity's Verify, then
     the record mint and the verification fee where the credit rules allow;
  3. else an experiment of its own: parent = the class's best verified commit (the baseline
     before anything is verified), an edit from the proposer that no claim in the ledger has
     tried, a git commit, a timed run, and a Claim for every result, failures included; an
     improvement on the class's best also gets a thin bundle against its parent, stored under
     HOME/bundles by its hash.
The ledger is the memory: a restart re-reads it (node/history.py) and carries on. Workers share
this object; reservations keep two of them off the same claim or the same program.

Knows nothing about terminals or signals (node/display.py, node/node.py).
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ledger.bodies import Claim, Profile, Verify
from ledger.keys import Identity, short_id
from ledger.spec import SignedSpec
from ledger.store import Ledger
from swarm import bundles, gitrepo
from swarm.gitrepo import Repository
from trainer.constants import PROFILES

from node import verifier
from node.config import NodeConfig
from node.display import Display
from node.errors import NoProposal, SetupError
from node.experiment import RunRequest, RunResult, run_trainer
from node.history import ClaimRecord, History
from node.home import DataInfo, Layout
from node.platform import Device, torch_version
from node.program import BadProgram, summarize
from node.proposer import Settings, describe, propose

IDLE_S = 5.0                 # a worker with nothing to do looks again after this long
MAX_LOSS_POINTS = 128        # of the trainer's loss curve kept in a claim (its body is 16 KiB in all)
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
        self._settings = Settings(frozen=frozenset(config.frozen_constants))
        self._last_wall_s: dict[tuple[str, bool], float] = {}  # (worker, replay) -> seconds

    @property
    def spec(self) -> SignedSpec:
        return self.ledger.spec

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def publish_profile(self, device: Device) -> None:
        """The research identity's first entry says what hardware its claims come from."""
        if await self.ledger.head(self.researcher.public_key) is not None:
            return
        body = Profile(platform_class=device.platform_class, gpu=device.name if device.index is not None else "",
                       gpu_memory_mb=device.memory_mb, driver=device.driver, torch=torch_version(),
                       cpu=device.name if device.index is None else "")
        await self.ledger.publish(self.researcher, body, time_ms=self._now_ms())

    async def catch_up(self) -> int:
        """Publishes mints owed from before a stop (a verify entry whose mints never followed)."""
        me, published = self.verifier.public_key, 0
        for claim_id in verifier.owed_records(self.ledger.state, me):
            mint, _ = verifier.record_mint(self.ledger.state, me, claim_id)  # against the state as it is now
            if mint is not None:
                await self.ledger.publish(self.verifier, mint, time_ms=self._now_ms())
                published += 1
        for fee in verifier.owed_fees(self.ledger.state, me):
            await self.ledger.publish(self.verifier, fee, time_ms=self._now_ms())
            published += 1
        return published

    # -- choosing

    def _done(self) -> bool:
        limit = self.config.max_experiments
        return limit is not None and self.stats.experiments >= limit

    async def run_worker(self, device: Device) -> None:
        """Works until max_experiments is reached and nothing is left to verify (forever without a limit)."""
        cls = device.platform_class
        while True:
            await self.history.sync(self.ledger)
            state = self.ledger.state
            if not self.history.baseline_ok(cls, self.spec.spec.baseline_commit) and cls not in self._baseline_running:
                await self._baseline(device)
                continue
            queue = verifier.verification_queue(state, self.history, self.verifier.public_key, cls,
                                                self._busy_claims | self._unavailable)
            if queue:
                await self._verify(device, queue[0])
                continue
            if self._done():
                if not self._busy_claims and not self._busy_keys:
                    return
            else:
                try:
                    await self._experiment(device)
                    continue
                except (NoProposal, BadProgram) as exc:
                    self.display.event(f"[{device.label}] no experiment to run: {exc}")
            await asyncio.sleep(IDLE_S)

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

    async def _run(self, device: Device, what: str, cand: Path, parent: Path | None, *, steps: int | None,
                   seed: int, horizon: int | None = None) -> RunResult:
        env = {"AUTOSWARM_HOME": str(self.layout.home)}  # the sandbox hides the home (keys) by this
        if device.index is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(device.index)
        request = RunRequest(train_py=cand, parent_py=parent, profile=device.profile,
                             budget_s=self.config.budget_s(device.device), steps=steps, horizon=horizon, seed=seed,
                             data=self.data.path, scratch=self.scratch / device.label / "tmp", env=env)
        self.display.start(device.label, what, self._expected_s(device, steps))
        try:
            result = await run_trainer(request, lambda line: self.display.trainer_line(device.label, line))
        finally:
            self.display.stop(device.label)
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
        entry = await self.ledger.publish(self.researcher, body, time_ms=self._now_ms())
        record = ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, body)
        self.history.add(record)
        return record

    async def _store_bundle(self, commit: bytes, parent: bytes | None) -> bytes:
        data = await bundles.make_bundle(self.repo, commit, have=[] if parent is None else [parent])
        digest = bundles.bundle_hash(data)
        path = self.layout.bundles / digest.hex()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            await asyncio.to_thread(tmp.write_bytes, data)
            tmp.replace(path)
        return digest

    def _remember(self, text: str) -> None:
        self.stats.last = (self.stats.last + [text])[-3:]

    # -- the three kinds of work

    async def _baseline(self, device: Device) -> None:
        cls, baseline = device.platform_class, self.spec.spec.baseline_commit
        self._baseline_running.add(cls)
        try:
            cand, _ = await self._materialize(device, baseline, None)
            source = cand.read_text()
            result = await self._run(device, "baseline", cand, None, steps=None, seed=self.config.seed)
            bundle = await self._store_bundle(baseline, None) if result.status == "ok" else None
            record = await self._publish_claim(self._claim(device, baseline, None, result, summarize(None, source),
                                                           "baseline: the genesis train.py", bundle))
        finally:
            self._baseline_running.discard(cls)
        self.display.event(f"[{device.label}] baseline {_result_text(result)} claim {record.id.hex()[:12]}")
        self._remember(f"base {_short_value(result)}")
        if result.status != "ok":
            raise SetupError(f"the genesis train.py does not run here: {result.status}: {result.reason[:300]}")

    async def _verify(self, device: Device, record: ClaimRecord) -> None:
        body, cls = record.body, device.platform_class
        self._busy_claims.add(record.id)
        try:
            if not await gitrepo.has_commit(self.repo, body.commit) or (
                    body.parent is not None and not await gitrepo.has_commit(self.repo, body.parent)):
                self._unavailable.add(record.id)  # fetched from peers once they exist (issue 5, part 2)
                self.display.event(f"[{device.label}] skip verifying {record.id.hex()[:12]}: commit not here")
                return
            cand, parent = await self._materialize(device, body.commit, body.parent)
            result = await self._run(device, f"verify {record.id.hex()[:8]}", cand, parent, steps=body.num_steps,
                                     seed=body.seed, horizon=body.planned_steps or None)
            status, value, reason = result.status, result.val_bpb, result.reason
            budget = self.config.budget_s(device.device)
            if status == "ok" and not verifier.fits_budget(result.training_s, budget):
                # the claimed steps do not fit the budget on this class
                status, value, reason = "timeout", None, f"replay trained {result.training_s:.1f} s, budget {budget} s"
            verify = Verify(claim=record.id, commit=body.commit, platform_class=cls, status=status, val_bpb=value,
                            num_steps=max(0, result.num_steps), seed=result.seed,
                            training_s=max(0.0, result.training_s))
            entry = await self.ledger.publish(self.verifier, verify, time_ms=self._now_ms())
            self.stats.verifications += 1
            await self._mint(device, record, entry.id, value, f"{status}: {reason[:160]}")
        finally:
            self._busy_claims.discard(record.id)

    async def _mint(self, device: Device, record: ClaimRecord, verify_id: bytes, value: float | None,
                    failure: str) -> None:
        claimed = record.body.val_bpb
        agreed = "" if value is None or claimed is None else f" (claimed {claimed:.4f}, diff {value - claimed:+.4f})"
        text = f"[{device.label}] verified {record.id.hex()[:12]}: {value:.4f}{agreed}" if value is not None else \
            f"[{device.label}] verification of {record.id.hex()[:12]} failed ({failure}): refuted"
        state = self.ledger.state
        mint, why = verifier.record_mint(state, self.verifier.public_key, record.id)
        if mint is not None:
            await self.ledger.publish(self.verifier, mint, time_ms=self._now_ms())
            text += (f"; RECORD, minted {mint.amount / 1e6:.6f} credits to {short_id(mint.to)}" if mint.prev_best is not None
                     else "; RECORD (the verifier's first in this class: by the credit rules it mints nothing)")
        elif record.id in state.verified:
            text += f"; {why}"
        fee = verifier.verification_mint(self.ledger.state, self.verifier.public_key, verify_id)
        if fee is not None:
            await self.ledger.publish(self.verifier, fee, time_ms=self._now_ms())
        self.display.event(text)

    async def _experiment(self, device: Device) -> None:
        started = time.monotonic()
        cls = device.platform_class
        parent = self.parent_of(cls)
        parent_source = (await gitrepo.read_file(self.repo, parent, "train.py")).decode()
        proposal = propose(parent_source, profile=device.profile,
                           trials=self.history.trials(self.ledger.state, cls),
                           tried=self.history.keys | self._busy_keys, rng=self.rng, settings=self._settings)
        self.stats.experiments += 1
        self._busy_keys.add(proposal.key)
        try:
            what = describe(proposal.changes)
            commit = await gitrepo.commit_file(self.repo, parent, {"train.py": proposal.source.encode()}, what,
                                               f"{self.researcher.node_id[:12]} <node@autoswarm>", int(self.clock()))
            cand, base = await self._materialize(device, commit, parent)
            result = await self._run(device, what, cand, base, steps=None, seed=self.config.seed)
            best = self.ledger.state.best.get(cls)
            improved = result.val_bpb is not None and (best is None or result.val_bpb < best)
            bundle = await self._store_bundle(commit, parent) if improved else None
            record = await self._publish_claim(self._claim(device, commit, parent, result,
                                                           summarize(parent_source, proposal.source), what, bundle))
        finally:
            self._busy_keys.discard(proposal.key)
        overhead_s = time.monotonic() - started - result.wall_s
        self.stats.overheads_s.append(overhead_s)
        mark = " *improvement*" if improved else ""
        self.display.event(f"[{device.label}] experiment {self.stats.experiments}: {what}: {_result_text(result)}"
                           f"{mark} claim {record.id.hex()[:12]} (node overhead {overhead_s:.2f} s)")
        self._remember(_short_value(result))


def _result_text(result: RunResult) -> str:
    if result.val_bpb is not None:
        return f"val_bpb {result.val_bpb:.4f} in {result.num_steps} steps"
    return f"{result.status} ({result.reason[:120]})"


def _short_value(result: RunResult) -> str:
    return f"{result.val_bpb:.4f}" if result.val_bpb is not None else result.status
