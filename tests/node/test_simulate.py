"""The swarm simulator's invariants: records carry agreeing quorums, zero noise makes no false
records, GPU time adds up, one GPU runs one job at a time, and the same seed gives the same swarm."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.research import verifier
from node.sim.simulate import CLASS, EditModel, Outcome, SimConfig, false_records, simulate

SMALL = SimConfig(nodes=10, hours=1.0, join_window_s=60.0)


def _check_invariants(outcome: Outcome) -> None:
    state, runs, f, c = outcome.state, outcome.runs, outcome.figures, outcome.config
    noise = c.spec_noise_bpb
    # every record: verified by a quorum of distinct trusted verifiers, none the claimant, who agree
    prev = None
    for row in state.records:
        quorum = verifier.quorum_of(state, row.claim)
        values = [state.verifies[q].value for q in quorum]
        assert len(quorum) >= c.quorum and all(v is not None for v in values)
        assert row.claim in state.verified and state.verified[row.claim] == row.value
        assert row.prev == prev and (prev is None or row.value < prev - noise)
        # the deciding replays were each within noise of one median (ledger/facts.py decide)
        assert max(values) - min(values) <= 2 * noise + 1e-12  # type: ignore[type-var, operator]
        prev = row.value
    # accounting: every run is one entry, GPU seconds add up, the share is their ratio
    own = [r for r in runs if r.kind != "verify"]
    replays = [r for r in runs if r.kind == "verify"]
    assert f.experiments == len(own) == len(state.claims)
    assert f.verifications == len(replays) == len(state.verifies)
    assert f.own_gpu_s == pytest.approx(sum(r.end_s - r.start_s for r in own))
    assert f.verify_gpu_s == pytest.approx(sum(r.end_s - r.start_s for r in replays))
    total = f.own_gpu_s + f.verify_gpu_s
    assert f.verification_share == pytest.approx(f.verify_gpu_s / total) and 0 <= f.verification_share <= 1
    assert total <= c.nodes * c.hours * 3600  # one GPU per node, inside the simulated time
    by_node: dict[int, list[tuple[float, float]]] = {}
    for r in runs:
        assert 0 <= r.start_s < r.end_s <= c.hours * 3600
        by_node.setdefault(r.node, []).append((r.start_s, r.end_s))
    for spans in by_node.values():
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    # replays only of successful claims; the mints the verifiers built are all valid
    assert all(outcome.truth[r.claim] is not None for r in replays if r.claim is not None)
    assert f.refused_mints == 0 and all(reason == "" for reason in state.verdicts.values())
    assert f.false_records == len(false_records(state, outcome.truth))


def test_small_swarm_meets_sane_bounds() -> None:
    outcome = simulate(SMALL, random.Random(7))
    _check_invariants(outcome)
    f = outcome.figures
    assert 60 <= f.experiments + f.verifications <= 10 * 3600 / (300 + 60) * 1.1  # the GPUs were busy
    assert f.baselines >= 1 and f.records >= 1 and f.verifications >= SMALL.quorum
    assert f.verification_share < 0.5
    assert f.mints >= f.verifications  # a fee for each replay, plus record mints


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nodes=st.integers(1, 12), quorum=st.integers(1, 3),
       noise=st.sampled_from([0.0, 0.0015, 0.003]))
def test_invariants_hold_for_any_small_swarm(seed: int, nodes: int, quorum: int, noise: float) -> None:
    config = SimConfig(nodes=nodes, hours=1.5, quorum=min(quorum, nodes), noise_sd_bpb=noise, join_window_s=120.0)
    _check_invariants(simulate(config, random.Random(seed)))


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_without_noise_no_record_is_false(seed: int) -> None:
    # easy gains, so that records happen within a short run
    edits = EditModel(better_p=0.3, gain_mean_bpb=0.01)
    outcome = simulate(SimConfig(nodes=12, hours=3.0, noise_sd_bpb=0.0, edits=edits), random.Random(seed))
    _check_invariants(outcome)
    assert outcome.figures.records >= 2 and outcome.figures.false_records == 0


def test_same_seed_same_swarm() -> None:
    a, b = simulate(SMALL, random.Random(3)), simulate(SMALL, random.Random(3))
    assert a.figures == b.figures and a.state.records == b.state.records
    assert simulate(SMALL, random.Random(4)).figures != a.figures


def test_solo_swarm_verifies_its_own_claims() -> None:
    outcome = simulate(SimConfig(nodes=1, hours=2.0, quorum=1, join_window_s=0.0), random.Random(1))
    _check_invariants(outcome)
    # as research.py: a node vouches for its own research key only while no other verifier can
    assert outcome.figures.verifications >= 1 and outcome.figures.records >= 1


def test_edit_model_draws() -> None:
    rng = random.Random(0)
    model = EditModel()
    draws = [model.draw(1.0, 0.0, rng) for _ in range(4000)]
    crashes = sum(d is None for d in draws) / len(draws)
    better = sum(d is not None and d < 1.0 - 0.001 for d in draws) / len(draws)
    assert 0.03 < crashes < 0.07 and 0.05 < better < 0.15
    assert all(d is None or d > 0 for d in draws)
    late = [model.draw(0.9, 0.1, rng) for _ in range(4000)]  # after much progress, gains are small
    assert min(d for d in late if d is not None) > min(d for d in draws if d is not None) - 0.1
    with pytest.raises(ValueError):
        EditModel(crash_p=0.6, neutral_p=0.6)
    with pytest.raises(ValueError):
        SimConfig(nodes=2, quorum=3)


def test_config_names_its_class() -> None:
    assert simulate(SimConfig(nodes=3, hours=0.5), random.Random(0)).state.spec.platform_classes == [CLASS]
