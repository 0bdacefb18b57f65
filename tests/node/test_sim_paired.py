"""The simulator's replays run as the verifier does (node/sim/paired.py, issue 13)."""
from __future__ import annotations

import random

import pytest

from ledger import evidence
from node.sim import paired, simulate


def test_a_run_on_one_seed_repeats_its_training_draw_and_shares_rho_of_it_with_other_programs() -> None:
    salt, a, b = b"s" * 16, b"a" * 20, b"b" * 20
    rng = random.Random(0)
    one = paired.measure(1.0, salt, a, 7, sd_train=0.003, sd_eval=0.0, rho=0.5, rng=rng)
    assert paired.measure(1.0, salt, a, 7, sd_train=0.003, sd_eval=0.0, rho=0.5, rng=rng) == one
    assert paired.measure(1.0, salt, a, 8, sd_train=0.003, sd_eval=0.0, rho=0.5, rng=rng) != one
    # with rho 1 two programs on one seed differ by nothing but their true values
    x = paired.measure(1.0, salt, a, 7, sd_train=0.003, sd_eval=0.0, rho=1.0, rng=rng)
    y = paired.measure(0.99, salt, b, 7, sd_train=0.003, sd_eval=0.0, rho=1.0, rng=rng)
    assert x - y == pytest.approx(0.01)


def test_todays_replays_reproduce_the_claimants_number_and_paired_ones_do_not() -> None:
    config = simulate.SimConfig(nodes=12, hours=3.0, replays="claim_seed")
    out = simulate.simulate(config, random.Random(1))
    state = out.state
    replayed = [v for v in state.verifies.values() if v.value is not None]
    assert replayed and all(v.value == state.claims[v.claim].claimed for v in replayed)  # no eval noise here
    assert out.figures.refused_mints == 0


@pytest.mark.slow
def test_a_paired_swarm_runs_rounds_that_the_fold_turns_into_records_with_gains() -> None:
    config = simulate.SimConfig(nodes=30, hours=8.0, replays="paired", eval_sd_bpb=0.0003)
    out = simulate.simulate(config, random.Random(2))
    f, state = out.figures, out.state
    assert f.refused_mints == 0 and f.paired_rounds > 0 and f.parent_runs <= f.paired_rounds
    assert f.verification_share < 0.3
    paired_rows = [r for r in state.records if r.gain is not None]
    assert paired_rows and all(r.seeds >= evidence.MIN_WIN_ROUNDS and r.low is not None for r in paired_rows)
    assert f.false_records == 0
