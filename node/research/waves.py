"""Waves: experiments for all of a node's workers chosen together, as one factorial screen.

Pure: source text, past trials and an `rng` in, plans and picks out. No clock, no IO.

Theory of operation. With one worker the proposer (node/research/proposer.py) draws one edit at a time. With
n workers free at once, n independent draws overlap: the same arm gets pushed by two workers, the
pair that only helps together is found by luck. A *wave* is the n experiments chosen as one design:
one or two constants (drawn by Thompson sampling over the swarm's evidence per constant, so
unexplored constants and winning ones are both favoured), a few levels of each around the parent's
value, and the full grid of their combinations, minus the parent itself (already measured). Two
constants with two levels each (down and up) and the parent make a 3x3 grid: 8 runs for 8 workers;
with 4 workers a 2x2 (one level each, the parent the low corner) plus one ordinary proposal.
Points already tried (by normalized key) are dropped and the slots filled by ordinary proposals.

A WaveQueue holds the wave's proposals; each idle worker takes the next one not tried meanwhile.
A queue planned on one parent is dropped when the parent changes (a new record). When a wave's
results are in, `pick_winner` reads the main effects: for each screened constant, the level whose
runs (the parent's value counting at its own level) have the lowest mean val_bpb; averaging over
the other constant's levels makes that pick less noisy than the single best run.
"""
from __future__ import annotations

import itertools
import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from node.errors import NoProposal
from node.research.program import (
    Program,
    Value,
    apply_changes,
    editable,
    key_with,
    parse_program,
)
from node.research.proposer import Proposal, Settings, Trial, arm_stats, propose, step

MAX_WAVE = 64   # proposals in one wave: a node has at most a few dozen GPUs
MAX_DESIGNS = 256  # (step factor, constants) designs looked at for an untried grid, most promising first


@dataclass(frozen=True, slots=True)
class WaveSettings:
    factor: float = 1.5           # one level is the parent's value moved by this factor (powers of two: x2);
    #                               once every grid at it is tried, the proposer's other up_factors
    max_constants: int = 2        # a factorial over at most this many constants
    proposer: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        if not self.factor > 1 or not 1 <= self.max_constants <= 2:
            raise ValueError("factor must be above 1 and max_constants 1 or 2")


@dataclass(frozen=True, slots=True)
class Wave:
    parent_key: str
    constants: tuple[str, ...]                 # the screened constants (empty: none could be)
    levels: tuple[tuple[Value, ...], ...]      # per constant: its values in the grid, the parent's included
    parent_values: tuple[Value, ...]           # per constant: the parent's value
    grid: tuple[Proposal, ...]                 # the factorial points that were not tried before
    fill: tuple[Proposal, ...]                 # ordinary proposals for the slots left

    @property
    def proposals(self) -> tuple[Proposal, ...]:
        return self.grid + self.fill


@dataclass(frozen=True, slots=True)
class WaveOutcome:
    """What a finished wave says: the main effect of each level, the values to carry forward."""

    effects: dict[str, dict[Value, float]]  # constant -> level -> mean val_bpb of the runs at that level
    carry: dict[str, Value]                 # constant -> its winning level, where that is not the parent's
    best: Proposal | None                   # the single best run of the wave
    best_bpb: float | None
    measured: int                           # grid points with a result (crashes count as measured)


def _constant_scores(constants: Mapping[str, Value], trials: Sequence[Trial],
                     rng: random.Random) -> list[tuple[float, str]]:
    # a constant's draw is the best Thompson draw of its arms (up and down; a bool's one flip)
    stats = arm_stats(trials)
    out = []
    for name in sorted(constants):
        dirs = (1,) if isinstance(constants[name], bool) else (1, -1)
        draw = max(rng.betavariate(1 + stats.get((name, d), (0, 0))[0], 1 + stats.get((name, d), (0, 0))[1])
                   for d in dirs)
        out.append((draw, name))
    return sorted(out, reverse=True)


