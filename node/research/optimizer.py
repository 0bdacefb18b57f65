"""A principled optimizer for train.py's numeric constants: Optuna's TPE, fed the swarm's results.

Pure apart from Optuna's in-memory study: no clock, no IO; every draw comes from the seed given.

Theory of operation. The built-in proposer (node/research/proposer.py) nudges one or two constants
of the current best by fixed factors and keeps Beta counts per direction. This one models the whole
space instead: each editable constant of the genesis program gets a search range around its
genesis value (log scale for rates and sizes, the exponent for powers of two, both values for a
bool), and Optuna's tree-structured Parzen estimator (TPE, multivariate, so constants that only
help together are modelled together) proposes complete settings from every observation so far.
Ask and tell: each proposal asks Optuna for a point, and every result that comes back (ours, other
nodes', waves', submissions') is added as a finished trial of the program actually run. Workers
that ask while others run get different points from the random choice of constants and TPE's own
draws; a key proposed and not yet observed is never proposed twice.

Noise. An observation is the verified median where the trusted verifiers decided one, else the
claimed value of a claim that counts (node/research/memory.py; the caller passes only those). TPE
splits observations into a good and a bad group by rank, so one lucky draw moves it little, and a
program measured several times contributes each measurement. A crash is told as the worst value
seen plus CRASH_PENALTY_BPB, so the model learns where runs fail.

A proposal is the parent (the class's best verified program) with every searched constant set to
the trial's value; constants outside the search (the profile's overrides, frozen ones) keep the
parent's values. Floats are rounded to SIGNIFICANT_DIGITS so keys stay readable; a point whose
key was tried already is told as a failure and another one asked.
"""
from __future__ import annotations

import math
import random
import re
import warnings
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Literal, overload

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from node.errors import NoProposal
from node.research.program import Value, apply_changes, editable, key_with, parse_program
from node.research.proposer import Proposal, Trial, arm_stats

RANGE_FACTOR = 3.0          # a constant is searched within its genesis value x/÷ this
SIGNIFICANT_DIGITS = 3
CRASH_PENALTY_BPB = 0.05    # a crash counts as this much worse than the worst run seen
STARTUP_TRIALS = 8          # random points before TPE takes over (Optuna's default is 10)
MULTIVARIATE = True         # one joint model of the constants (interactions), not one per constant
MIN_MOVED, MAX_MOVED = 1, 2  # constants one proposal moves from the parent
MIN_STEP_RATIO = 1.4        # a move smaller than this factor hardly shows above the runs' noise
MAX_ASKS = 32               # points asked for one proposal before giving up on untried ones
_UNIT_INTERVAL = re.compile(r"(RATIO|FRAC)")
_POW2 = "@log2"             # a power-of-two constant is searched by its exponent

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space(constants: Mapping[str, Value]) -> dict[str, BaseDistribution]:
    """Optuna parameter name -> range, for each constant that can be searched."""
    out: dict[str, BaseDistribution] = {}
    for name, value in sorted(constants.items()):
        if isinstance(value, bool):
            out[name] = CategoricalDistribution((False, True))
        elif isinstance(value, int):
            if value > 1 and value & (value - 1) == 0:
                exp = value.bit_length() - 1
                out[name + _POW2] = IntDistribution(max(0, exp - 2), exp + 2)
            elif value > 0:
                out[name] = IntDistribution(max(1, math.floor(value / RANGE_FACTOR)),
                                            max(2, math.ceil(value * RANGE_FACTOR)), log=True)
        elif value > 0 and math.isfinite(value):
            high = value * RANGE_FACTOR
            if _UNIT_INTERVAL.search(name) and value <= 1:
                high = min(high, 1.0)
            if high > value / RANGE_FACTOR:
                out[name] = FloatDistribution(value / RANGE_FACTOR, high, log=True)
    return out


@overload
def to_params(values: Mapping[str, Value], dists: Mapping[str, BaseDistribution]) -> dict[str, object] | None: ...
@overload
def to_params(values: Mapping[str, Value], dists: Mapping[str, BaseDistribution],
              partial: Literal[True]) -> dict[str, object]: ...
def to_params(values: Mapping[str, Value], dists: Mapping[str, BaseDistribution],
              partial: bool = False) -> dict[str, object] | None:
    """A program's constants as a point of the space; None where one lies outside it (`partial`:
    the constants that lie inside, the others left out)."""
    params: dict[str, object] = {}
    for pname, dist in dists.items():
        name = pname.removesuffix(_POW2)
        if name not in values:
            if partial:
                continue
            return None
        value = values[name]
        if pname.endswith(_POW2):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value & (value - 1):
                if partial:
                    continue
                return None
            value = value.bit_length() - 1
        if not _inside(dist, value):
            if partial:
                continue
            return None
        params[pname] = value
    return params


def _inside(dist: BaseDistribution, value: Value) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(dist, IntDistribution):
        return isinstance(value, int) and not isinstance(value, bool) and dist.low <= value <= dist.high
    if isinstance(dist, FloatDistribution):
        return not isinstance(value, bool) and dist.low <= value <= dist.high
    return False


def _far_enough(old: Value, new: Value) -> bool:
    """Whether a move is big enough to show above the noise (a bool's flip always is)."""
    if isinstance(old, bool) or isinstance(new, bool) or old <= 0 or new <= 0:
        return True
    return abs(math.log(new / old)) >= math.log(MIN_STEP_RATIO) - 1e-9


