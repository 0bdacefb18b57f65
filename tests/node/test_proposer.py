"""The proposer and train.py-as-data: properties over the real genesis train.py and small programs."""
from __future__ import annotations

import ast
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import NoProposal
from node.home import genesis_source
from node.research.program import (BadProgram, apply_changes, editable, normalized_key, parse_program, parse_summary,
                          summarize)
from node.research.proposer import Settings, Trial, arm_stats, propose, step

GENESIS = genesis_source().decode()
FROZEN = frozenset({"UNTIMED_STEPS", "PLAN_AFTER_STEPS"})
SMALL = """\
import os

LR = 0.04  # learning rate
DEPTH = 4
USE_BIAS = False
BATCH = 2**5
NAME = "x"
if PROFILE.name == "cpu":
    DEPTH = 2

def f():
    return LR * DEPTH
"""


def _only_constants_differ(parent: str, child: str, allowed: set[str]) -> set[str]:
    a, b = parse_program(parent), parse_program(child)
    assert a.skeleton == b.skeleton, "code outside constant values changed"
    old = {c.name: c.value for c in a.constants}
    new = {c.name: c.value for c in b.constants}
    assert old.keys() == new.keys()
    changed = {n for n in old if old[n] != new[n] or type(old[n]) is not type(new[n])}
    assert changed and changed <= allowed, (changed, allowed)
    return changed


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 8), profile=st.sampled_from(["cpu", "gpu"]))
@pytest.mark.slow
def test_proposals_parse_change_only_editable_constants_and_never_repeat(seed: int, rounds: int, profile: str) -> None:
    rng = random.Random(seed)
    allowed = set(editable(parse_program(GENESIS), profile, FROZEN))
    tried: set[str] = {normalized_key(GENESIS)}
    trials: list[Trial] = []
    for _ in range(rounds):
        p = propose(GENESIS, profile=profile, trials=trials, tried=tried, rng=rng, settings=Settings(frozen=FROZEN))
        ast.parse(p.source)
        assert _only_constants_differ(GENESIS, p.source, allowed) == set(p.changes)
        assert p.key == normalized_key(p.source) and p.key not in tried
        tried.add(p.key)
        trials.append(Trial(p.changes, rng.choice([None, -0.01, 0.02])))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_history_keys_are_honoured_when_many_are_taken(seed: int) -> None:
    # Take every single-constant move the small program offers: what is left must still be new.
    rng = random.Random(seed)
    program = parse_program(SMALL)
    tried = {program.key}
    for name, value in editable(program, "cpu", frozenset()).items():
        for direction in (1, -1):
            for factor in (1.25, 1.5, 2.0):
                moved = step(name, value, direction, factor)
                if moved is not None:
                    tried.add(normalized_key(apply_changes(program, {name: moved})))
    try:
        p = propose(SMALL, profile="cpu", trials=[], tried=tried, rng=rng,
                    settings=Settings(pair_probability=1.0))
    except NoProposal:
        return
    assert p.key not in tried and len(p.changes) == 2


def test_cpu_profile_skips_constants_its_block_overrides() -> None:
    program = parse_program(GENESIS)
    cpu = editable(program, "cpu", FROZEN)
    gpu = editable(program, "gpu", FROZEN)
    assert "DEPTH" not in cpu and "DEPTH" in gpu and "MATRIX_LR" in cpu
    assert not FROZEN & (cpu.keys() | gpu.keys())
    assert editable(parse_program(SMALL), "cpu", frozenset()).keys() == {"LR", "USE_BIAS", "BATCH"}


def test_key_ignores_spelling_and_sees_values_and_code() -> None:
    key = normalized_key(SMALL)
    assert normalized_key(SMALL.replace("2**5", "32").replace("  # learning rate", "")) == key
    assert normalized_key(SMALL + "\n# a comment\n") == key
    assert normalized_key(SMALL.replace("LR = 0.04", "LR = 0.05")) != key
    assert normalized_key(SMALL.replace("LR * DEPTH", "LR + DEPTH")) != key
    assert normalized_key("def (:") != key  # not Python: still a key, of its bytes


def test_summary_round_trips_and_notes_code_changes() -> None:
    child = apply_changes(parse_program(SMALL), {"LR": 0.08, "USE_BIAS": True})
    text = summarize(SMALL, child)
    changes, key = parse_summary(text)
    assert changes == {"LR": (0.04, 0.08), "USE_BIAS": (False, True)} and key == normalized_key(child)
    assert "code: changed" in summarize(SMALL, child.replace("LR * DEPTH", "LR - DEPTH"))
    assert parse_summary(summarize(None, SMALL)) == ({}, normalized_key(SMALL))
    assert apply_changes(parse_program(SMALL), {"LR": 0.08}).count("# learning rate") == 1


def test_steps_are_multiplicative_and_keep_shapes() -> None:
    assert step("BATCH", 32, 1, 1.5) == 64 and step("BATCH", 32, -1, 1.5) == 16
    assert step("DEPTH", 3, 1, 1.5) == 4 and step("DEPTH", 1, -1, 2.0) is None
    assert step("WARMDOWN_RATIO", 0.8, 1, 2.0) == 1.0 and step("WARMDOWN_RATIO", 1.0, 1, 2.0) is None
    assert step("FINAL_LR_FRAC", 0.0, -1, 2.0) is None and step("X", True, 1, 2.0) is False
    assert step("LR", 0.04, -1, 2.0) == 0.02


def test_history_guides_the_choice() -> None:
    won = [Trial({"MATRIX_LR": (0.04, 0.08)}, -0.02) for _ in range(30)]
    lost = [Trial({name: (1.0, 2.0)}, 0.05) for name in ("EMBEDDING_LR", "SCALAR_LR") for _ in range(30)]
    assert arm_stats(won + lost)[("MATRIX_LR", 1)] == (30, 0)
    rng = random.Random(7)
    picks = [propose(GENESIS, profile="cpu", trials=won + lost, tried=set(), rng=rng,
                     settings=Settings(frozen=FROZEN, pair_probability=0.0)).changes for _ in range(40)]
    up = sum(1 for c in picks if "MATRIX_LR" in c and c["MATRIX_LR"][1] > c["MATRIX_LR"][0])
    assert up >= 25, picks


def test_bad_programs_are_typed_errors() -> None:
    with pytest.raises(BadProgram):
        parse_program("def (:")
    with pytest.raises(NoProposal):
        propose("x = 1\n", profile="cpu", trials=[], tried=set(), rng=random.Random(0))