def ladder(name: str, value: Value, count: int, first: int, factor: float) -> list[Value]:
    """`count` distinct values around `value` (not itself): alternately one step in direction
    `first` and the other, each further step one more factor out; fewer where moves run out."""
    out: list[Value] = []
    ends = {1: value, -1: value}
    order = [first, -first]
    blocked: set[int] = set()
    i = 0
    while len(out) < count and len(blocked) < 2:
        direction = order[i % 2]
        i += 1
        if direction in blocked:
            continue
        moved = step(name, ends[direction], direction, factor)
        if moved is None or moved == value or moved in out or isinstance(value, bool) and out:
            blocked.add(direction)
            continue
        ends[direction] = moved
        out.append(moved)
    return out


def _shape(n: int, names: Sequence[str], constants: Mapping[str, Value]) -> list[int]:
    """Levels beyond the parent's per constant: the grid prod(k+1)-1 <= n with the most points,
    the more balanced on a tie; a bool has one other level only."""
    if len(names) == 1:
        return [1 if isinstance(constants[names[0]], bool) else n]
    caps = [1 if isinstance(constants[nm], bool) else n for nm in names]
    shapes = [(a, b) for a in range(1, caps[0] + 1) for b in range(1, caps[1] + 1) if (a + 1) * (b + 1) - 1 <= n]
    a, b = max(shapes, key=lambda ab: ((ab[0] + 1) * (ab[1] + 1), -abs(ab[0] - ab[1]), ab[0]))
    return [a, b]


def _designs(order: Sequence[str], two: bool) -> list[tuple[str, ...]]:
    # pairs by the sum of their ranks (the two most promising first), then single constants
    pairs = sorted(((i + j, i), (a, b)) for i, a in enumerate(order) for j, b in enumerate(order) if i < j)
    return ([p for _, p in pairs] if two else []) + [(a,) for a in order]


def _grid(parent: Program, constants: Mapping[str, Value], names: tuple[str, ...], n: int,
          stats: Mapping[tuple[str, int], tuple[float, float]], factor: float,
          seen: AbstractSet[str]) -> tuple[list[tuple[str, list[Value]]], list[Proposal]]:
    kept: list[tuple[str, list[Value]]] = []
    for name, count in zip(names, _shape(n, names, constants)):
        up, down = stats.get((name, 1), (0, 0)), stats.get((name, -1), (0, 0))
        # the first level goes the way that won more often (up on a tie)
        first = 1 if (up[0] + 1) / (sum(up) + 2) >= (down[0] + 1) / (sum(down) + 2) else -1
        levels = ladder(name, constants[name], count, first, factor)
        if levels:
            kept.append((name, sorted(levels)))
    grid: list[Proposal] = []
    keys = set(seen)
    axes = [[constants[nm], *lv] for nm, lv in kept]
    for point in itertools.product(*axes) if kept else ():
        changes = {nm: v for (nm, _), v in zip(kept, point) if v != constants[nm]}
        if not changes or len(grid) >= n:
            continue
        key = key_with(parent, changes)
        if key in keys:
            continue
        keys.add(key)
        grid.append(Proposal(apply_changes(parent, changes), {k: (constants[k], v) for k, v in changes.items()}, key))
    return kept, grid


