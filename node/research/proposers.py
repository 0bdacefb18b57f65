"""The proposer interface: what the research loop and the simulators ask for the next edit.

A Proposer turns the class's best program (and what is tried or running) into a Proposal, and is
told each result. Two stand behind it, selectable by name: "bandit", the built-in proposer
(node/research/proposer.py: one or two constants nudged by fixed factors, Thompson sampling over
the weighed trials it is given), kept for comparison; and "tpe", Optuna's TPE over every editable
constant (node/research/optimizer.py), which learns from the results it is told. Waves
(node/research/waves.py) and two-tier screening (node/research/screening.py) sit above either.
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Protocol

from ledger.fold import State

from node.research.history import History
from node.research.optimizer import TpeProposer
from node.research.program import Value, parse_program
from node.research.proposer import Proposal, Settings, Trial, propose

NAMES = ("bandit", "tpe")
MAX_ANCESTRY = 256      # parents walked back for one program's constants (node/research/fetch.py fetches no deeper)


class Proposer(Protocol):
    def propose(self, parent_source: str, *, trials: Sequence[Trial], tried: Set[str],
                rng: random.Random) -> Proposal: ...

    def observe(self, key: str, values: Mapping[str, Value], bpb: float | None) -> None: ...


@dataclass(slots=True)
class Bandit:
    """Today's proposer behind the interface: it reads `trials` each time and needs no telling."""

    profile: str
    settings: Settings = Settings()

    def propose(self, parent_source: str, *, trials: Sequence[Trial], tried: Set[str],
                rng: random.Random) -> Proposal:
        return propose(parent_source, profile=self.profile, trials=trials, tried=tried, rng=rng,
                       settings=self.settings)

    def observe(self, key: str, values: Mapping[str, Value], bpb: float | None) -> None:
        return None


@dataclass(slots=True)
class Tpe:
    optimizer: TpeProposer

    def propose(self, parent_source: str, *, trials: Sequence[Trial], tried: Set[str],
                rng: random.Random) -> Proposal:
        return self.optimizer.propose(parent_source, tried=tried, rng=rng, trials=trials)

    def observe(self, key: str, values: Mapping[str, Value], bpb: float | None) -> None:
        self.optimizer.observe(key, values, bpb)


def make(name: str, *, genesis_source: str, profile: str, seed: int,
         settings: Settings = Settings()) -> Proposer:
    """A proposer by name (NAMES); ValueError for another name."""
    if name == "bandit":
        return Bandit(profile, settings)
    if name == "tpe":
        return Tpe(TpeProposer(genesis_source, profile, seed, settings.frozen))
    raise ValueError(f"proposer must be one of {', '.join(NAMES)}, not {name!r}")


@dataclass(frozen=True, slots=True)
class Observation:
    claim: bytes
    key: str
    values: dict[str, Value]      # every constant of the claimed program
    bpb: float | None             # the verified median where decided, else the claimed value; None: crashed


def observations(history: History, state: State, platform_class: str, genesis_source: str,
                 told: Set[bytes], genesis_commit: bytes | None = None) -> list[Observation]:
    """The class's counted claims (node/research/memory.py) not in `told`, each with the full
    constants of its program: its parent's (walked back to the genesis program) with its changes.
    How the research loop feeds a Proposer's `observe` from the ledger; a claim whose ancestry
    leaves what this node has indexed is skipped until it does not. `genesis_commit` (the spec's
    baseline) holds the genesis constants whether or not a claim of it counts here: a joined
    node's view of the creator's unverified baseline claim weighs nothing, its program is known."""
    history.refresh(state)
    genesis = {c.name: c.value for c in parse_program(genesis_source).constants}
    memo: dict[bytes, dict[str, Value] | None] = {}

    def constants_of(commit: bytes, depth: int) -> dict[str, Value] | None:
        if commit in memo:
            return memo[commit]
        if commit == genesis_commit:
            return dict(genesis)
        ids = [i for i in history.by_commit.get(commit, []) if history.counts(i)]
        body = history.claims[ids[0]].body if ids else None
        if body is None or depth > MAX_ANCESTRY:
            found = None
        elif body.parent is None:
            found = dict(genesis)
        else:
            above = constants_of(body.parent, depth + 1)
            found = None if above is None else {**above, **{n: new for n, (_, new) in history.changes_of(ids[0])[0].items()}}
        memo[commit] = found
        return found

    out: list[Observation] = []
    for record in history.of_class(platform_class):
        if record.id in told or record.body.parent is None or not history.counts(record.id):
            continue
        values = constants_of(record.body.commit, 0)
        key = history.changes_of(record.id)[1]
        if values is None or key is None:
            continue
        out.append(Observation(record.id, key, values, state.verified.get(record.id, record.body.val_bpb)))
    return out


@dataclass(slots=True)
class Chosen:
    """The configured proposer ([research] proposer) of each (class, profile), kept told of the
    class's counted claims: how the research loop asks for its own next edit. The bandit reads the
    weighed trials afresh each time and is told nothing; a learning proposer (tpe) is told each
    counted claim once, in ledger order, just before it proposes."""

    name: str
    genesis_source: str          # the spec's baseline train.py: every program's ancestry starts here
    genesis_commit: bytes        # ... and its commit
    seed: int
    settings: Settings = Settings()
    made: dict[tuple[str, str], Proposer] = field(default_factory=dict)
    told: dict[tuple[str, str], set[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ValueError(f"proposer must be one of {', '.join(NAMES)}, not {self.name!r}")

    def propose(self, history: History, state: State, platform_class: str, profile: str, parent_source: str, *,
                tried: Set[str], rng: random.Random) -> Proposal:
        slot = (platform_class, profile)
        if slot not in self.made:
            self.made[slot] = make(self.name, genesis_source=self.genesis_source, profile=profile, seed=self.seed,
                                   settings=self.settings)
            self.told[slot] = set()
        proposer, told = self.made[slot], self.told[slot]
        if self.name != "bandit":
            for seen in observations(history, state, platform_class, self.genesis_source, told, self.genesis_commit):
                proposer.observe(seen.key, seen.values, seen.bpb)
                told.add(seen.claim)
        return proposer.propose(parent_source, trials=history.trials(state, platform_class), tried=tried, rng=rng)
