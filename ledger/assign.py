"""Sealed assignment: which trusted keys' replays count for a claim's final decision.

Theory of operation. A claimant who also holds trusted keys (or pays some) would have them replay
its claim the instant it appears, and the first quorum to agree would decide it. So the keys that
count are drawn by a value the claimant cannot know when it signs: the claim's *seal*, the entry
id of a `seal` entry that an anchor (a spec verifier or a key the creator admitted) signs later.
Among the valid seals that list a claim, the one with the smallest id is its seal: a function of
the set of seals, so arrival order cannot matter (a smaller one arriving later moves it).

The claim's *assignment* is the keys trusted in its class, its author left out, ranked by
sha256(domain || seal id || claim id || key); the first `spec.assigned` of them (0: all). Only
their replays decide the claim (ledger/facts.py) and only they earn its verification fee
(ledger/credits.py). The assignment follows trust: a key that gains trust in a class enters the
assignments where it ranks high enough, one that loses it leaves and the next-ranked key moves
up. Both are kept incrementally (a gain costs one hash per sealed claim of the class, a loss a
re-rank of the claims that key was assigned to), and equal the assignment computed afresh.

A claim without a seal has no assignment and no final decision: it waits for an anchor.
Not stopped here: an anchor that colludes with a claimant can sign seals until one ranks its
friends first (see docs/architecture.md).
"""
from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable

from ledger.state import State

RANK_DOMAIN = b"autoswarm/assign/v1\x00"
EVAL_DOMAIN = b"autoswarm/eval-rows/v1\x00"
TRAIN_DOMAIN = b"autoswarm/train-seed/v2\x00"
Flips = dict[bytes, set[bytes]]  # claim -> keys that entered or left its assignment


def may_seal(state: State, author: bytes) -> bool:
    """Only an anchor seals: a spec verifier or a key the creator admitted, for any class."""
    return bool(state.anchors.get(author))


def rank(seal_id: bytes, claim_id: bytes, key: bytes) -> bytes:
    return hashlib.sha256(RANK_DOMAIN + seal_id + claim_id + key).digest()


def assignment(state: State, claim_id: bytes) -> tuple[bytes, ...] | None:
    """The claim's assigned keys, best-ranked first; None while it has no seal."""
    if claim_id not in state.seals:
        return None
    return tuple(key for _, key in state.assigned.get(claim_id, ()))


def is_assigned(state: State, claim_id: bytes, key: bytes) -> bool:
    return claim_id in state.assigned_to.get(key, ())


def replay_eval_seed(state: State, claim_id: bytes) -> int | None:
    """The validation rows every assigned replay of the claim scores (the trainer's --eval-seed):
    drawn from its seal, so the claimant could not know them when it trained, and the same for all
    its verifiers, whose commitments to their outputs (Verify.outputs) then compare batch by batch.
    None while the claim has no seal."""
    seal_id = state.seals.get(claim_id)
    if seal_id is None:
        return None
    return int.from_bytes(hashlib.sha256(EVAL_DOMAIN + seal_id + claim_id).digest()[:8], "big") >> 1


def replay_train_seed(state: State, claim_id: bytes, key: bytes, round_index: int) -> int | None:
    """The training seed of paired round `round_index` of the claim (the trainer's --seed for both
    the candidate and its parent): drawn from the seal, so the claimant could not choose a lucky
    draw, and different per round, so rounds sample the training noise instead of repeating the
    claimant's draw. It names the parent commit, not the claim, and not the key: claims of one
    parent sealed together share their rounds' seeds, so one parent run serves them all, and two
    keys that replay one round ran one seed, so their values must agree within the class's
    tolerance (earned trust, ledger/facts.py). Which key's replay of a round is evidence is
    ledger/evidence.py's `round_owner`. `key` stays in the signature for callers; None while the
    claim has no seal."""
    seal_id = state.seals.get(claim_id)
    if seal_id is None:
        return None
    info = state.claims[claim_id]
    subject = info.parent if info.parent is not None else claim_id
    material = TRAIN_DOMAIN + seal_id + subject + round_index.to_bytes(4, "big")
    return int.from_bytes(hashlib.sha256(material).digest()[:4], "big") >> 1


def apply_seal(state: State, seal_id: bytes, author: bytes, claims: Iterable[bytes]) -> list[bytes]:
    """Folds one valid seal; returns the claims whose seal it became. A seal does not count for
    its author's own claims (it could pick its own verifiers), nor for ids that are no claim."""
    moved = []
    for claim_id in claims:
        info = state.claims.get(claim_id)
        if info is None or info.author == author:
            continue
        held = state.seals.get(claim_id)
        if held is None or seal_id < held:
            state.seals[claim_id] = seal_id
            state.changes.seals[claim_id] = seal_id
            state.sealed_in.setdefault(info.platform_class, set()).add(claim_id)
            moved.append(claim_id)
    return moved


def _pool(state: State, claim_id: bytes) -> list[bytes]:
    """The keys a claim's assignment is drawn from: trusted in its class, not its author."""
    info = state.claims[claim_id]
    return [key for key, classes in state.verifiers.items()
            if info.platform_class in classes and key != info.author]


def reseal(state: State, claim_id: bytes, flips: Flips) -> bool:
    """Ranks the claim's assignment afresh (its seal moved); True when the set of keys changed."""
    seal_id = state.seals[claim_id]
    ranked = [(rank(seal_id, claim_id, key), key) for key in _pool(state, claim_id)]
    size = state.spec.assigned
    now = sorted(ranked) if size == 0 else heapq.nsmallest(size, ranked)
    before = state.assigned.get(claim_id, [])
    changed = {k for _, k in before} ^ {k for _, k in now}
    for _, key in before:
        state.assigned_to[key].discard(claim_id)
    for _, key in now:
        state.assigned_to.setdefault(key, set()).add(claim_id)
    state.assigned[claim_id] = now
    if changed:
        flips.setdefault(claim_id, set()).update(changed)
    return bool(changed)


def retrust(state: State, key: bytes, before: frozenset[str], after: frozenset[str], flips: Flips) -> set[bytes]:
    """Moves `key` into or out of the assignments of the classes where its trust changed; returns
    the claims whose assignment changed. Call after `state.verifiers` holds its new classes."""
    moved: set[bytes] = set()
    size = state.spec.assigned
    for cls in sorted(after - before):
        for claim_id in state.sealed_in.get(cls, ()):
            if state.claims[claim_id].author == key:
                continue
            held = state.assigned.setdefault(claim_id, [])
            entry = (rank(state.seals[claim_id], claim_id, key), key)
            if size and len(held) >= size:
                if entry >= held[-1]:
                    continue
                _, out = held.pop()
                state.assigned_to[out].discard(claim_id)
                flips.setdefault(claim_id, set()).add(out)
            # the list is short (spec.assigned): a sorted insert is cheap
            held.append(entry)
            held.sort()
            state.assigned_to.setdefault(key, set()).add(claim_id)
            flips.setdefault(claim_id, set()).add(key)
            moved.add(claim_id)
    lost = before - after
    if lost:
        for claim_id in sorted(state.assigned_to.get(key, set())):
            if state.claims[claim_id].platform_class in lost:
                # the next-ranked trusted key takes its place: rank the claim afresh
                reseal(state, claim_id, flips)
                moved.add(claim_id)
    return moved
