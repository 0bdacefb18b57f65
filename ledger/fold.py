"""The fold: a pure function from the ledger's entries to its derived state.

    state = initial(spec); for entry in rows: state = apply(state, entry)

No SQLite, no asyncio, no clock: the store calls `apply` inside its write transaction and
persists `take_changes(state)` to the derived tables; the audit calls `rebuild` on the rows
and compares `tables(state)` with what the file holds.

`apply` advances the state it is given (the caller owns it) and returns it. Entries arrive in
row order, each after its dependencies (feed predecessor and body references), which the store
guarantees.

One truth on every node: the derived tables depend only on the set of entries. Claims, verifies
and admits feed the facts of ledger/facts.py (trust, decisions, records), each a function of the
set. Judged entries (mints, transfers, the market) are judged against those facts. When a fact
moves after a judged entry read it — a key gains or loses trust after it minted, a record row a
mint named changes, a fork proof voids entries that already counted — `state.needs_rebuild` is
set and the caller runs `rebuild`, which reads fork proofs first, then every fact-bearing entry,
then judges the rest in row order against the final facts. A market settle applied before a
rival that beats it (ledger/market.py) also asks for a rebuild, which folds again with the
losers known until none is beaten after it was applied. Honest traffic rarely needs it: facts
move for old judged entries only when trust changes or replays arrive out of their time order.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence

from ledger import assign, codec, credits, facts, market
from ledger.bodies import Admit, Claim, Fraud, Job, Mint, Offer, Receipt, Seal, Settle, Transfer, Verify
from ledger.entry import Entry
from ledger.errors import InvalidEntry
from ledger.feed import check_fraud
from ledger.spec import SwarmSpec
from ledger.state import Changes, ClaimInfo, RecordRow, State, Tables, VerifyInfo

__all__ = ["Changes", "ClaimInfo", "RecordRow", "State", "Tables", "VerifyInfo", "apply", "apply_or_rebuild", "initial", "rebuild"]

# Kinds whose validity the fold judges; their verdicts are a derived table.
JUDGED_KINDS = frozenset({"mint", "transfer", "admit", "fraud", "job", "receipt", "settle", "seal"})
# Kinds that make facts (ledger/facts.py); a rebuild folds all of them before any other kind.
FACT_KINDS = frozenset({"claim", "verify", "admit", "fraud", "seal"})


def initial(spec: SwarmSpec) -> State:
    every_class = frozenset(spec.platform_classes)
    return State(
        spec=spec,
        # the spec's payload is canonical, so its hash is the swarm id without the signature
        swarm_id=hashlib.sha256(codec.encode(spec.to_map())).digest(),
        verifiers={key: every_class for key in spec.verifiers},
        anchors={key: every_class for key in spec.verifiers},
    )


def apply(state: State, entry: Entry) -> State:
    """Advances `state` by one entry whose dependencies were all applied before it."""
    body = entry.body
    if isinstance(body, Fraud):
        _apply_fraud(state, entry, body)  # a proof proves whoever carries it, frozen or not
        return state
    frozen_at = state.frozen.get(entry.author)
    if frozen_at is not None and entry.seq >= frozen_at:
        # A forked author's entries from the fork on count for nothing, whichever branch we hold.
        if entry.kind in JUDGED_KINDS:
            _verdict(state, entry, "author is frozen by a fork proof")
        return state
    effect = True
    if isinstance(body, Claim):
        state.claims[entry.id] = ClaimInfo(entry.author, entry.seq, entry.time_ms, body.commit,
                                           body.platform_class, body.val_bpb, body.parent)
    elif isinstance(body, Verify):
        _apply_verify(state, entry, body)
    elif isinstance(body, Mint):
        state.judged_authors.add(entry.author)
        if body.reason == "record":
            state.mint_claims.setdefault(body.subject, set()).add(entry.author)
        elif (fee_of := state.verifies.get(body.subject)) is not None:
            state.fee_claims.setdefault(fee_of.claim, set()).add(entry.author)  # it reads the assignment
        effect = _judge(state, entry, credits.check_mint(state, entry.author, body))
        if effect:
            credits.apply_mint(state, entry.id, entry.author, body)
    elif isinstance(body, Transfer):
        reason = credits.check_transfer(state, entry.author, body)
        if not reason and body.offer is not None:
            reason = market.check_escrow(state, entry.author, body)
        effect = _judge(state, entry, reason)
        if effect:
            credits.apply_transfer(state, entry.id, entry.author, body)
            if body.offer is not None:
                market.apply_escrow(state, entry.id, entry.author, body)
    elif isinstance(body, Job):
        effect = _judge(state, entry, market.check_job(state, entry.time_ms, body))
        if effect:
            market.apply_job(state, entry.id, entry.author, entry.time_ms, body)
    elif isinstance(body, Offer):
        effect = market.apply_offer(state, entry.id, entry.author, entry.time_ms, body)
    elif isinstance(body, Receipt):
        effect = _judge(state, entry, market.check_receipt(state, entry.author, body))
        if effect:
            market.apply_receipt(state, entry.id, entry.author, body)
    elif isinstance(body, Settle):
        state.judged_authors.add(entry.author)  # a verifier's settle reads its trust
        effect = _judge(state, entry, market.check_settle(state, entry.id, entry.author, entry.time_ms, body))
        market.note_settle(state, entry.author, body, state.verdicts[entry.id])  # kept whatever the verdict
        if effect:
            market.apply_settle(state, entry.id, entry.author, body)
    elif isinstance(body, Admit):
        effect = _judge(state, entry, "" if entry.author == state.spec.creator else "only the swarm's creator admits")
        if effect:
            known = state.anchors.get(body.verifier, frozenset())
            state.anchors[body.verifier] = known | frozenset(body.platform_classes)
            sealed = []
            if assign.may_seal(state, body.verifier):
                # seals it signed before it was an anchor count now, as if the admit had come first
                for seal_id, claims in state.waiting_seals.pop(body.verifier, []):
                    state.verdicts[seal_id] = state.changes.verdicts[seal_id] = ""
                    sealed += assign.apply_seal(state, seal_id, body.verifier, claims)
            _moved(state, facts.refresh(state, anchors=[body.verifier], sealed=sealed))
    elif isinstance(body, Seal):
        effect = _judge(state, entry, "" if assign.may_seal(state, entry.author) else "only an anchor seals claims")
        if effect:
            _moved(state, facts.refresh(state, sealed=assign.apply_seal(state, entry.id, entry.author, body.claims)))
        else:
            state.waiting_seals.setdefault(entry.author, []).append((entry.id, tuple(body.claims)))
    else:
        effect = False  # profile, post, hypothesis, insight: no derived state
    if effect or entry.kind in JUDGED_KINDS:
        # a verdict is state too: a later fork proof must turn it into "frozen" by a rebuild
        # the highest such seq: rebuild applies an author's facts before its other entries, out of seq order
        state.effect_seq[entry.author] = max(state.effect_seq.get(entry.author, 0), entry.seq)
    return state


def apply_or_rebuild(state: State, entry: Entry, history: Sequence[Entry]) -> State:
    """`apply`, then `rebuild` from `history` (every entry applied so far, `entry` last) when the fold
    asks for it: for in-memory folds (simulators, tools) that do what the store's writer does."""
    apply(state, entry)
    return rebuild(state.spec, history) if state.needs_rebuild else state


