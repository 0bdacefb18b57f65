"""The choice of work (node/research/work.py): its rules as properties, and one function for the
research loop's workers and the simulator alike."""
from __future__ import annotations

import dataclasses
import io
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.bodies import Claim, Seal
from swarm.gitrepo import Repository
from node.config import load_config
from node.display import Display
from node.home import DataInfo, Layout
from node.platform import Device
from node.research import replay, verifier, work
from node.research.history import ClaimRecord
from node.research.loop import Research
from node.research.runs import Live
from node.research.work import Baseline, Experiment, Idle, PaidJob, RunSubmission, Situation, Stop, Verify
from node.sim.simulate import SimConfig, simulate
from tests.node.hubkit import CLASS, KitBackend, backend

DEVICE = Device(None, "cpu", 0, "", CLASS)


def _record(n: int) -> ClaimRecord:
    body = Claim(commit=bytes([n]) * 20, parent=b"\x00" * 20, platform_class=CLASS, status="ok", val_bpb=1.0,
                 num_steps=1, planned_steps=1, seed=0, training_s=1.0, wall_s=1.0, peak_vram_mb=0.0, loss_curve=[],
                 diff_summary="", message="", bundle=None)
    return ClaimRecord(bytes([n]) * 32, b"a" * 32, n, n, body)


situations = st.builds(
    Situation, baseline_done=st.booleans(), baseline_running=st.booleans(),
    calibration_seed=st.none() | st.integers(1, 5), own_experiments=st.integers(0, 3),
    paid_jobs=st.integers(0, 2), verify=st.lists(st.integers(0, 9).map(_record), max_size=3),
    submissions=st.integers(0, 2), done=st.booleans(), dry=st.booleans(), busy=st.booleans(),
    unsealed=st.integers(0, 2), experiments=st.booleans())


@given(situations)
def test_a_worker_never_stops_while_a_claim_waits_for_our_own_seal(s: Situation) -> None:
    if work.choose_work(s) == Stop():
        assert not s.unsealed and not s.busy and s.done


@given(situations)
def test_the_baseline_comes_first_and_only_once_per_class(s: Situation) -> None:
    decision = work.choose_work(s)
    if not s.baseline_done and not s.baseline_running:
        assert decision == Baseline()
    else:
        assert decision != Baseline()


@given(situations)
def test_paid_work_then_verification_then_submissions_come_before_our_own(s: Situation) -> None:
    decision = work.choose_work(s)
    if isinstance(decision, Baseline | Stop):
        return
    if s.paid_jobs:
        assert isinstance(decision, PaidJob | Baseline)
    elif s.verify and not isinstance(decision, Baseline):
        assert decision == Verify(s.verify[0])   # the most promising claim, as the queue ranked it
    elif s.submissions and not isinstance(decision, Baseline):
        assert decision == RunSubmission()


@given(situations)
def test_a_worker_stops_only_when_done_and_alone_and_never_experiments_past_the_limit(s: Situation) -> None:
    decision = work.choose_work(s)
    if isinstance(decision, Stop):
        assert s.done and not s.busy and not s.verify and not s.paid_jobs and not s.submissions
        assert s.calibration_seed is None or s.baseline_running   # owed calibration runs before stopping
    if s.done:
        assert not isinstance(decision, Experiment)
    if isinstance(decision, Idle):
        assert not s.paid_jobs and not s.verify and not s.submissions


@given(situations)
def test_calibration_runs_with_the_owed_seed_and_never_beside_a_baseline(s: Situation) -> None:
    decision = work.choose_work(s)
    if isinstance(decision, Baseline) and decision.seed is not None:
        assert decision.seed == s.calibration_seed and s.baseline_done and not s.baseline_running


