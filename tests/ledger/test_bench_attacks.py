"""Every attack of scripts/bench_attacks.py fails against the fold (issue 12's CI check, fold level)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "scripts" / "bench_attacks.py"
    spec = importlib.util.spec_from_file_location("bench_attacks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_attacks"] = module
    spec.loader.exec_module(module)
    return module


BENCH = _load()


@pytest.mark.parametrize("attack", BENCH.ATTACKS, ids=lambda a: a.__name__)
def test_the_attack_fails_and_pays_the_attacker_nothing(attack) -> None:
    succeeded, attacker_ucr, details = attack()
    assert not succeeded, details
    assert attacker_ucr == 0
