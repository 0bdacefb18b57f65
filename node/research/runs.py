"""One worker's trainer runs: a commit's train.py written to scratch, run in the sandboxed trainer
(node/research/experiment.py) under the machine slot, shown on the display, and its result as a
Claim body.

Every kind of work goes through `Runs.run`: baselines, experiments, replays and market jobs, so
the display, the live view (`running`) and the guess of how long a run takes are one thing.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ledger.bodies import Claim
from swarm import bundles, gitrepo
from swarm.gitrepo import Repository
from trainer.constants import PROFILES

from node.config import NodeConfig
from node.display import Display
from node.errors import SetupError
from node.home import DataInfo, Layout
from node.platform import Device
from node.research.experiment import RunRequest, RunResult, machine_slot, run_trainer
from node.research.fetch import keep_bundle
from node.research.limits import MAX_CLAIM_MESSAGE

MAX_LOSS_POINTS = 16  # of the trainer's loss curve kept in a claim: most of a claim's bytes (docs/benchmarks.md, "Scale")
EVAL_ESTIMATE_S = {"cpu": 10.0, "gpu": 120.0}  # shown as part of "time left" only
PROGRESS_EVERY_S = 30.0  # without a terminal's status line, a run's progress is logged this often
MAX_PARENT_RUNS = 256    # parent runs a node remembers for paired replays: a few hundred bytes each


@dataclass(slots=True)
class Stats:
    experiments: int = 0           # own experiments started by this process
    verifications: int = 0         # verify entries published (one per paired round)
    parent_cache_hits: int = 0     # paired replays whose parent run came from the ParentRuns cache
    parent_cache_misses: int = 0   # paired replays that had to train the parent
    overheads_s: list[float] = field(default_factory=list)  # per experiment, outside the trainer
    last: list[str] = field(default_factory=list)           # short results, newest last

    def remember(self, text: str) -> None:
        self.last = (self.last + [text])[-3:]


@dataclass(frozen=True, slots=True)
class Live:
    """What a worker runs now, for the local API and the dashboard."""

    what: str
    expected_end_s: float   # on the research loop's clock
    started_s: float = 0.0  # the same clock


@dataclass(frozen=True, slots=True)
class ParentKey:
    """What fixes a parent run's result (bit for bit on a CPU): the program, the training seed, the
    hardware class, the step count and schedule horizon, and the validation rows scored."""

    commit: bytes
    seed: int
    platform_class: str
    steps: int
    horizon: int | None
    eval_seed: int | None


class ParentRuns:
    """The parent runs of paired replays, so several claims on one parent that draw the same seed
    (and rows) train the parent once. Bounded, least recently used first out; in memory only: a
    restart loses it and costs one parent run per key again, never a wrong number. Every finished
    run is kept, failures too (they repeat); a timeout is not: it says the machine was busy, not
    what the parent does."""

    def __init__(self, max_entries: int = MAX_PARENT_RUNS) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be positive, got {max_entries}")
        self.max_entries = max_entries
        self._runs: OrderedDict[ParentKey, RunResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, key: ParentKey) -> RunResult | None:
        found = self._runs.get(key)
        if found is not None:
            self._runs.move_to_end(key)
        return found

    def put(self, key: ParentKey, result: RunResult) -> None:
        if result.status == "timeout":
            return
        self._runs[key] = result
        self._runs.move_to_end(key)
        while len(self._runs) > self.max_entries:
            self._runs.popitem(last=False)


class Runs:
    def __init__(self, config: NodeConfig, repo: Repository, layout: Layout, data: DataInfo, display: Display,
                 scratch: Path, clock: Callable[[], float], harness_hash: str) -> None:
        self.config, self.repo, self.layout, self.data = config, repo, layout, data
        self.display, self.scratch, self.clock, self.harness_hash = display, scratch, clock, harness_hash
        self.running: dict[str, Live] = {}                      # worker -> what it runs now
        self._last_wall_s: dict[tuple[str, bool], float] = {}   # (worker, replay) -> seconds

    def expected_s(self, device: Device, steps: int | None) -> float:
        # the last run of the same kind on this worker is the best guess; a formula before the first
        known = self._last_wall_s.get((device.label, steps is not None))
        if known is not None:
            return known
        budget = self.config.budget_s(device.device)
        return budget + PROFILES[device.profile].startup_allowance_s / 6 + EVAL_ESTIMATE_S[device.profile]

    async def materialize(self, device: Device, commit: bytes, parent: bytes | None) -> tuple[Path, Path | None]:
        folder = self.scratch / device.label
        cand, base = folder / "candidate" / "train.py", folder / "parent" / "train.py"
        for path in (cand, base):
            path.parent.mkdir(parents=True, exist_ok=True)
        cand.write_bytes(await gitrepo.read_file(self.repo, commit, "train.py"))
        if parent is None:
            return cand, None
        base.write_bytes(await gitrepo.read_file(self.repo, parent, "train.py"))
        return cand, base

    async def run(self, device: Device, what: str, cand: Path, parent: Path | None, *, steps: int | None,
                  seed: int, horizon: int | None = None, budget_s: int | None = None,
                  eval_seed: int | None = None) -> RunResult:
        if steps is None and self.config.fixed_steps is not None:  # a timed run of a node that trains N steps
            steps = horizon = self.config.fixed_steps
        env: dict[str, str] = {}
        if device.index is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(device.index)
        request = RunRequest(train_py=cand, parent_py=parent, profile=device.profile,
                             budget_s=budget_s or self.config.budget_s(device.device), steps=steps, horizon=horizon,
                             seed=seed, data=self.data.path, scratch=self.scratch / device.label / "tmp", env=env,
                             home=self.layout.home, eval_seed=eval_seed)
        expected_s = self.expected_s(device, steps)
        async with machine_slot(self.config.machine_lock, self.config.machine_slots):
            self.display.start(device.label, what, expected_s)
            now = self.clock()
            self.running[device.label] = Live(what, now + expected_s, now)
            # owned here: cancelled and awaited before the run returns or raises
            progress = None if self.display.tty else asyncio.create_task(self._progress(device.label))
            try:
                result = await run_trainer(request, lambda line: self.display.trainer_line(device.label, line))
            finally:
                if progress is not None:
                    progress.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await progress
                self.display.stop(device.label)
                self.running.pop(device.label, None)
        self._last_wall_s[(device.label, steps is not None)] = result.wall_s
        changed = result.status == "rejected" and "harness changed" in result.reason  # the runner's own check
        if changed or (result.harness_hash and result.harness_hash != self.harness_hash):
            raise SetupError("the trainer's harness changed while the node ran; restart the node "
                             "(a new harness is a new swarm)")
        return result

    def progress_line(self, label: str) -> str | None:
        """`[cpu] baseline 1 of 3: 40%, about 95 s left`: what a worker runs now, for a log."""
        live = self.running.get(label)
        if live is None:
            return None
        shown = self.display.running.get(label)
        percent = f" {shown.percent}%," if shown is not None and shown.percent is not None else ""
        now = self.clock()
        if now <= live.expected_end_s:
            return f"[{label}] {live.what}:{percent} about {live.expected_end_s - now:.0f} s left"
        # past the guess (a busy machine, a slow evaluation): say so rather than "0 s left" each time
        return (f"[{label}] {live.what}:{percent} {now - live.started_s:.0f} s so far, "
                f"longer than the {live.expected_end_s - live.started_s:.0f} s expected")

    async def _progress(self, label: str) -> None:
        """Logs the run's progress now and every PROGRESS_EVERY_S until cancelled (no terminal: no
        status line, so without this a CPU baseline would print nothing for minutes)."""
        while True:
            if (line := self.progress_line(label)) is not None:
                self.display.event(line)
            await asyncio.sleep(PROGRESS_EVERY_S)

    async def store_bundle(self, commit: bytes, parent: bytes | None) -> bytes:
        data = await bundles.make_bundle(self.repo, commit, have=[] if parent is None else [parent])
        digest = bundles.bundle_hash(data)
        await keep_bundle(self.layout.bundles, digest, data)
        return digest


def claim_body(device: Device, commit: bytes, parent: bytes | None, result: RunResult, summary: str,
               message: str, bundle: bytes | None) -> Claim:
    """The Claim of one run, failures included, within the ledger's size limits."""
    curve = list(result.loss_curve)
    if len(curve) > MAX_LOSS_POINTS:
        every = -(-len(curve) // MAX_LOSS_POINTS)
        curve = curve[::every]
    note = message if result.status == "ok" else f"{message}: {result.reason}"
    return Claim(commit=commit, parent=parent, platform_class=device.platform_class, status=result.status,
                 val_bpb=result.val_bpb, num_steps=max(0, result.num_steps),
                 planned_steps=max(0, result.planned_steps), seed=result.seed,
                 training_s=max(0.0, result.training_s), wall_s=max(0.0, result.total_s or result.wall_s),
                 peak_vram_mb=max(0.0, result.peak_vram_mb), loss_curve=curve, diff_summary=summary,
                 message=note[:MAX_CLAIM_MESSAGE], bundle=bundle)


def replay_outputs(result: RunResult) -> bytes | None:
    """The commitment to the evaluation's outputs that a replay's Verify carries (Verify.outputs):
    the trainer's, for an ok run; a failed replay has none."""
    return result.outputs if result.status == "ok" else None


def result_text(result: RunResult) -> str:
    if result.val_bpb is not None:
        return f"val_bpb {result.val_bpb:.4f} in {result.num_steps} steps"
    return f"{result.status} ({result.reason[:120]})"


def short_value(result: RunResult) -> str:
    return f"{result.val_bpb:.4f}" if result.val_bpb is not None else result.status