def _judge(state: State, entry: Entry, reason: str) -> bool:
    _verdict(state, entry, reason)
    return not reason


def _verdict(state: State, entry: Entry, reason: str) -> None:
    state.verdicts[entry.id] = reason
    state.changes.verdicts[entry.id] = reason


def _apply_verify(state: State, entry: Entry, body: Verify) -> None:
    info = VerifyInfo(entry.author, body.claim, body.platform_class, body.val_bpb, body.commit, entry.seq,
                      entry.time_ms, body.round_index, body.parent_val_bpb)
    state.verifies[entry.id] = info
    claim = state.claims.get(body.claim)
    if body.val_bpb is None or claim is None or body.commit != claim.commit:
        return  # a failed replay, or one of another commit, counts for nothing but its fee
    if info.paired:
        _apply_paired(state, entry, info, claim)
        return
    if (entry.author, body.claim) in state.replayed_ok:
        return  # only a verifier's first successful replay of a claim counts: a flood costs O(1) each
    state.replayed_ok.add((entry.author, body.claim))
    state.verifies_of.setdefault(body.claim, []).append(entry.id)
    state.verified_by.setdefault(entry.author, set()).add(body.claim)
    # an untrusted key's replay changes no decision, only (perhaps) its own earned trust: O(1)
    dirty = [body.claim] if facts.trusted(state, entry.author, claim.platform_class) else []
    _moved(state, facts.refresh(state, claims=dirty, replays=[(entry.author, body.claim)]))