def _outward(old: Value, new: Value, dist: BaseDistribution | None, way: int = 0) -> Value:
    """`new`, or where it is too close to `old` (TPE has no strong view), the point MIN_STEP_RATIO
    away in direction `way` (the arm that won the Thompson draw; 0: new's own direction), the other
    way where that leaves the searched range."""
    if _far_enough(old, new) or isinstance(new, bool) or isinstance(old, bool):
        return new
    up = way > 0 if way else new >= old
    for direction in (up, not up):
        moved: Value = old * MIN_STEP_RATIO if direction else old / MIN_STEP_RATIO
        if isinstance(new, int):
            moved = max(old + 1, math.ceil(moved)) if direction else min(old - 1, math.floor(moved))
        else:
            moved = float(f"{moved:.{SIGNIFICANT_DIGITS}g}")
            moved = moved if _far_enough(old, moved) else (old * MIN_STEP_RATIO * 1.01 if direction else old / (MIN_STEP_RATIO * 1.01))
        if dist is None or _inside(dist, moved):
            return moved
    return new


def _thompson(free: Sequence[str], stats: Mapping[tuple[str, int], tuple[float, float]],
              rng: random.Random) -> list[tuple[str, int]]:
    """(parameter name, direction of its better arm), best Thompson draw first (a constant's
    draw: the better of its two arms, up and down)."""
    def draw(pname: str) -> tuple[float, int]:
        name = pname.removesuffix(_POW2)
        return max((rng.betavariate(1 + stats.get((name, d), (0.0, 0.0))[0], 1 + stats.get((name, d), (0.0, 0.0))[1]), d)
                   for d in (1, -1))
    drawn = sorted(((draw(p), p) for p in free), reverse=True)
    return [(p, d) for (_, d), p in drawn]


def to_values(params: Mapping[str, object]) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for pname, raw in params.items():
        if pname.endswith(_POW2):
            out[pname.removesuffix(_POW2)] = 1 << int(str(raw))
        elif isinstance(raw, bool):
            out[pname] = raw
        elif isinstance(raw, int):
            out[pname] = raw
        elif isinstance(raw, float):
            out[pname] = float(f"{raw:.{SIGNIFICANT_DIGITS}g}")
    return out


@dataclass(slots=True)
class TpeProposer:
    """One study per platform class and profile; feed it with `observe`, draw with `propose`."""

    genesis_source: str
    profile: str
    seed: int
    frozen: frozenset[str] = frozenset()
    dists: dict[str, BaseDistribution] = field(init=False)
    study: optuna.Study = field(init=False)
    base: optuna.samplers.TPESampler = field(init=False)
    pending: set[str] = field(default_factory=set)     # keys proposed and not observed yet
    worst_bpb: float = 0.0
    observed: int = 0

    def __post_init__(self) -> None:
        self.dists = space(editable(parse_program(self.genesis_source), self.profile, self.frozen))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.base = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=STARTUP_TRIALS,
                                                   multivariate=MULTIVARIATE, constant_liar=True)
        self.study = optuna.create_study(direction="minimize", sampler=self.base)

    def observe(self, key: str, values: Mapping[str, Value], bpb: float | None) -> None:
        """A result: the program's constants and its value (None: it crashed)."""
        if bpb is not None and math.isfinite(bpb):
            self.worst_bpb = max(self.worst_bpb, bpb)
        told = bpb if bpb is not None and math.isfinite(bpb) else self.worst_bpb + CRASH_PENALTY_BPB
        self.observed += 1
        self.pending.discard(key)
        params = to_params(values, self.dists)
        if params is None:
            return  # outside the searched space (an agent's edit, a far move): no point of this model
        self.study.add_trial(optuna.trial.create_trial(params=params, distributions=self.dists, value=told))

    def propose(self, parent_source: str, *, tried: Set[str], rng: random.Random,
                trials: Sequence[Trial] = ()) -> Proposal:
        """The parent with a few constants set by the next asked point. Which constants: MIN_MOVED
        to MAX_MOVED of them, the best of one Thompson draw per constant over the weighed trials
        (the bandit's evidence: constants whose moves kept winning, and untried ones, first); the
        rest are fixed at the parent's values (Optuna's PartialFixedSampler), so TPE models the
        whole space and picks the values, but each run is a local move from the best program, as
        records need. A move smaller than MIN_STEP_RATIO is pushed out to it (it could not show
        above the noise), so the program run is not exactly the point asked: the asked trial is
        closed at once and the program's result comes back through `observe` like any other."""
        stats = arm_stats(trials)
        parent = parse_program(parent_source)
        current = {c.name: c.value for c in parent.constants if c.name not in parent.reassigned}
        at_parent = to_params(current, self.dists, partial=True)
        free = sorted(self.dists)
        for _ in range(MAX_ASKS):
            arms = dict(_thompson(free, stats, rng)[:rng.randint(MIN_MOVED, MAX_MOVED)])
            moved = set(arms)
            ways = {p.removesuffix(_POW2): d for p, d in arms.items()}
            fixed = {p: v for p, v in at_parent.items() if p not in moved}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.sampler = optuna.samplers.PartialFixedSampler(fixed, self.base)
                trial = self.study.ask(self.dists)
                self.study.tell(trial, state=TrialState.FAIL)
            point = to_values({p: v for p, v in trial.params.items() if p in moved})
            changes = {n: _outward(current[n], v, self.dists.get(n), ways.get(n, 0)) for n, v in point.items()
                       if n in current and (current[n] != v or type(current[n]) is not type(v))}
            key = key_with(parent, changes) if changes else parent.key
            if not changes or key in tried or key in self.pending:
                continue
            self.pending.add(key)
            return Proposal(apply_changes(parent, changes), {n: (current[n], v) for n, v in changes.items()}, key)
        raise NoProposal(f"the optimizer asked {MAX_ASKS} points and every one was tried")

    def forget(self, key: str) -> None:
        """A proposal that will never run (its worker stopped): it may be proposed again."""
        self.pending.discard(key)
