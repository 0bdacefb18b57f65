"""Every attack of scripts/bench_attacks.py fails against the fold (issue 12's CI check, fold level)."""
from __future__ import annotations

import pytest

from tests.scriptkit import load_script

BENCH = load_script("bench_attacks")


@pytest.mark.parametrize("attack", BENCH.ATTACKS, ids=lambda a: a.__name__)
def test_the_attack_fails_and_pays_the_attacker_nothing(attack) -> None:
    succeeded, attacker_ucr, details = attack()
    assert not succeeded, details
    assert attacker_ucr == 0
