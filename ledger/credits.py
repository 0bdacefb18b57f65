"""Credit rules: who may mint, how much, and how credits move. Pure functions over fold state.

Credits are outputs, as coins: a mint creates one output for its recipient; a transfer consumes
outputs of its payer (named in `spends`) and creates one for the payee and one for the change.
An escrow payment (a transfer with an offer) creates only the change: its amount is held until
a settle (ledger/market.py) creates outputs for the executor and the payer.
An output can be spent once, and only by a transfer in its owner's feed; spending it twice takes
two entries at one seq of that feed, which is a fork, so a balance never goes negative and a
double spend is always provable.

Minting is justified by entries that precede the mint in the minter's own view (the store only
accepts an entry after everything it references), and bounded by progress:
- record: a trusted verifier mints for a claim it helped verify, to the claim's author, its share
  `rate * (prev_best - value) / quorum`, where prev_best is at most the value of this verifier's
  own previous record mint in the class (its first record mints nothing). Along one verifier's
  feed the improvements telescope, so its record mints sum to at most
  rate * (its first value - its last) / quorum: credit tracks progress, and the quorum's shares
  add up to one record's worth however many verifiers the swarm has.
- verification: a trusted verifier mints the spec's fixed verify_ucr for one of its own verify
  entries, once per entry.
Each verifier mints at most once per subject.
"""
from __future__ import annotations

import math
import statistics
from ledger.bodies import Mint, Transfer
from ledger.state import State


def trusted(state: State, author: bytes, platform_class: str) -> bool:
    classes = state.verifiers.get(author)
    return classes is not None and platform_class in classes


def agreeing(values: list[float], noise: float) -> tuple[float, list[float]]:
    """The median of `values` and those within `noise` of it."""
    median = statistics.median(values)
    return median, [v for v in values if abs(v - median) <= noise]


def record_share_ucr(rate_ucr_per_bpb: int, prev_best: float, value: float, quorum: int) -> int:
    return math.floor(rate_ucr_per_bpb * (prev_best - value) / quorum)


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
        if mint.to != author:
            return "a verification mint pays the verifier"
        if state.spec.verify_ucr == 0 or mint.amount != state.spec.verify_ucr:
            return f"a verification mint is exactly {state.spec.verify_ucr} ucr"
        return ""
    claim = state.claims.get(mint.subject)
    if claim is None:
        return "a record mint must name a claim"
    if mint.subject in state.refuted:
        return "the claim's numbers did not reproduce: it was refuted"
    cls = claim.platform_class
    if not trusted(state, author, cls):
        return "minter is not a trusted verifier of the class"
    if mint.to != claim.author:
        return "a record mint pays the claim's author"
    if len(mint.quorum) < state.spec.quorum:
        return f"quorum lists {len(mint.quorum)} verifications, the swarm needs {state.spec.quorum}"
    values: list[float] = []
    authors: set[bytes] = set()
    for ref in mint.quorum:
        v = state.verifies.get(ref)
        if v is None or v.claim != mint.subject or v.value is None:
            return "a quorum item is not a successful verification of this claim"
        if not trusted(state, v.author, cls) or v.author == claim.author or v.author in authors:
            return "quorum items must come from distinct trusted verifiers other than the claimant"
        authors.add(v.author)
        values.append(v.value)
    if author not in authors:
        return "the minter must be part of the quorum"
    median, agree = agreeing(values, state.spec.noise_bpb[cls])
    if len(agree) != len(values):
        return "the quorum's verifications disagree beyond the class's noise"
    if mint.value != median:
        return f"value must be the quorum's median {median!r}"
    own_last = state.verifier_best.get((author, cls))
    prev_best = mint.prev_best
    if own_last is None:
        if prev_best is not None or mint.amount != 0:
            return "a verifier's first record in a class names no prev_best and mints nothing"
        return ""
    # A verifier may lower its baseline to a better value it learned of, never raise it: its
    # own record mints then telescope, and their sum is bounded by the progress it witnessed.
    if prev_best is None or prev_best > own_last:
        return f"prev_best must be at most this verifier's previous record value {own_last!r}"
    if median >= prev_best - state.spec.noise_bpb[cls]:
        return "not better than the previous record by more than the class's noise"
    share = record_share_ucr(state.spec.record_ucr_per_bpb, prev_best, median, state.spec.quorum)
    if mint.amount != share:
        return f"amount must be {share} ucr"
    return ""


def apply_mint(state: State, entry_id: bytes, author: bytes, mint: Mint) -> None:
    state.minted.add((author, mint.subject))
    if mint.reason == "record" and mint.value is not None:  # a record always has a value
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