@given(situations)
def test_calibration_waits_for_our_first_experiment_unless_there_is_nothing_else_to_do(s: Situation) -> None:
    """Issue 18: a solo CPU node's first quarter hour goes to research, not to measuring noise."""
    decision = work.choose_work(s)
    if isinstance(decision, Baseline) and decision.seed is not None:
        assert s.own_experiments >= work.CALIBRATE_AFTER or s.done or s.dry or not s.experiments
    if isinstance(decision, Experiment):
        assert s.calibration_seed is None or s.own_experiments < work.CALIBRATE_AFTER or s.baseline_running


def test_a_solo_creators_first_hour_in_order() -> None:
    """Baseline, its verification, our first experiment, then the two calibration runs."""
    base = Situation(baseline_done=False, calibration_seed=None)
    assert work.choose_work(base) == Baseline()
    after = Situation(baseline_done=True, calibration_seed=1, verify=[_record(1)])
    assert work.choose_work(after) == Verify(_record(1))
    assert work.choose_work(Situation(baseline_done=True, calibration_seed=1)) == Experiment()
    assert work.choose_work(Situation(baseline_done=True, calibration_seed=1, own_experiments=1)) == Baseline(1)
    assert work.choose_work(Situation(baseline_done=True, calibration_seed=2, own_experiments=1)) == Baseline(2)
    assert work.choose_work(Situation(baseline_done=True, own_experiments=1)) == Experiment()
    assert work.choose_work(Situation(baseline_done=True, calibration_seed=1, dry=True)) == Baseline(1)
    assert work.choose_work(Situation(baseline_done=True, dry=True)) == Idle()


@given(situations)
def test_without_experiments_of_its_own_a_node_does_all_the_rest_as_before(s: Situation) -> None:
    """[research] experiments = false: never an experiment of our proposer; whatever else the node
    would do it still does (owed calibration comes at once, as when the proposer runs dry)."""
    on, off = dataclasses.replace(s, experiments=True), dataclasses.replace(s, experiments=False)
    decided = work.choose_work(off)
    assert decided != Experiment()
    if work.choose_work(on) != Experiment():
        assert decided == work.choose_work(on)
    else:
        owed = s.calibration_seed is not None and not s.baseline_running
        assert decided == (Baseline(s.calibration_seed) if owed else Idle())


class Spy:
    """Records every Situation choose_work is asked about, and answers as the real one would."""

    def __init__(self, answer: work.Decision | None = None) -> None:
        self.seen: list[Situation] = []
        self.answer = answer
        self.real = work.choose_work

    def __call__(self, s: Situation) -> work.Decision:
        self.seen.append(s)
        return self.answer if self.answer is not None else self.real(s)


