"""Verification decisions: which claims to re-run, and which mints a verify entry justifies.

Pure functions of the fold's state and the history index: no IO, no clock. The research loop
(node/research.py) runs the replays and publishes what these functions return.

Which claims: successful claims of the verifier's class that no agreed value exists for yet, that
this verifier has not re-run, not its own, and that could matter: before anything is verified
every one, afterwards only claims whose own number beats the class's best by more than the
noise (anything else cannot become a record, so re-running it buys nothing). The baseline first,
then the most promising. Mints are built to the credit rules of ledger/credits.py and checked
with its own `check_mint` before they are published, so the node never signs a mint the fold
would refuse.
"""
from __future__ import annotations

import statistics

from ledger import credits
from ledger.bodies import Mint
from ledger.fold import State

from node.history import ClaimRecord, History

# A replay whose training took longer than budget x slack + grace does not fit the class. Coarse on
# purpose: it catches step counts no machine of the class could run in the budget, while timing on a
# shared machine jitters by several times for tiny budgets (hence the fixed grace).
REPLAY_FIT_SLACK = 1.5
REPLAY_FIT_GRACE_S = 10.0


def verification_queue(state: State, history: History, verifier: bytes, platform_class: str,
                       skip: set[bytes], own: frozenset[bytes] = frozenset()) -> list[ClaimRecord]:
    """Claims worth this verifier's replay, best first. `own`: authors it must not vouch for
    (the node's own research key, once another trusted verifier can do it instead)."""
    if not credits.trusted(state, verifier, platform_class):
        return []
    mine = {v.claim for v in state.verifies.values() if v.author == verifier}
    best = state.best.get(platform_class)
    noise = state.spec.noise_bpb.get(platform_class, 0.0)
    queue = []
    for record in history.of_class(platform_class):
        body = record.body
        if (record.id in state.verified or record.id in mine or record.id in skip or record.author == verifier
                or record.author in own):
            continue
        if body.status != "ok" or body.val_bpb is None or body.num_steps < 1:
            continue
        if best is not None and not body.val_bpb < best - noise:
            continue
        queue.append(record)
    return sorted(queue, key=lambda r: (r.body.parent is not None, r.body.val_bpb, r.time_ms, r.id))


def fits_budget(training_s: float, budget_s: int) -> bool:
    """The verifier's check that the claimed steps fit the class's time budget on its own hardware."""
    return training_s <= budget_s * REPLAY_FIT_SLACK + REPLAY_FIT_GRACE_S


def quorum_of(state: State, claim_id: bytes) -> list[bytes]:
    """Each trusted verifier's first successful verify entry of the claim, in fold order."""
    claim = state.claims[claim_id]
    seen: set[bytes] = set()
    out = []
    for vid, v in state.verifies.items():
        if (v.claim == claim_id and v.value is not None and v.author not in seen and v.author != claim.author
                and credits.trusted(state, v.author, claim.platform_class)):
            seen.add(v.author)
            out.append(vid)
    return out


def record_mint(state: State, verifier: bytes, claim_id: bytes) -> tuple[Mint | None, str]:
    """The record mint this verifier may publish for a verified record claim, or why there is none."""
    if claim_id not in state.verified:
        return None, "not verified"
    if not any(r.claim == claim_id for r in state.records):
        return None, "verified, not a record"
    quorum = quorum_of(state, claim_id)
    values = [v for vid in quorum if (v := state.verifies[vid].value) is not None]
    if not values:
        return None, "no successful verification"
    value = float(statistics.median(values))
    claim = state.claims[claim_id]
    prev = state.verifier_best.get((verifier, claim.platform_class))
    amount = 0 if prev is None else credits.record_share_ucr(state.spec.record_ucr_per_bpb, prev, value,
                                                               state.spec.quorum)
    mint = Mint(reason="record", subject=claim_id, quorum=quorum, to=claim.author, amount=max(0, amount),
                value=value, prev_best=prev)
    why = credits.check_mint(state, verifier, mint)
    return (None, why) if why else (mint, "")


def verification_mint(state: State, verifier: bytes, verify_id: bytes) -> Mint | None:
    """The fee for one of this verifier's own verify entries, where the swarm pays one."""
    if state.spec.verify_ucr <= 0:
        return None
    mint = Mint(reason="verification", subject=verify_id, quorum=[], to=verifier, amount=state.spec.verify_ucr,
                value=None, prev_best=None)
    return None if credits.check_mint(state, verifier, mint) else mint



def owed_records(state: State, verifier: bytes) -> list[bytes]:
    """Record claims this verifier helped verify but has not minted for, in record order.

    A stop between a verify entry and its mint leaves these; publishing them in record order
    gives each the prev_best it would have had if the node had never stopped.
    """
    return [row.claim for row in state.records
            if (verifier, row.claim) not in state.minted
            and any(state.verifies[vid].author == verifier for vid in quorum_of(state, row.claim))]


def owed_fees(state: State, verifier: bytes) -> list[Mint]:
    """Verification fees for this verifier's own verify entries that were never minted."""
    fees = [verification_mint(state, verifier, vid) for vid, v in state.verifies.items()
            if v.author == verifier and (verifier, vid) not in state.minted]
    return [fee for fee in fees if fee is not None]