def _apply_paired(state: State, entry: Entry, info: VerifyInfo, claim: ClaimInfo) -> None:
    """A paired replay (ledger/evidence.py): each (key, claim, round) counts once, its first by the
    key's own feed; whose round is evidence, and whose a same-seed replication, is evidence.py's."""
    if claim.parent is None or info.platform_class != claim.platform_class:
        return  # a baseline has no parent to pair with; another class's run measures another thing
    mark = (entry.author, info.claim + info.round_index.to_bytes(2, "big"))
    if mark in state.replayed_ok:
        return  # a flood of one round costs O(1) each
    state.replayed_ok.add(mark)
    state.paired_of.setdefault(info.claim, []).append(entry.id)
    state.paired_in.setdefault(claim.platform_class, set()).add(info.claim)
    state.verified_by.setdefault(entry.author, set()).add(info.claim)
    # the same-seed votes of every key that replayed this claim may move (earned trust, ledger/facts.py)
    authors = sorted({state.verifies[vid].author for vid in state.paired_of[info.claim]})
    _moved(state, facts.refresh(state, replays=[(a, info.claim) for a in authors], paired=[entry.id]))


def _moved(state: State, moved: facts.Moved) -> None:
    """Rebuilds when a fact that a judged entry already read has moved (see the module doc)."""
    if moved.rows_rewritten or moved.trust & state.judged_authors:
        state.needs_rebuild = True
        return
    for claim_id, keys in moved.assigned.items():
        if keys & state.fee_claims.get(claim_id, set()):
            state.needs_rebuild = True  # a fee was judged on the assignment before it moved
            return
    for claim_id, readers in moved.readers.items():
        if readers & state.mint_claims.get(claim_id, set()):
            state.needs_rebuild = True
            return


def _apply_fraud(state: State, entry: Entry, body: Fraud) -> None:
    try:
        author, seq = check_fraud(body, swarm=state.swarm_id)
    except InvalidEntry as exc:
        _verdict(state, entry, f"not a fork proof: {exc}")
        return
    _verdict(state, entry, "")
    if author in state.frozen and state.frozen[author] <= seq:
        return
    state.frozen[author] = seq
    state.changes.frozen[author] = seq
    if state.effect_seq.get(author, 0) >= seq:
        state.needs_rebuild = True  # entries that now count for nothing already changed state


def rebuild(spec: SwarmSpec, entries: Iterable[Entry]) -> State:
    """Folds from scratch, reading fork proofs first so forked feeds never count.

    `entries` is iterated twice: pass a sequence or a re-iterable view; a one-shot iterator is
    materialized.
    """
    if isinstance(entries, Iterator):
        entries = list(entries)
    losers: dict[bytes, str] = {}
    while True:  # once more per round of market settles beaten after they were applied: rarely any
        state = _fold_set(spec, entries, losers)
        if not state.displaced:
            return state
        losers.update(market.losers_of(state))  # each round adds losers: at most as many rounds as settles


def _fold_set(spec: SwarmSpec, entries: Iterable[Entry], losers: dict[bytes, str]) -> State:
    state = initial(spec)
    state.losers = dict(losers)
    for entry in entries:
        if isinstance(entry.body, Fraud):
            _apply_fraud(state, entry, entry.body)
    state.verdicts.clear()
    # facts first, so every judged entry reads the facts of the whole set
    for entry in entries:
        if entry.kind in FACT_KINDS:
            apply(state, entry)
    for entry in entries:
        if entry.kind not in FACT_KINDS:
            apply(state, entry)
    state.needs_rebuild = False
    state.changes = Changes(replace_all=True)
    snapshot = tables(state)
    state.changes.balances.update(snapshot.balances)
    state.changes.frozen.update(snapshot.frozen)
    state.changes.records.extend(snapshot.records)
    state.changes.verdicts.update(snapshot.verdicts)
    state.changes.seals.update(snapshot.seals)
    return state


def take_changes(state: State) -> Changes:
    changes, state.changes = state.changes, Changes()
    return changes


def tables(state: State) -> Tables:
    return Tables(
        balances=dict(state.balances),
        frozen=dict(state.frozen),
        records=sorted(state.records, key=lambda r: (r.platform_class, r.n)),
        verdicts=dict(state.verdicts),
        seals=dict(state.seals),
    )


def leaderboard(state: State, platform_class: str) -> list[tuple[bytes, float]]:
    """Verified claims of a class, best first: (claim id, agreed value)."""
    rows = [(cid, v) for cid, v in state.verified.items() if state.claims[cid].platform_class == platform_class]
    return sorted(rows, key=lambda r: (r[1], r[0]))