def test_the_simulator_chooses_with_the_research_loops_function(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy()
    monkeypatch.setattr(work, "choose_work", spy)
    outcome = simulate(SimConfig(nodes=3, hours=1.0, quorum=2, join_window_s=10.0), random.Random(1))
    assert len(spy.seen) >= len(outcome.runs) > 0   # one choice per job started; the last ones run past the end
    assert any(not s.baseline_done for s in spy.seen) and any(s.verify for s in spy.seen)


async def _seal(kit: KitBackend) -> None:
    """What the node's seal loop does (node/wiring.py): the kit's verifier key is the spec's anchor."""
    claims = verifier.sealable(kit.ledger.state, kit.verifier.public_key)
    if claims:
        await kit.ledger.publish(kit.verifier, Seal(claims=claims), time_ms=kit.clock_ms)


def _research(kit: KitBackend, tmp_path: Path, clock: Callable[[], float] = time.time,
              repo: Repository | None = None, out: io.StringIO | None = None) -> Research:
    config = load_config(["--home", str(tmp_path / "home"), "--profile", "cpu"], {})
    return Research(config, kit.ledger, repo or kit.repo, Layout(tmp_path / "home"),
                    DataInfo(tmp_path / "data", b"m" * 32, b"t" * 32), kit.me, kit.verifier,
                    Display(out or io.StringIO(), tty=False), tmp_path / "scratch", random.Random(1), clock)


async def test_a_worker_chooses_with_the_same_function(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spy = Spy(answer=Stop())
    monkeypatch.setattr(work, "choose_work", spy)
    async with backend(tmp_path) as kit:
        research = _research(kit, tmp_path)
        await _seal(kit)
        await research.run_worker(DEVICE)   # Stop: returns after one choice
    (seen,) = spy.seen
    # the kit's ledger holds our baseline claim, and our verifier key is the swarm's trusted one
    assert seen.baseline_done and not seen.baseline_running and seen.calibration_seed == 1
    assert [r.body.commit for r in seen.verify] == [kit.baseline]


async def test_the_injected_clock_decides_when_a_slow_replay_is_tried_again(tmp_path: Path) -> None:
    now = [1000.0]
    async with backend(tmp_path) as kit:
        research = _research(kit, tmp_path, clock=lambda: now[0])
        await research.history.sync(kit.ledger)
        # unsealed, the baseline has no verifiers yet; the node itself seals it within seconds
        before = research.situation(DEVICE)
        assert (before.verify == []) == (before.unsealed == 1)
        await _seal(kit)
        assert research.situation(DEVICE).unsealed == 0
        (claim,) = [r.id for r in research.situation(DEVICE).verify]
        research.replays.inconclusive[claim] = (1, 1500.0)   # too slow once: again after 1500 s on the clock
        assert research.situation(DEVICE).verify == []
        now[0] = 1501.0
        assert [r.id for r in research.situation(DEVICE).verify] == [claim]


async def test_a_claim_whose_commit_no_peer_served_is_asked_for_again_later(tmp_path: Path) -> None:
    """The author's bundle gate serves a claim's commit only once the author holds its seal, which
    may reach a verifier first: a demo run's verifier skipped the agent's claim and never came back
    to it. Now it asks again after MISSING_RETRY_S, then twice as long each time."""
    now = [1000.0]
    async with backend(tmp_path) as kit, Repository.open(tmp_path / "empty") as empty:
        out = io.StringIO()
        research = _research(kit, tmp_path, clock=lambda: now[0], repo=empty, out=out)   # the commit is not here
        await research.history.sync(kit.ledger)
        await _seal(kit)
        (record,) = research.situation(DEVICE).verify
        await research.replays.verify(DEVICE, kit.verifier, record)     # no peer to fetch it from
        assert research.situation(DEVICE).verify == []
        now[0] += replay.MISSING_RETRY_S
        (again,) = research.situation(DEVICE).verify
        await research.replays.verify(DEVICE, kit.verifier, again)
        now[0] += replay.MISSING_RETRY_S
        assert research.situation(DEVICE).verify == []                  # the second wait is twice as long
        now[0] += replay.MISSING_RETRY_S
        assert [r.id for r in research.situation(DEVICE).verify] == [record.id]
        text = out.getvalue()
        assert "no peer served its bundle (asked again in 15 s)" in text and "(asked again in 30 s)" in text


async def test_a_running_phase_reads_as_a_progress_line_with_time_left(tmp_path: Path) -> None:
    now = [1000.0]
    async with backend(tmp_path) as kit:
        research = _research(kit, tmp_path, clock=lambda: now[0])
        await research.history.sync(kit.ledger)
        assert research.baselines.phase(CLASS, "calibration (data seed 1)") == "baseline 2 of 3: calibration (data seed 1)"
        research.runs.running["cpu"] = Live("baseline 2 of 3", 1190.0, 1000.0)
        research.display.start("cpu", "baseline 2 of 3", 190.0)
        assert research.runs.progress_line("cpu") == "[cpu] baseline 2 of 3: about 190 s left"
        research.display.trainer_line("cpu", "step 12 (40%) loss 3.1")
        now[0] = 1100.0
        assert research.runs.progress_line("cpu") == "[cpu] baseline 2 of 3: 40%, about 90 s left"
        now[0] = 1300.0
        assert research.runs.progress_line("cpu") == "[cpu] baseline 2 of 3: 40%, 300 s so far, longer than the 190 s expected"
        assert research.runs.progress_line("gpu0") is None
