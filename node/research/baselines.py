"""Baseline and calibration runs: the genesis train.py, run as it is and claimed, once with the
node's own data seed (the class's baseline) and, on the swarm creator's node, with the
calibration seeds that measure the class's run-to-run noise.

A baseline killed at its wall-clock limit is not claimed but tried again (a busy machine says
nothing about the genesis train.py), up to BASELINE_TRIES; a baseline that fails otherwise, or
every try, stops the node with a SetupError saying the genesis train.py does not run here. The
research loop (node/research/loop.py) chooses when; this module only runs and reports.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from ledger.bodies import Claim
from ledger.spec import SignedSpec

from node.config import NodeConfig
from node.display import Display
from node.errors import SetupError
from node.platform import Device
from node.research import work
from node.research.history import ClaimRecord, History
from node.research.noise import calibration_report
from node.research.program import summarize
from node.research.runs import Runs, Stats, claim_body, result_text, short_value

BASELINE_TRIES = 3           # baselines killed at their wall-clock limit before the node says the machine is too slow


class Baselines:
    def __init__(self, config: NodeConfig, spec: SignedSpec, history: History, runs: Runs, stats: Stats,
                 display: Display, researcher: bytes, publish_claim: Callable[[Claim], Awaitable[ClaimRecord]]) -> None:
        self.config, self.spec, self.history, self.runs, self.stats = config, spec, history, runs, stats
        self.display, self.researcher, self.publish_claim = display, researcher, publish_claim
        self.running: set[str] = set()          # classes whose baseline or calibration run is running here
        self._timeouts: dict[str, int] = {}     # class -> our baselines killed at their wall-clock limit
        self._reported: set[str] = set()        # classes whose calibration report was shown

    async def run(self, device: Device, seed: int) -> None:
        cls, baseline = device.platform_class, self.spec.spec.baseline_commit
        calibration = seed != self.config.seed
        what = f"calibration (data seed {seed})" if calibration else "baseline"
        self.running.add(cls)
        try:
            cand, _ = await self.runs.materialize(device, baseline, None)
            source = cand.read_text()
            result = await self.runs.run(device, self.phase(cls, what), cand, None, steps=None, seed=seed)
            if result.status == "timeout" and not calibration and self._slow(device, result.reason):
                return  # a busy moment says nothing about the genesis train.py: no claim, tried again
            bundle = await self.runs.store_bundle(baseline, None) if result.status == "ok" else None
            message = f"calibration: the genesis train.py, data seed {seed}" if calibration \
                else "baseline: the genesis train.py"
            record = await self.publish_claim(claim_body(device, baseline, None, result, summarize(None, source),
                                                         message, bundle))
        finally:
            self.running.discard(cls)
        self.display.event(f"[{device.label}] {what} {result_text(result)} claim {record.id.hex()[:12]}")
        self.stats.remember(f"base {short_value(result)}")
        if result.status != "ok" and not calibration:
            slow = " (every try; the machine may be too busy or too slow for this budget)" \
                if result.status == "timeout" else ""
            raise SetupError(f"the genesis train.py does not run here{slow}: {result.status}: {result.reason[:300]}")
        # after the baseline too: on a busy machine a baseline killed at its limit is run again after
        # the calibration runs, and its claim is then the one that completes them
        self._report_noise(cls)

    def _slow(self, device: Device, reason: str) -> bool:
        """Whether a baseline killed at its wall-clock limit is tried again: a machine busy with other
        work (another trainer, a test suite) can make startup alone outlast the allowance, and that
        is no reason to stop the node. After BASELINE_TRIES such kills it is (SetupError follows)."""
        cls = device.platform_class
        tries = self._timeouts[cls] = self._timeouts.get(cls, 0) + 1
        if tries >= BASELINE_TRIES:
            return False
        self.display.event(f"[{device.label}] baseline {tries} of {BASELINE_TRIES} too slow ({reason[:120]}): "
                           "is the machine busy? not claimed, trying again")
        return True

    def phase(self, platform_class: str, what: str) -> str:
        """The progress line's name for a run: 'baseline 2 of 3: calibration (data seed 1)'."""
        done = self.history.baseline_runs(platform_class, self.spec.spec.baseline_commit, self.researcher)
        creator = self.spec.spec.creator == self.researcher
        return work.phase(what, len(done), self.config.calibration_runs if creator else 0)

    def _report_noise(self, platform_class: str) -> None:
        """One line once the calibration runs are complete (node/research/noise.py calibration_report)."""
        runs = self.history.baseline_runs(platform_class, self.spec.spec.baseline_commit, self.researcher)
        if platform_class in self._reported:
            return
        text = calibration_report(platform_class, [v for r in runs if (v := r.body.val_bpb) is not None],
                                  self.spec.spec.noise_bpb[platform_class],
                                  complete=len(runs) > self.config.calibration_runs)
        if text is not None:
            self._reported.add(platform_class)
            self.display.event(text)
