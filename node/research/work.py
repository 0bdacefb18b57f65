"""The choice of work: what one worker does next, as a pure function of what it knows now.

Used by the research loop's workers (node/research/loop.py) and by the simulators (node/sim/), so
the order a simulation measures is the order a node runs. No IO, no clock, no asyncio: the
caller takes a snapshot (`Situation`) and acts on the returned decision.

The order, first match wins:
  1. the baseline, while the class has no successful claim of the genesis commit and no other
     worker of this node is running it: nothing else has a parent or a bar to beat before it;
  2. a paid job: a payment is held for it and its payer waits;
  3. a verification: the first claim of the verification queue (node/research/verifier.py);
  4. a submission: an agent's or a person's commit, in the order they came;
  5. the creator's calibration runs (the genesis program with other data seeds), once this node
     has claimed CALIBRATE_AFTER experiments of its own in the class. Calibration only measures the
     noise for a line of advice, and on a CPU each run takes minutes: a new user should see the
     node's own research first (issue 18);
  6. stop, when max_experiments is reached, no calibration is owed, no other worker of this
     node is busy (idle while one is: it may publish a claim to verify) and no claim of the class
     waits for this node's seal (idle while one does: its replay may fall to us once sealed);
  7. an experiment of our own; when the proposer ran dry, owed calibration instead, else idle.
     A node with `[research] experiments = false` runs none: owed calibration at once, else idle.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.research.history import ClaimRecord, History

CALIBRATE_AFTER = 1   # own experiments claimed in the class before the creator's calibration runs

@dataclass(frozen=True, slots=True)
class Situation:
    """One worker's view when it looks for work: a snapshot, nothing in it changes while it decides."""

    baseline_done: bool                    # the class has a successful claim of the genesis commit
    baseline_running: bool = False         # another worker of this node runs the class's baseline now
    calibration_seed: int | None = None    # the data seed of a calibration run we owe; None: none owed
    own_experiments: int = 0               # our experiments claimed in the class (the ledger's count)
    paid_jobs: int = 0                     # market work waiting for a worker of this node
    verify: Sequence[ClaimRecord] = ()     # the verification queue, most promising first
    submissions: int = 0                   # submitted commits waiting
    done: bool = False                     # max_experiments reached
    dry: bool = False                      # the last try at an experiment found nothing to propose
    busy: bool = False                     # another worker of this node is verifying or experimenting
    unsealed: int = 0                      # claims of the class this node will seal within seconds
    experiments: bool = True               # [research] experiments: false, none of our proposer's


@dataclass(frozen=True, slots=True)
class Baseline:
    seed: int | None = None   # None: the configured seed (the baseline); else a calibration run's


@dataclass(frozen=True, slots=True)
class PaidJob:
    pass


@dataclass(frozen=True, slots=True)
class Verify:
    claim: ClaimRecord


@dataclass(frozen=True, slots=True)
class RunSubmission:
    pass


@dataclass(frozen=True, slots=True)
class Experiment:
    pass


@dataclass(frozen=True, slots=True)
class Idle:
    pass


@dataclass(frozen=True, slots=True)
class Stop:
    pass


Decision = Baseline | PaidJob | Verify | RunSubmission | Experiment | Idle | Stop


def choose_work(s: Situation) -> Decision:
    """The worker's next work (the module docstring gives the order and why)."""
    if not s.baseline_done and not s.baseline_running:
        return Baseline()
    if s.paid_jobs > 0:
        return PaidJob()
    if s.verify:
        return Verify(s.verify[0])
    if s.submissions > 0:
        return RunSubmission()
    calibrate = s.calibration_seed is not None and not s.baseline_running
    if calibrate and (s.own_experiments >= CALIBRATE_AFTER or s.done or s.dry or not s.experiments):
        return Baseline(s.calibration_seed)
    if s.done:
        return Idle() if s.busy or s.unsealed else Stop()
    return Experiment() if s.experiments and not s.dry else Idle()


def calibration_seed(history: History, platform_class: str, baseline: bytes, me: bytes, *, creator: bool,
                     seed: int, runs: int) -> int | None:
    """The data seed of the next calibration run this node owes in the class: only the swarm's
    creator calibrates, `runs` times after its baseline, seeds seed+1, seed+2, ...; None: none owed."""
    if not creator:
        return None
    done = history.baseline_runs(platform_class, baseline, me)
    if not done or len(done) > runs:
        return None
    return seed + len(done)



def own_experiments(history: History, platform_class: str, me: bytes) -> int:
    """Our claims in the class of programs other than the genesis one (failures count: they ran)."""
    return sum(1 for r in history.of_class(platform_class) if r.author == me and r.body.parent is not None)


def phase(what: str, done_runs: int, calibration_runs: int) -> str:
    """`baseline 2 of 3: calibration (data seed 1)`: where a run of the genesis program stands
    among the creator's 1 + calibration_runs of them (`what` alone for a node that joined)."""
    if not calibration_runs:
        return what
    return f"baseline {done_runs + 1} of {calibration_runs + 1}" + ("" if what == "baseline" else f": {what}")
