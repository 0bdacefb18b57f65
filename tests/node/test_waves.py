"""Waves: the factorial plan over real train.py sources, the winner pick, the queue, and the
simulated node that compares waves and two-tier screening (deterministic by seed)."""
from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import fold
from node.errors import NoProposal
from node.research.history import History
from node.home import genesis_source
from node.platform import Device
from node.research.program import normalized_key, parse_program
from node.research.proposing import Proposing
from node.research.proposers import Chosen
from node.research.proposer import Settings, Trial
from node.sim.simulate import CLASS
from node.sim.simwork import SIM_TRAIN_PY, Tier, WorkConfig, cheap_tier, simulate_work
from tests.ledger.factory import identity, make_spec
from node.research.waves import Wave, WaveQueue, WaveSettings, ladder, pick_winner, plan_wave

GENESIS = genesis_source().decode()
FROZEN = WaveSettings(proposer=Settings(frozen=frozenset({"UNTIMED_STEPS", "PLAN_AFTER_STEPS"})))
SMALL = "A = 0.1\nB = 8\nC = 1.0\n"


def _values(source: str) -> dict[str, object]:
    return {c.name: c.value for c in parse_program(source).constants}


def _check_wave(parent: str, wave: Wave, n: int, tried: set[str]) -> None:
    keys = [p.key for p in wave.proposals]
    assert len(keys) == n == len(set(keys)), "n distinct proposals"
    assert not set(keys) & tried and normalized_key(parent) not in keys
    for p in wave.proposals:
        assert normalized_key(p.source) == p.key
        got, base = _values(p.source), _values(parent)
        assert {k for k in got if got[k] != base[k]} == set(p.changes)
    # the grid moves only the screened constants, each to one of its levels
    for p in wave.grid:
        assert set(p.changes) <= set(wave.constants)
        for name, (old, new) in p.changes.items():
            i = wave.constants.index(name)
            assert old == wave.parent_values[i] and new in wave.levels[i]


def test_eight_workers_get_a_three_by_three_grid_without_the_parent() -> None:
    wave = plan_wave(GENESIS, profile="gpu", trials=[], tried=set(), n=8, rng=random.Random(3), settings=FROZEN)
    _check_wave(GENESIS, wave, 8, set())
    assert len(wave.constants) == 2 and [len(lv) for lv in wave.levels] == [3, 3] and not wave.fill
    cells = {tuple(p.changes.get(n, (v, v))[1] for n, v in zip(wave.constants, wave.parent_values)) for p in wave.grid}
    assert cells == set(itertools.product(*wave.levels)) - {wave.parent_values}


def test_four_workers_get_a_two_by_two_and_one_ordinary_proposal() -> None:
    wave = plan_wave(GENESIS, profile="gpu", trials=[], tried=set(), n=4, rng=random.Random(5), settings=FROZEN)
    _check_wave(GENESIS, wave, 4, set())
    assert [len(lv) for lv in wave.levels] == [2, 2] and len(wave.grid) == 3 and len(wave.fill) == 1


def test_tried_points_are_skipped_and_the_wave_moves_on() -> None:
    first = plan_wave(SMALL, profile="gpu", trials=[], tried=set(), n=8, rng=random.Random(1))
    tried = {p.key for p in first.proposals}
    second = plan_wave(SMALL, profile="gpu", trials=[], tried=tried, n=8, rng=random.Random(1))
    _check_wave(SMALL, second, 8, tried)


def test_promising_constants_are_screened() -> None:
    # B won every time it moved, the others always lost: B is in the grid far more often than not
    trials = [Trial({"B": (8, 16)}, -0.01)] * 20 + [Trial({"A": (0.1, 0.2)}, 0.01), Trial({"C": (1.0, 2.0)}, 0.01)] * 20
    picked = sum("B" in plan_wave(SMALL, profile="gpu", trials=trials, tried=set(), n=3,
                                  rng=random.Random(s)).constants for s in range(40))
    assert picked >= 36


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 16), seed=st.integers(0, 10**6), tried_seed=st.integers(0, 10**6))
def test_any_wave_is_n_distinct_untried_proposals(n: int, seed: int, tried_seed: int) -> None:
    earlier = plan_wave(SIM_TRAIN_PY, profile="gpu", trials=[], tried=set(), n=8, rng=random.Random(tried_seed))
    tried = {p.key for p in earlier.proposals[: tried_seed % 9]}
    wave = plan_wave(SIM_TRAIN_PY, profile="gpu", trials=[], tried=tried, n=n, rng=random.Random(seed))
    _check_wave(SIM_TRAIN_PY, wave, n, tried)


def test_no_wave_when_nothing_is_left() -> None:
    with pytest.raises(NoProposal):
        plan_wave("FLAG = True\n", profile="gpu", trials=[], tried={normalized_key("FLAG = False\n")}, n=4,
                  rng=random.Random(0))
    with pytest.raises(ValueError):
        plan_wave(SMALL, profile="gpu", trials=[], tried=set(), n=0, rng=random.Random(0))


def test_ladder_alternates_and_stops_where_moves_run_out() -> None:
    assert ladder("LR", 0.1, 4, 1, 2.0) == [0.2, 0.05, 0.4, 0.025]
    assert ladder("N", 8, 2, -1, 1.5) == [4, 16]
    assert ladder("FLAG", True, 3, 1, 1.5) == [False]
    assert ladder("X_RATIO", 0.0, 3, -1, 2.0) == [0.1, 0.2, 0.4]   # zero moves only up