def plan_wave(parent_source: str, *, profile: str, trials: Sequence[Trial], tried: AbstractSet[str], n: int,
              rng: random.Random, settings: WaveSettings = WaveSettings()) -> Wave:
    """Up to n distinct untried proposals: a factorial screen of one or two constants, then fill.

    The constants: the most promising design (by Thompson draws per constant) whose grid is not
    already tried; a design with fewer untried points is taken only if none has more. Raises
    NoProposal only when not even one untried edit is left."""
    if not 1 <= n <= MAX_WAVE:
        raise ValueError(f"a wave has 1 to {MAX_WAVE} proposals, not {n}")
    parent: Program = parse_program(parent_source)
    constants = editable(parent, profile, settings.proposer.frozen)
    order = [name for _, name in _constant_scores(constants, trials, rng)]
    stats = arm_stats(trials)
    seen = set(tried) | {parent.key}
    kept: list[tuple[str, list[Value]]] = []
    grid: list[Proposal] = []
    designs = _designs(order, settings.max_constants == 2 and n >= 3)
    factors = [settings.factor, *(f for f in settings.proposer.up_factors if f != settings.factor)]
    for factor, names in itertools.islice(itertools.product(factors, designs), MAX_DESIGNS):
        k, g = _grid(parent, constants, names, n, stats, factor, seen)
        if len(g) > len(grid):
            kept, grid = k, g
        if len(grid) >= n or grid and len(grid) == math.prod(len(lv) + 1 for _, lv in kept) - 1:
            break   # a whole untried grid
    seen |= {p.key for p in grid}
    fill: list[Proposal] = []
    while len(grid) + len(fill) < n:
        try:
            extra = propose(parent_source, profile=profile, trials=trials, tried=seen, rng=rng,
                            settings=settings.proposer)
        except NoProposal:
            if grid or fill:
                break
            raise
        seen.add(extra.key)
        fill.append(extra)
    return Wave(parent.key, tuple(nm for nm, _ in kept), tuple((constants[nm], *lv) for nm, lv in kept),
                tuple(constants[nm] for nm, _ in kept), tuple(grid), tuple(fill))


def pick_winner(wave: Wave, results: Mapping[str, float | None], parent_bpb: float | None) -> WaveOutcome:
    """Main effects of the wave's finished grid points. `results`: key -> measured val_bpb (None:
    the run failed); keys not in it are still running or were never run. A failed run counts at
    its levels as the worst result of the wave (an edit that crashes is no winner)."""
    done = [(p, results[p.key]) for p in wave.grid if p.key in results]
    values = [v for _, v in done if v is not None and math.isfinite(v)]
    worst = max(values + ([parent_bpb] if parent_bpb is not None else []), default=math.inf)
    effects: dict[str, dict[Value, float]] = {}
    carry: dict[str, Value] = {}
    for i, name in enumerate(wave.constants):
        sums: dict[Value, list[float]] = {}
        if parent_bpb is not None:
            sums.setdefault(wave.parent_values[i], []).append(parent_bpb)
        for proposal, value in done:
            level = proposal.changes[name][1] if name in proposal.changes else wave.parent_values[i]
            sums.setdefault(level, []).append(value if value is not None and math.isfinite(value) else worst)
        means = {level: sum(vs) / len(vs) for level, vs in sums.items()}
        effects[name] = means
        if means:
            winner = min(means, key=lambda lv: (means[lv], lv != wave.parent_values[i]))
            if winner != wave.parent_values[i]:
                carry[name] = winner
    scored = [(v, p) for p, v in done if v is not None and math.isfinite(v)]
    best = min(scored, key=lambda vp: vp[0], default=None)
    return WaveOutcome(effects, carry, best[1] if best else None, best[0] if best else None, len(done))


@dataclass(slots=True)
class WaveQueue:
    """The proposals of the current wave, taken one per idle worker. Not thread-safe: the research
    loop's workers share one asyncio thread."""

    wave: Wave | None = None
    pending: deque[Proposal] = field(default_factory=deque)
    waves: int = 0     # planned so far

    def load(self, wave: Wave) -> None:
        self.wave, self.pending = wave, deque(wave.proposals)
        self.waves += 1

    def take(self, parent_key: str, tried: AbstractSet[str]) -> Proposal | None:
        """The next proposal on this parent not tried meanwhile; None: plan a new wave. A queue
        planned on another parent is dropped (its grid is centred on an old program)."""
        if self.wave is None or self.wave.parent_key != parent_key:
            self.pending.clear()
            return None
        while self.pending:
            proposal = self.pending.popleft()
            if proposal.key not in tried:
                return proposal
        return None
