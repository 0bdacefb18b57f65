"""Sealed assignment: which trusted keys' replays count for a claim's final decision.

Theory of operation. A claimant who also holds trusted keys (or pays some) would have them replay
its claim the instant it appears, and the first quorum to agree would decide it. So the keys that
count are drawn by a value the claimant cannot know when it signs: the claim's *seal*, the entry
id of a `seal` entry that an anchor (a spec verifier or a key the creator admitted) signs later.
Among the valid seals that list a claim, the one with the smallest id is its seal: a function of
the set of seals, so arrival order cannot matter (a smaller one arriving later moves it).

The claim's *assignment* is drawn from the keys trusted in its class, its author left out, each
ranked by sha256(domain || seal id || claim id || key), in two parts:
- at most `quorum - 1` *earned* keys (trusted keys that are no spec verifier), the best-ranked;
- the best-ranked spec verifiers for the rest of `spec.assigned` slots (0: every trusted key).
(Where no key earns trust, spec.trust_replays = 0, all slots are open to every trusted key.)
So no quorum of a claim's assigned keys is made of earned keys alone: a colluding minority that
earned trust honestly and then vouches for its own claims meets a spec verifier's replay in every
decision (scripts/sim_collude.py measures what it would mint without the cap). The part is fixed
by the spec, not by admissions: a key's part never changes while it stays trusted, so the
assignment follows trust changes alone (an admitted key is an earned one here; docs/architecture.md).
When no spec verifier but the author exists, every slot is open to earned keys (the cap needs one).
Only the assigned keys' replays decide the claim (ledger/facts.py) and only they earn its
verification fee (ledger/credits.py). The assignment follows trust: a key that gains trust in a
class enters the assignments where it ranks high enough, one that loses it leaves and the
next-ranked key moves up. Both are kept incrementally (a gain costs one hash per sealed claim of
the class, a loss a re-rank of the claims that key was assigned to), and equal the assignment
computed afresh.

A claim without a seal has no assignment and no final decision: it waits for an anchor.
Not stopped here (docs/architecture.md): an anchor that colludes with a claimant can sign seals
until one ranks its friends first; an earned key's vouch still pulls a quorum-2 median by up to a
noise (the cap keeps a spec verifier in the quorum, not a majority of them); and a key that earns
trust after a claim's seal can displace an assigned earned key that already replayed it, voiding
that key's fee: the fold re-ranks only on a seal or a change of trusted classes, so a fix needs
the seal to carry its pool or the fold to re-rank when a key's earning time moves.
"""
from __future__ import annotations

import hashlib
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
    Like `replay_train_seed` it names the parent, not the claim: claims of one parent sealed
    together are scored on the same rows, so one parent run serves all of their paired rounds (a
    parent run is kept per seed and rows, node/research/runs.py). A baseline's rows name the claim.
    None while the claim has no seal."""
    seal_id = state.seals.get(claim_id)
    if seal_id is None:
        return None
    info = state.claims[claim_id]
    subject = info.parent if info.parent is not None else claim_id
    return int.from_bytes(hashlib.sha256(EVAL_DOMAIN + seal_id + subject).digest()[:8], "big") >> 1


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


def _earned_cap(state: State, claim_id: bytes) -> int:
    """How many of the claim's slots keys that are no spec verifier may hold: quorum - 1 where keys
    earn trust; all where none does (spec.trust_replays = 0: every trusted key is the creator's
    choice) or no spec verifier but the author exists (the cap would leave the claim undecidable)."""
    author = state.claims[claim_id].author
    if state.spec.trust_replays and any(key != author for key in state.spec.verifiers):
        return state.spec.quorum - 1
    return state.spec.assigned or len(state.verifiers)


def _ranked(state: State, claim_id: bytes) -> list[tuple[bytes, bytes]]:
    """The claim's assignment afresh, sorted by rank (see the module doc)."""
    seal_id, spec_keys = state.seals[claim_id], set(state.spec.verifiers)
    ranked = sorted((rank(seal_id, claim_id, key), key) for key in _pool(state, claim_id))
    earned = [r for r in ranked if r[1] not in spec_keys][:_earned_cap(state, claim_id)]
    size = state.spec.assigned
    fixed = [r for r in ranked if r[1] in spec_keys]
    if size:
        fixed = fixed[:max(0, size - len(earned))]
    return sorted(earned + fixed)


def reseal(state: State, claim_id: bytes, flips: Flips) -> bool:
    """Ranks the claim's assignment afresh (its seal moved); True when the set of keys changed."""
    now = _ranked(state, claim_id)
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


def _enter(state: State, claim_id: bytes, key: bytes, flips: Flips) -> bool:
    """Puts a key that gained trust into one claim's assignment where it ranks high enough; True
    when it entered. Spec verifiers never gain or lose trust (they are anchors of every class), so
    the key is an earned one: it takes an earned slot, from the worst-ranked earned key when they
    are all taken, else from the worst-ranked spec verifier when the assignment is full."""
    held = state.assigned.setdefault(claim_id, [])
    entry = (rank(state.seals[claim_id], claim_id, key), key)
    spec_keys = set(state.spec.verifiers)
    earned = [r for r in held if r[1] not in spec_keys]
    out: bytes | None = None
    if len(earned) >= _earned_cap(state, claim_id):
        if not earned or entry >= earned[-1]:
            return False
        out = earned[-1][1]
    elif state.spec.assigned and len(held) >= state.spec.assigned:
        fixed = [r for r in held if r[1] in spec_keys]
        if not fixed:
            return False  # a full assignment of earned keys: the cap is the spec's size
        out = fixed[-1][1]
    if out is not None:
        held[:] = [r for r in held if r[1] != out]
        state.assigned_to[out].discard(claim_id)
        flips.setdefault(claim_id, set()).add(out)
    # the list is short (spec.assigned): a sorted insert is cheap
    held.append(entry)
    held.sort()
    state.assigned_to.setdefault(key, set()).add(claim_id)
    flips.setdefault(claim_id, set()).add(key)
    return True


def retrust(state: State, key: bytes, before: frozenset[str], after: frozenset[str], flips: Flips) -> set[bytes]:
    """Moves `key` into or out of the assignments of the classes where its trust changed; returns
    the claims whose assignment changed. Call after `state.verifiers` holds its new classes."""
    moved: set[bytes] = set()
    for cls in sorted(after - before):
        for claim_id in state.sealed_in.get(cls, ()):
            if state.claims[claim_id].author != key and _enter(state, claim_id, key, flips):
                moved.add(claim_id)
    lost = before - after
    if lost:
        for claim_id in sorted(state.assigned_to.get(key, set())):
            if state.claims[claim_id].platform_class in lost:
                # the next-ranked trusted key takes its place: rank the claim afresh
                reseal(state, claim_id, flips)
                moved.add(claim_id)
    return moved