def test_pick_winner_reads_main_effects_of_a_two_by_two() -> None:
    wave = plan_wave(SMALL, profile="gpu", trials=[], tried=set(), n=3, rng=random.Random(2))
    assert len(wave.grid) == 3 and len(wave.constants) == 2
    a, b = wave.constants
    (a0, a1), (b0, b1) = wave.levels
    by_cell = {tuple(p.changes.get(n, (v, v))[1] for n, v in zip(wave.constants, wave.parent_values)): p.key
               for p in wave.grid}
    # moving a helps on average, moving b hurts on average though (a0, b1) alone beat the parent
    results = {by_cell[(a1, b0)]: 0.980, by_cell[(a1, b1)]: 1.004, by_cell[(a0, b1)]: 0.989}
    outcome = pick_winner(wave, results, parent_bpb=1.0)
    assert outcome.carry == {a: a1} and outcome.measured == 3
    assert outcome.effects[a] == {a0: pytest.approx(0.9945), a1: pytest.approx(0.992)}
    assert outcome.effects[b] == {b0: pytest.approx(0.990), b1: pytest.approx(0.9965)}
    assert outcome.best is not None and outcome.best.key == by_cell[(a1, b0)] and outcome.best_bpb == 0.980
    # a crash counts as the worst result at its levels; nothing measured: nothing carried
    crashed = pick_winner(wave, {by_cell[(a1, b0)]: None, by_cell[(a0, b1)]: 0.995}, parent_bpb=1.0)
    assert crashed.carry == {b: b1} and crashed.best_bpb == 0.995
    assert pick_winner(wave, {}, parent_bpb=1.0).carry == {}


def test_queue_hands_out_each_proposal_once_and_drops_a_stale_wave() -> None:
    wave = plan_wave(SMALL, profile="gpu", trials=[], tried=set(), n=4, rng=random.Random(0))
    queue = WaveQueue()
    assert queue.take(wave.parent_key, set()) is None
    queue.load(wave)
    first = queue.take(wave.parent_key, set())
    assert first == wave.proposals[0]
    # another worker ran the second meanwhile
    assert queue.take(wave.parent_key, {wave.proposals[1].key}) == wave.proposals[2]
    assert queue.take("k1-another-parent", set()) is None and not queue.pending and queue.waves == 1


SIM = WorkConfig(tiers=(Tier(CLASS, 4),), hours=1.5, join_window_s=10.0)


@pytest.mark.parametrize("config", [SIM, WorkConfig(tiers=SIM.tiers, hours=1.5, policy="wave"),
                                    WorkConfig(tiers=(Tier(CLASS, 3), cheap_tier(3)), hours=1.5, two_tier=True)])
def test_the_simulated_node_is_deterministic_by_seed(config: WorkConfig) -> None:
    first, f1 = simulate_work(config, random.Random(11))
    again, f2 = simulate_work(config, random.Random(11))
    other, _ = simulate_work(config, random.Random(12))
    assert f1 == f2 and list(first.state.claims) == list(again.state.claims)
    assert list(first.state.claims) != list(other.state.claims)
    assert f1.experiments > 0 and f1.records >= 1 and f1.best_true_bpb <= f1.best_true_bpb + f1.progress_bpb
    assert first.figures.refused_mints == 0
    if config.policy == "wave":
        assert f1.waves >= 1
    if config.two_tier:
        classes = {info.platform_class for info in first.state.claims.values()}
        assert classes == {CLASS, cheap_tier(1).platform_class}


def _proposing(waves: bool, workers: int) -> Proposing:
    """The research loop's Proposing, with a real History and an empty ledger view."""
    config = SimpleNamespace(waves=waves, screening_classes=(), reference_class="", frozen_constants=FROZEN.proposer.frozen)
    state = fold.initial(make_spec(identity(1), [identity(2)]).spec)

    async def publish(body: object) -> None:
        raise AssertionError("nothing is published here")

    proposing = Proposing(config, SimpleNamespace(state=state), None, History(), identity(1).public_key,  # type: ignore[arg-type]
                          random.Random(7), lambda: 0, publish)  # type: ignore[arg-type]
    proposing.workers_of[CLASS] = workers
    return proposing


def test_the_research_loop_takes_wave_points_one_per_worker_when_waves_are_on() -> None:
    device = Device(index=None, name="cpu", memory_mb=0, driver="", platform_class=CLASS)
    node = _proposing(waves=True, workers=4)
    chosen = Chosen("bandit", GENESIS, b"g" * 20, 7, FROZEN.proposer)
    picked = [node.propose(device, GENESIS, chosen) for _ in range(4)]
    wave = node.waves[CLASS].wave
    assert wave is not None and [p.key for p in picked] == [p.key for p in wave.proposals]
    node.propose(device, GENESIS, chosen)
    assert node.waves[CLASS].waves == 2  # the first wave used up: the next is planned
    off = _proposing(waves=False, workers=4)
    assert off.propose(device, GENESIS, chosen).key and not off.waves
    one = _proposing(waves=True, workers=1)
    assert one.propose(device, GENESIS, chosen).key and not one.waves
