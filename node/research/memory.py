"""How much each claim in the ledger may teach the proposer: weights and keys that fake claims cannot move.

Pure: the fold's state and claim records in, weights out. No IO, no clock.

Theory of operation. A claim is a signed statement that costs its author nothing to make: no GPU
time stands behind a crash claim or an unverified number, and identities are free. If every claim
counted, a flood of fake claims naming every edit the proposer would make ("tried, crashed") stops
research swarm-wide. So evidence is weighed by what stands behind it:
  - our own claims: we ran them and wrote their summaries from the code (weight 1);
  - a claim the swarm's trusted verifiers decided: verified (weight 1, at the agreed median) or
    refuted (weight 0: its numbers did not reproduce);
  - an unverified claim of an author with *standing* (at least one verified, unrefuted claim:
    GPU work the swarm checked) counts a little (UNVERIFIED_WEIGHT), and only its first
    UNVERIFIED_PER_VERIFIED claims per verified one, so even a proven author cannot flood;
  - everything else counts nothing: it neither blocks a key nor moves an arm.
What a claim changed comes, where the node holds the git objects, from the code (the constants
diff of the commit against its parent: node/research/history.py derives it); the claimant's free
text is used only for claims that already count, and a claim whose text disagrees with its own
code counts nothing.
"""
from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass

from ledger.fold import State

UNVERIFIED_WEIGHT = 0.25       # an unverified claim of an author with standing, against a verified one's 1
UNVERIFIED_PER_VERIFIED = 32   # unverified claims that count per verified claim of their author


@dataclass(frozen=True, slots=True)
class Counted:
    """One claim as the rules see it."""

    id: bytes
    author: bytes
    seq: int
    own: bool         # published by this node
    lying: bool       # its diff summary disagrees with the code we hold


def standing(state: State) -> dict[bytes, int]:
    """author -> how many of its claims the trusted verifiers verified (refuted ones excluded)."""
    out: dict[bytes, int] = {}
    for claim_id in state.verified:
        info = state.claims.get(claim_id)
        if info is not None and claim_id not in state.refuted:
            out[info.author] = out.get(info.author, 0) + 1
    return out


def weights(state: State, claims: Iterable[Counted]) -> dict[bytes, float]:
    """claim id -> its weight as evidence (0: none); every claim given gets an entry."""
    ranks = standing(state)
    used: dict[bytes, int] = {}
    out: dict[bytes, float] = {}
    for claim in sorted(claims, key=lambda c: (c.author, c.seq, c.id)):
        if claim.lying or claim.id in state.refuted:
            out[claim.id] = 0.0
        elif claim.own or claim.id in state.verified:
            out[claim.id] = 1.0
        else:
            verified = ranks.get(claim.author, 0)
            n = used.get(claim.author, 0)
            if verified and n < UNVERIFIED_PER_VERIFIED * verified:
                used[claim.author] = n + 1
                out[claim.id] = UNVERIFIED_WEIGHT
            else:
                out[claim.id] = 0.0
    return out


def token(state: State, own: Set[bytes], lying: Set[bytes], claims: int) -> tuple[int, int, int, int, int]:
    """Changes whenever a weight may have changed: recompute then, not on every look."""
    return len(state.verified), len(state.refuted), len(own), len(lying), claims
