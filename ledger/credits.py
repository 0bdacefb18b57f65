"""Credit rules: who may mint, how much, and how credits move. Pure functions over fold state.

Credits are outputs, as coins: a mint creates one output for its recipient; a transfer consumes
outputs of its payer (named in `spends`) and creates one for the payee and one for the change.
An escrow payment (a transfer with an offer) creates only the change: its amount is held until
a settle (ledger/market.py) creates outputs for the executor and the payer.
An output can be spent once, and only by a transfer in its owner's feed; spending it twice takes
two entries at one seq of that feed, which is a fork, so a balance never goes negative and a
double spend is always provable.

Minting follows the facts of ledger/facts.py (trust, decisions, records), which are functions of
the set of entries, so every node that holds the same entries judges every mint the same way:
- record: one record's worth, `rate * (prev - value)` where prev is the record before it in the
  class's records table, is split evenly across the keys whose verify entries made the claim a
  record (its decision's quorum; a paired test's quorum holds each key's rounds); each of those verifiers, and no one else, mints its share once, to the
  claim's author, naming that quorum, the record's value and prev. A claim that is not a record
  in the fold mints nothing; the class's first record (prev None) is worth nothing.
- verification: a verifier assigned to the claim (ledger/assign.py) mints the spec's fixed
  verify_ucr for its own verify entry of another author's claim, once per (verifier, claim)
  however many replays it publishes. An unassigned replay, or one of an unsealed claim, earns
  nothing: a Sybil cannot farm fees by replaying claims nobody asked it to.
Each verifier mints at most once per subject.
"""
from __future__ import annotations

import math

from ledger import assign, facts
from ledger.bodies import Mint, Transfer
from ledger.state import State


def trusted(state: State, author: bytes, platform_class: str) -> bool:
    return facts.trusted(state, author, platform_class)


def agreeing(values: list[float], noise: float) -> tuple[float, list[float]]:
    """The median of `values` and those within `noise` of it."""
    return facts.agreeing(values, noise)


def record_share_ucr(rate_ucr_per_bpb: int, prev_best: float, value: float, quorum: int) -> int:
    """One quorum member's share: the record's worth, rounded down, split evenly."""
    return math.floor(rate_ucr_per_bpb * (prev_best - value)) // quorum


def record_mint(state: State, verifier: bytes, claim_id: bytes) -> tuple[Mint | None, str]:
    """The one record mint `verifier` may publish for `claim_id` now, or why there is none."""
    row, decision = state.record_of.get(claim_id), state.decisions.get(claim_id)
    if row is None or decision is None:
        return None, "not a record"
    amount = 0 if row.prev is None else record_share_ucr(
        state.spec.record_ucr_per_bpb, row.prev, row.value, _members(state, decision.quorum))
    mint = Mint(reason="record", subject=claim_id, quorum=list(decision.quorum), to=row.author, amount=amount,
                value=row.value, prev_best=row.prev)
    why = check_mint(state, verifier, mint)
    return (None, why) if why else (mint, "")


def _members(state: State, quorum: tuple[bytes, ...]) -> int:
    """The keys that share a record: a paired test's quorum holds several rounds of one key
    (ledger/evidence.py), and each key mints once, so the worth is split by keys, not rounds."""
    return len({state.verifies[vid].author for vid in quorum})


