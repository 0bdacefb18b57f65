"""An author's standing: what its claims came to, and whether its further claims deserve replays.

Pure: a function of the fold's state, which is itself a function of the set of entries
(ledger/facts.py), so every node holding the same entries bars the same authors, whatever order
they arrived in. Knows nothing of the verifier's queue; node/research/verifier.py reads it.

Theory of operation. A claim costs its author one run and each verifier another. Without a cost
on the author's side, a key can post claims that do not reproduce and spend the swarm's GPUs for
free. Here every claim the trusted verifiers decided counts for or against its author:

- *verified*: a quorum's median agreed with the claimed value;
- *refuted*: a quorum agreed on a value off the claimed one by more than the noise;
- *disputed*: not decided, but the median of its trusted replays so far is off the claimed value
  by more than the noise. Verifiers stop replaying such a claim after the first disagreeing replay
  (node/research/verifier.py `settled`: the rest of a quorum would buy nothing), so with a quorum
  above one a lie is never *refuted* by the fold; this is the evidence the swarm acts on;
- *unreproduced*: at least a quorum of trusted verifiers replayed it and every replay failed
  (crash, timeout, steps that do not fit), and none succeeded.

An author whose strikes (refuted + disputed + unreproduced) exceed its verified claims by more than
`margin` is *barred*: verifiers do not replay its open claims, so they stay unverified and mint
nothing. A fork-frozen key is barred too. Verified claims are costly to farm (only claims that
beat the class's best are replayed, and one program is verified once), so an author cannot buy
its way back cheaply; a barred key is in effect spent, and a new key starts with `margin` strikes
to lose. What an honest author risks: a claim whose replay lands off its number by more than the
class's noise; with that tolerance and bit-identical replays of one seed, it takes `margin` + 1
such claims more than it ever had verified.

Counts are functions of the verify entries, the decisions and the keys' trust, all of them set
functions, so the standing is too (tests/ledger/test_absurd.py folds shuffled histories).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from ledger import facts
from ledger.state import State

STRIKE_MARGIN = 3   # strikes beyond an author's verified claims that it may have and still be replayed


@dataclass(frozen=True, slots=True)
class Standing:
    verified: int = 0
    refuted: int = 0
    disputed: int = 0
    unreproduced: int = 0

    @property
    def strikes(self) -> int:
        return self.refuted + self.disputed + self.unreproduced

    def barred(self, margin: int = STRIKE_MARGIN) -> bool:
        return self.strikes - self.verified > margin


def open_strikes(state: State) -> tuple[set[bytes], set[bytes]]:
    """Undecided claims that are (disputed, unreproduced) by their trusted replays, each trusted
    verifier (not the author) counted once: its first successful replay, by its own feed's seq."""
    ok: dict[bytes, dict[bytes, tuple[int, float]]] = {}   # claim -> verifier -> (seq, value)
    failed: dict[bytes, set[bytes]] = {}
    for v in state.verifies.values():
        claim = state.claims.get(v.claim)
        if claim is None or v.author == claim.author or v.claim in state.decisions:
            continue
        if v.platform_class != claim.platform_class or not facts.trusted(state, v.author, claim.platform_class):
            continue
        if v.value is None:
            failed.setdefault(v.claim, set()).add(v.author)
            continue
        if v.paired:
            # a fresh-seed replay differs from the claimant's run by training noise, not by a lie;
            # a paired test's refutation reaches state.refuted (ledger/evidence.py)
            continue
        held = ok.setdefault(v.claim, {}).get(v.author)
        if held is None or (v.seq, v.value) < held:  # the value breaks a forked verifier's tie
            ok[v.claim][v.author] = (v.seq, v.value)
    disputed = set()
    for claim_id, by in ok.items():
        claim = state.claims[claim_id]
        median = statistics.median(value for _, value in by.values())
        if claim.claimed is None or abs(median - claim.claimed) > state.spec.noise_bpb[claim.platform_class]:
            disputed.add(claim_id)
    unreproduced = {c for c, keys in failed.items() if len(keys) >= state.spec.quorum and c not in ok}
    return disputed, unreproduced


def standings(state: State) -> dict[bytes, Standing]:
    """Every author with a decided, disputed or unreproduced claim, and its counts."""
    counts: dict[bytes, list[int]] = {}
    for kind, claims in enumerate((state.verified, state.refuted, *open_strikes(state))):
        for claim_id in claims:
            author = state.claims[claim_id].author
            counts.setdefault(author, [0, 0, 0, 0])[kind] += 1
    return {author: Standing(*c) for author, c in counts.items()}


def standing(state: State, author: bytes) -> Standing:
    return standings(state).get(author, Standing())


def barred_authors(state: State, margin: int = STRIKE_MARGIN) -> frozenset[bytes]:
    """Authors whose open claims no verifier should replay: too many strikes, or a forked feed."""
    barred = {author for author, s in standings(state).items() if s.barred(margin)}
    return frozenset(barred | set(state.frozen))
