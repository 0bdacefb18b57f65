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
from dataclasses import dataclass
from typing import Protocol

from node.research.optimizer import TpeProposer
from node.research.program import Value
from node.research.proposer import Proposal, Settings, Trial, propose

NAMES = ("bandit", "tpe")


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