def check_mint(state: State, author: bytes, mint: Mint) -> str:
    """"" if `author` may mint `mint` now, else the reason it may not."""
    if (author, mint.subject) in state.minted:
        return "this verifier already minted for this subject"
    if mint.reason == "verification":
        verify = state.verifies.get(mint.subject)
        if verify is None or verify.author != author:
            return "a verification mint must name the minter's own verify entry"
        if not trusted(state, author, verify.platform_class):
            return "minter is not a trusted verifier of the class"
        claim = state.claims.get(verify.claim)
        if claim is None or claim.author == author:
            return "a verifier earns no fee for replaying its own claim"
        if not assign.is_assigned(state, verify.claim, author):
            return "a verification fee is paid only to a verifier the claim's seal assigned"
        if (author, verify.claim) in state.fees:
            return "this verifier was already paid a fee for this claim"
        if mint.to != author:
            return "a verification mint pays the verifier"
        if state.spec.verify_ucr == 0 or mint.amount != state.spec.verify_ucr:
            return f"a verification mint is exactly {state.spec.verify_ucr} ucr"
        return ""
    claim = state.claims.get(mint.subject)
    if claim is None:
        return "a record mint must name a claim"
    # First, what does not depend on other keys' entries: a key whose trusted replay the claim's
    # decision never read gets this one reason in every order, and cannot make the fold rebuild.
    if author not in state.measured.get(mint.subject, {}):
        return "only the verifiers of the quorum that made the claim a record mint for it (no trusted replay read)"
    if mint.subject in state.refuted:
        return "the claim's numbers did not reproduce: it was refuted"
    row, decision = state.record_of.get(mint.subject), state.decisions.get(mint.subject)
    if row is None or decision is None:
        return "the claim is not a record in the fold"
    if author not in {state.verifies[vid].author for vid in decision.quorum}:
        return "only the verifiers of the quorum that made the claim a record mint for it"
    if mint.to != claim.author:
        return "a record mint pays the claim's author"
    if sorted(mint.quorum) != sorted(decision.quorum):
        return "quorum must list exactly the verifications that made the claim a record"
    if mint.value != row.value:
        return f"value must be the record's value {row.value!r}"
    if mint.prev_best != row.prev:
        return f"prev_best must be the previous record's value {row.prev!r}"
    share = 0 if row.prev is None else record_share_ucr(
        state.spec.record_ucr_per_bpb, row.prev, row.value, _members(state, decision.quorum))
    if mint.amount != share:
        return f"amount must be {share} ucr"
    return ""


def apply_mint(state: State, entry_id: bytes, author: bytes, mint: Mint) -> None:
    state.minted.add((author, mint.subject))
    if mint.reason == "verification":
        state.fees.add((author, state.verifies[mint.subject].claim))
    elif mint.value is not None:  # a record always has a value
        state.verifier_best[(author, state.claims[mint.subject].platform_class)] = mint.value
    if mint.amount:
        state.outputs[(entry_id, mint.to)] = mint.amount
        credit(state, mint.to, mint.amount)
        state.total_minted_ucr += mint.amount


def check_transfer(state: State, payer: bytes, transfer: Transfer) -> str:
    """"" if `payer` may spend as `transfer` says; the market's own rules for an escrow payment
    (one with an offer) are ledger/market.py's check_escrow, which the fold asks as well."""
    if transfer.to == payer:
        return "a transfer to oneself"
    total = 0
    for ref in transfer.spends:
        key = (ref, payer)
        if key in state.spent:
            return "spends an output that is already spent"
        amount = state.outputs.get(key)
        if amount is None:
            return "spends an entry that holds no output of the payer"
        total += amount
    if total < transfer.amount:
        return f"spends {total} ucr, short of {transfer.amount}"
    return ""


def apply_transfer(state: State, entry_id: bytes, payer: bytes, transfer: Transfer) -> None:
    total = 0
    for ref in transfer.spends:
        key = (ref, payer)
        total += state.outputs.pop(key)
        state.spent.add(key)
    change = total - transfer.amount
    if change:
        state.outputs[(entry_id, payer)] = change
    credit(state, payer, -transfer.amount)
    if transfer.offer is None:
        state.outputs[(entry_id, transfer.to)] = transfer.amount
        credit(state, transfer.to, transfer.amount)
    # else an escrow payment: the amount is held, not owned, until a settle releases it (ledger/market.py)


def credit(state: State, owner: bytes, delta_ucr: int) -> None:
    balance = state.balances.get(owner, 0) + delta_ucr
    # A zero balance is no balance: the fold keeps none (so a rebuild and an incremental fold
    # agree), while the change still writes the 0 over the row the file holds.
    if balance:
        state.balances[owner] = balance
    else:
        state.balances.pop(owner, None)
    state.changes.balances[owner] = balance
