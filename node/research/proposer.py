"""The built-in proposer: the next edit of train.py, chosen from the whole swarm's history.

Pure: source text, past trials and an `rng` in, a Proposal out. No clock, no IO.

Theory of operation. An *arm* is one constant moved in one direction ("MATRIX_LR up"; a bool
has one arm, "flip"). Every past trial that moved a constant is evidence about that arm: it won
if the claim measured lower val_bpb than its parent, lost if higher or if the run failed. Arms
are chosen by Thompson sampling over Beta(1 + wins, 1 + losses), so untried arms are explored
and arms that kept winning are pushed further; with some probability a second arm rides along
(two constants that only help together are otherwise never found). Steps are multiplicative,
because learning rates and sizes live on log scales. A candidate whose normalized key
(node/research/program.py) is already in `tried` is skipped and another drawn.
"""
from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence, Set
from dataclasses import dataclass, field

from node.errors import NoProposal
from node.research.program import Program, Value, apply_changes, editable, format_value, key_with, parse_program

_UNIT_INTERVAL = re.compile(r"(RATIO|FRAC)")  # such a constant at or below 1 stays in [0, 1]
_SIGNIFICANT_DIGITS = 4
_MAX_MAGNITUDE = 1e15  # far below what node/research/program.py still reads as a literal


@dataclass(frozen=True, slots=True)
class Trial:
    """A past experiment as the proposer sees it."""

    changes: dict[str, tuple[Value, Value]]   # constant -> (parent's value, trial's value)
    delta_bpb: float | None                   # trial minus parent val_bpb; None: failed run
    weight: float = 1.0                       # how much it counts (node/research/memory.py)


@dataclass(frozen=True, slots=True)
class Proposal:
    source: str
    changes: dict[str, tuple[Value, Value]]
    key: str


@dataclass(frozen=True, slots=True)
class Settings:
    up_factors: tuple[float, ...] = (1.25, 1.5, 2.0)
    max_tries: int = 200          # candidates drawn before giving up
    pair_probability: float = 0.25
    frozen: frozenset[str] = field(default_factory=frozenset)


def step(name: str, value: Value, direction: int, factor: float) -> Value | None:
    """`value` moved up (+1) or down (-1) by `factor`; None where that move makes no sense."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        if value == 0:
            return 1 if direction > 0 else None
        if value > 1 and value & (value - 1) == 0:  # powers of two stay powers of two
            moved = value << 1 if direction > 0 else value >> 1
        else:
            moved = round(value * factor) if direction > 0 else round(value / factor)
            if moved == value:
                moved = value + direction
        if (value > 0 and moved < 1) or abs(moved) > _MAX_MAGNITUDE:
            return None
        return moved
    if value == 0.0:
        return (0.05 * factor) if direction > 0 else None
    moved_f = value * factor if direction > 0 else value / factor
    moved_f = float(f"{moved_f:.{_SIGNIFICANT_DIGITS}g}")
    if _UNIT_INTERVAL.search(name) and 0 < value <= 1:
        moved_f = min(moved_f, 1.0)
    if moved_f == value or not math.isfinite(moved_f) or abs(moved_f) > _MAX_MAGNITUDE:
        return None
    return moved_f


def arm_stats(trials: Sequence[Trial]) -> dict[tuple[str, int], tuple[float, float]]:
    """(constant, direction) -> (wins, losses) over every trial that moved it, each trial counted
    at its weight."""
    stats: dict[tuple[str, int], tuple[float, float]] = {}
    for trial in trials:
        won = trial.delta_bpb is not None and trial.delta_bpb < 0
        for name, (old, new) in trial.changes.items():
            if isinstance(old, bool) or isinstance(new, bool):
                direction = 1
            elif new == old:
                continue
            else:
                direction = 1 if new > old else -1
            wins, losses = stats.get((name, direction), (0.0, 0.0))
            w = trial.weight
            stats[(name, direction)] = (wins + w, losses) if won else (wins, losses + w)
    return stats


def _arms(constants: dict[str, Value]) -> list[tuple[str, int]]:
    arms: list[tuple[str, int]] = []
    for name, value in sorted(constants.items()):
        arms += [(name, 1)] if isinstance(value, bool) else [(name, 1), (name, -1)]
    return arms


def _draw_arm(arms: list[tuple[str, int]], stats: dict[tuple[str, int], tuple[float, float]],
              rng: random.Random) -> tuple[str, int]:
    def sample(arm: tuple[str, int]) -> float:
        wins, losses = stats.get(arm, (0.0, 0.0))
        return rng.betavariate(1 + wins, 1 + losses)

    return max(arms, key=sample)


def propose(parent_source: str, *, profile: str, trials: Sequence[Trial], tried: Set[str],
            rng: random.Random, settings: Settings = Settings()) -> Proposal:
    """An edit of `parent_source` whose key is not in `tried` (nor the parent's own key)."""
    parent: Program = parse_program(parent_source)
    constants = editable(parent, profile, settings.frozen)
    arms = _arms(constants)
    if not arms:
        raise NoProposal("train.py has no constant the proposer may edit")
    stats = arm_stats(trials)
    for _ in range(settings.max_tries):
        chosen = [_draw_arm(arms, stats, rng)]
        if len(constants) > 1 and rng.random() < settings.pair_probability:
            second = _draw_arm([a for a in arms if a[0] != chosen[0][0]], stats, rng)
            chosen.append(second)
        changes: dict[str, Value] = {}
        for name, direction in chosen:
            moved = step(name, constants[name], direction, rng.choice(settings.up_factors))
            if moved is not None:
                changes[name] = moved
        if not changes:
            continue
        key = key_with(parent, changes)
        if key in tried or key == parent.key:
            continue
        return Proposal(apply_changes(parent, changes), {n: (constants[n], v) for n, v in changes.items()}, key)
    raise NoProposal(f"no untried edit in {settings.max_tries} draws from {len(arms)} arms")


def describe(changes: dict[str, tuple[Value, Value]]) -> str:
    """A one-line commit message for the edit."""
    return ", ".join(f"{n} {format_value(a)} -> {format_value(b)}" for n, (a, b) in sorted(changes.items()))
