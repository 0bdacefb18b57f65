"""The issue 16 simulator: the rich landscape, the TPE policy, machines and leases."""
from __future__ import annotations

import math
import random

import pytest

from node.sim import richland
from node.sim.richland import RICH_TRAIN_PY, rich_bpb
from node.sim.simulate import CLASS
from node.sim.simwork import Tier, WorkConfig, genesis_of, simulate_work


def test_the_rich_landscape_has_interactions_code_edits_and_crashes() -> None:
    _, genesis = genesis_of("rich")
    base = rich_bpb(genesis, floor_bpb=0.95)
    assert base is not None and base > 0.95
    # a code edit that pays only with a constant moved: QK_NORM moves the learning rate's optimum up,
    # so at the genesis rate it hurts and at its own optimum it beats anything without it
    qk = rich_bpb({**genesis, "QK_NORM": 1.0}, floor_bpb=0.95)
    assert qk is not None and qk > base
    lrs = [genesis["MATRIX_LR"] * 2 ** (k / 8) for k in range(-8, 40)]
    with_qk = min(v for lr in lrs if (v := rich_bpb({**genesis, "QK_NORM": 1.0, "MATRIX_LR": lr}, floor_bpb=0.95)))
    without = min(v for lr in lrs if (v := rich_bpb({**genesis, "MATRIX_LR": lr}, floor_bpb=0.95)))
    assert with_qk < without
    hot = {**genesis, "MATRIX_LR": genesis["MATRIX_LR"] * 1.6 * 3.5}
    assert rich_bpb(hot, floor_bpb=0.95) is None                         # diverges without QK_NORM
    assert rich_bpb({**hot, "QK_NORM": 1.0}, floor_bpb=0.95) is not None
    # VALUE_EMBEDS helps deep models and hurts shallow ones
    deep, shallow = {**genesis, "DEPTH": 12.0}, {**genesis, "DEPTH": 4.0}
    assert rich_bpb({**deep, "VALUE_EMBEDS": 1.0}, floor_bpb=0.95) < rich_bpb(deep, floor_bpb=0.95)  # type: ignore[operator]
    assert rich_bpb({**shallow, "VALUE_EMBEDS": 1.0}, floor_bpb=0.95) > rich_bpb(shallow, floor_bpb=0.95)  # type: ignore[operator]
    # an interaction: the best batch size depends on the learning rate
    def best_batch(lr: float) -> float:
        grid = [genesis["TOTAL_BATCH_SIZE"] * 2 ** (k / 4) for k in range(-12, 5)]
        return min(grid, key=lambda b: rich_bpb({**genesis, "MATRIX_LR": lr, "TOTAL_BATCH_SIZE": b}, floor_bpb=0.95)
                   or math.inf)
    assert best_batch(0.03) != best_batch(0.12)
    assert "QK_NORM = False" in RICH_TRAIN_PY and richland.CRASH_RATIO > richland.DIVERGE_RATIO


@pytest.mark.slow
def test_tpe_runs_in_the_simulated_node_and_is_deterministic_by_seed() -> None:
    config = WorkConfig(tiers=(Tier(CLASS, 3),), hours=1.0, landscape="rich", policy="tpe", join_window_s=10.0)
    first, f1 = simulate_work(config, random.Random(4))
    second, f2 = simulate_work(config, random.Random(4))
    assert f1 == f2 and f1.proposed > 10 and f1.duplicates == 0
    assert [r.claim for _, r in first.record_times] == [r.claim for _, r in second.record_times]


@pytest.mark.slow
def test_without_leases_one_gpu_nodes_run_duplicates_and_leases_prevent_them() -> None:
    # a bowl with few constants near their bounds: the bandit's discrete moves collide often
    base = dict(tiers=(Tier(CLASS, 6),), hours=2.0, join_window_s=10.0, machines=6)
    _, free = simulate_work(WorkConfig(**base), random.Random(2))  # type: ignore[arg-type]
    _, leased = simulate_work(WorkConfig(**base, leases=True), random.Random(2))  # type: ignore[arg-type]
    assert free.duplicates > 0 and leased.duplicates == 0
