"""Verifiers the claimant cannot choose (issue 12): a claim's replays count only from the keys its
seal assigns, the seal is an anchor's entry signed after the claim, and fees follow the assignment.
The attacks run against real SQLite files through the real store."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from ledger import assign, audit, fold
from ledger.bodies import Admit, Mint, Seal
from ledger.entry import Entry
from ledger.errors import InvalidEntry
from ledger.keys import Identity
from ledger.spec import SignedSpec
from ledger.store import Ledger, Status
from tests.ledger.factory import CLASS, Feeds, claim, identity, make_spec, seal, verify
from tests.ledger.test_fold import topological_shuffle

CREATOR, ANCHOR, ANCHOR2, ALICE, SYBIL = (identity(700 + i) for i in range(5))
HONEST = [identity(710 + i) for i in range(3)]
COLLUDERS = [identity(720 + i) for i in range(3)]   # trusted keys that work for ALICE


def spec(assigned: int = 3) -> SignedSpec:
    # every key trusted from genesis: the attack is on who counts among trusted keys, not on trust
    return make_spec(CREATOR, [ANCHOR, ANCHOR2, *HONEST, *COLLUDERS], quorum=2, assigned=assigned)


class World:
    """A real ledger file; `add` appends through the store and expects it appended."""

    def __init__(self, ledger: Ledger, signed: SignedSpec) -> None:
        self.ledger, self.signed, self.feeds = ledger, signed, Feeds(signed.swarm_id)
        self.rows: list[Entry] = []

    async def add(self, who: Identity, body: object) -> Entry:
        entry = self.feeds.sign(who, body)  # type: ignore[arg-type]
        outcome = await self.ledger.append(entry)
        assert outcome.status is Status.APPENDED, outcome
        self.rows.append(entry)
        return entry

    def verdict(self, entry: Entry) -> str:
        return self.ledger.state.verdicts[entry.id]

    def fee(self, ver: Entry) -> Mint:
        return Mint(reason="verification", subject=ver.id, quorum=[], to=ver.author, amount=self.signed.spec.verify_ucr,
                    value=None, prev_best=None)


async def test_colluders_that_replay_first_decide_nothing_and_earn_no_fee(tmp_path: Path) -> None:
    signed = spec()
    async with Ledger.open(tmp_path / "l", signed) as ledger:
        w = World(ledger, signed)
        # a fake gain (true value 1.5); ALICE's friends replay it the instant it appears, before the seal
        fake = await w.add(ALICE, claim(1, 0.5))
        early = [await w.add(c, verify(fake, 0.5)) for c in COLLUDERS]
        assert fake.id not in ledger.state.decisions and assign.assignment(ledger.state, fake.id) is None
        fees = [await w.add(c, w.fee(v)) for c, v in zip(COLLUDERS, early)]
        assert all("assigned" in w.verdict(f) for f in fees)
        sealed = await w.add(ANCHOR, seal(fake))
        assigned = assign.assignment(ledger.state, fake.id)
        assert assigned is not None and len(assigned) == 3
        colluders_in = {c.public_key for c in COLLUDERS} & set(assigned)
        assert len(colluders_in) < 2  # this seal assigns at most one (2 or more: odds 19 in 56)
        assert fake.id not in ledger.state.decisions, "replays outside the assignment decided the claim"
        # the assigned keys that are honest replay the true value: the claim is refuted, never verified
        by_key = {k.public_key: k for k in [ANCHOR, ANCHOR2, *HONEST, *COLLUDERS]}
        for key in assigned:
            if key not in colluders_in:
                await w.add(by_key[key], verify(fake, 1.5))
        assert fake.id in ledger.state.refuted and fake.id not in ledger.state.verified
        # the fold judges the fees on the set of entries: now the claim is sealed, the fee mints
        # signed before the seal pay exactly the colluders the seal happened to assign, no other
        for c, f in zip(COLLUDERS, fees):
            assert (w.verdict(f) == "") == (c.public_key in assigned), w.verdict(f)
        assert ledger.state.seals == {fake.id: sealed.id}
    assert audit.audit_file(tmp_path / "l", workers=1).ok


async def test_a_decision_reads_only_assigned_replays_whatever_the_seal(tmp_path: Path) -> None:
    signed = spec()
    async with Ledger.open(tmp_path / "l", signed) as ledger:
        w = World(ledger, signed)
        everyone = [ANCHOR, ANCHOR2, *HONEST, *COLLUDERS]
        for n in range(12):
            c = await w.add(ALICE, claim(10 + n, 1.5))
            for v in everyone:
                await w.add(v, verify(c, 1.5 + 0.001 * everyone.index(v)))
            await w.add(ANCHOR, seal(c))
            decision = ledger.state.decisions[c.id]
            assigned = set(assign.assignment(ledger.state, c.id) or ())
            assert {ledger.state.verifies[vid].author for vid in decision.quorum} <= assigned
            assert set(ledger.state.measured[c.id]) <= assigned


async def test_a_seal_by_anyone_but_an_anchor_counts_for_nothing(tmp_path: Path) -> None:
    signed = spec()
    async with Ledger.open(tmp_path / "l", signed) as ledger:
        w = World(ledger, signed)
        c = await w.add(ALICE, claim(1, 1.5))
        bogus = await w.add(SYBIL, seal(c))
        assert w.verdict(bogus) == "only an anchor seals claims"
        own = await w.add(HONEST[0], claim(2, 1.4))
        self_sealed = await w.add(HONEST[0], seal(own))   # an anchor's seal of its own claim
        assert w.verdict(self_sealed) == ""               # valid, but it does not count for that claim
        for v in HONEST[1:]:
            await w.add(v, verify(c, 1.5))
            await w.add(v, verify(own, 1.4))
        assert ledger.state.seals == {} and not ledger.state.decisions
        assert assign.assignment(ledger.state, c.id) is None and assign.assignment(ledger.state, own.id) is None
    report = audit.audit_file(tmp_path / "l", workers=1)
    assert report.ok and any(i.kind == "seal" for i in report.invalid)


def test_a_claimant_who_knows_every_key_cannot_predict_its_assignment() -> None:
    """Grinding the claim id does not choose the verifiers: before the seal there is no assignment,
    and the same claim gets different assignments from seals the claimant cannot sign."""
    signed = spec()
    feeds, state = Feeds(signed.swarm_id), fold.initial(signed.spec)
    colluders = {c.public_key for c in COLLUDERS}
    best: Entry | None = None
    for n in range(64):  # ALICE grinds claim ids, knowing every trusted key
        c = feeds.sign(ALICE, claim(100 + n, 1.4))
        fold.apply(state, c)
        assert assign.assignment(state, c.id) is None  # nothing to grind against: no assignment yet
        best = c
    assert best is not None
    # what the seal would decide ranges over the anchor's entries: different seals, different sets
    outcomes = set()
    for t in range(32):
        trial = fold.initial(signed.spec)
        fold.apply(trial, best)
        s = Feeds(signed.swarm_id, clock_ms=10**6 + t).sign(ANCHOR, seal(best))
        fold.apply(trial, s)
        outcomes.add(frozenset(assign.assignment(trial, best.id) or ()))
    assert len(outcomes) > 8
    assert any(not (o & colluders) for o in outcomes) and any(o & colluders for o in outcomes)


def _two_seals_world() -> tuple[SignedSpec, list[Entry], Entry, Entry, Entry]:
    signed = spec()
    feeds = Feeds(signed.swarm_id)
    c = feeds.sign(ALICE, claim(1, 1.5))
    s1, s2 = feeds.sign(ANCHOR, seal(c)), feeds.sign(ANCHOR2, seal(c))
    rows = [c, s1, s2]
    everyone = [*HONEST, *COLLUDERS, ANCHOR, ANCHOR2]
    replays = [feeds.sign(v, verify(c, 1.5 + 0.002 * i)) for i, v in enumerate(everyone)]
    rows += replays
    rows += [feeds.sign(v, Mint(reason="verification", subject=r.id, quorum=[], to=v.public_key, amount=1000,
                                value=None, prev_best=None)) for v, r in zip(everyone, replays)]
    return signed, rows, c, s1, s2


@pytest.mark.parametrize("first", ["smaller", "larger"])
async def test_the_smallest_seal_wins_in_either_arrival_order(tmp_path: Path, first: str) -> None:
    signed, rows, c, s1, s2 = _two_seals_world()
    small, large = sorted([s1, s2], key=lambda e: e.id)
    order = [c, small, large] if first == "smaller" else [c, large, small]
    async with Ledger.open(tmp_path / "l", signed) as ledger:
        for entry in order:
            await ledger.append(entry)
        assert ledger.state.seals == {c.id: small.id}
        for entry in rows[3:]:
            await ledger.append(entry)
        got = fold.tables(ledger.state)
    want = fold.rebuild(signed.spec, rows)
    assert got == fold.tables(want) and want.seals == {c.id: small.id}
    assert sum(1 for e in rows if e.kind == "mint" and want.verdicts[e.id] == "") == 3  # assigned fees only
    assert audit.audit_file(tmp_path / "l", workers=1).ok


def test_a_smaller_seal_after_the_fees_moves_them_and_the_fold_rebuilds_to_the_same_tables() -> None:
    signed, rows, c, s1, s2 = _two_seals_world()
    small, large = sorted([s1, s2], key=lambda e: e.id)
    late = [c, large, *rows[3:], small]   # every replay and fee judged on the larger seal first
    want = fold.tables(fold.rebuild(signed.spec, rows))
    state = fold.initial(signed.spec)
    for n, entry in enumerate(late):
        state = fold.apply_or_rebuild(state, entry, late[:n + 1])
    assert fold.tables(state) == want
    for seed in range(10):
        assert fold.tables(fold.rebuild(signed.spec, topological_shuffle(rows, random.Random(seed)))) == want


def test_a_seal_signed_before_its_author_was_admitted_counts_once_it_is() -> None:
    signed = spec()
    feeds = Feeds(signed.swarm_id)
    newcomer = identity(790)
    c = feeds.sign(ALICE, claim(1, 1.5))
    early = feeds.sign(newcomer, seal(c))
    admit = feeds.sign(CREATOR, Admit(verifier=newcomer.public_key, platform_classes=[CLASS]))
    state = fold.initial(signed.spec)
    for entry in (c, early):
        fold.apply(state, entry)
    assert state.verdicts[early.id] and assign.assignment(state, c.id) is None
    fold.apply(state, admit)
    assert state.verdicts[early.id] == "" and state.seals == {c.id: early.id}
    assert fold.tables(state) == fold.tables(fold.rebuild(signed.spec, [c, admit, early]))


def test_losing_and_gaining_trust_moves_the_assignment_as_ranking_afresh_would() -> None:
    signed = make_spec(CREATOR, [ANCHOR, ANCHOR2, HONEST[0]], quorum=2, trust_replays=1, assigned=3)
    feeds, state = Feeds(signed.swarm_id), fold.initial(signed.spec)
    rows: list[Entry] = []

    def add(who: Identity, body: object) -> Entry:
        entry = feeds.sign(who, body)  # type: ignore[arg-type]
        rows.append(entry)
        fold.apply(state, entry)
        return entry

    earners = [identity(760 + i) for i in range(4)]
    claims = [add(ALICE, claim(n, 1.5)) for n in range(8)]
    add(ANCHOR, Seal(claims=[c.id for c in claims]))
    for n, e in enumerate(earners):       # each earns trust with one agreeing replay beside the anchors'
        trainer = add(ALICE, claim(100 + n, 1.5))
        add(ANCHOR, seal(trainer))
        add(ANCHOR, verify(trainer, 1.5))
        add(ANCHOR2, verify(trainer, 1.5))
        add(e, verify(trainer, 1.5))
        assert CLASS in state.verifiers[e.public_key]
        for c in claims:
            assert assign.assignment(state, c.id) == _afresh(state, c.id)
    earned_in = [c for c in claims if set(assign.assignment(state, c.id) or ()) - set(signed.spec.verifiers)]
    assert len(earned_in) == len(claims)  # every claim has one earned slot (quorum - 1), and 4 earners to fill it
    add(earners[0], verify(claims[0], 9.0))  # beside the anchors' replays: a disagreement, trust lost
    add(ANCHOR, verify(claims[0], 1.5))
    add(ANCHOR2, verify(claims[0], 1.5))
    assert CLASS not in state.verifiers.get(earners[0].public_key, frozenset())
    for c in claims:
        assert assign.assignment(state, c.id) == _afresh(state, c.id)
        assert earners[0].public_key not in (assign.assignment(state, c.id) or ())
    assert fold.tables(fold.rebuild(signed.spec, rows)) == fold.tables(state)


def _afresh(state: fold.State, claim_id: bytes) -> tuple[bytes, ...]:
    """The rule of ledger/assign.py written out: at most quorum - 1 earned keys, spec verifiers for the rest."""
    info, seal_id = state.claims[claim_id], state.seals[claim_id]
    pool = [k for k, classes in state.verifiers.items() if info.platform_class in classes and k != info.author]
    ranked = sorted(pool, key=lambda k: assign.rank(seal_id, claim_id, k))
    spec_keys = set(state.spec.verifiers)
    earned = [k for k in ranked if k not in spec_keys][:state.spec.quorum - 1 if state.spec.trust_replays else None]
    fixed = [k for k in ranked if k in spec_keys]
    if state.spec.assigned:
        fixed = fixed[:state.spec.assigned - len(earned)]
    chosen = set(earned) | set(fixed)
    return tuple(k for k in ranked if k in chosen)


def test_seal_bodies_and_the_assigned_field_are_checked() -> None:
    with pytest.raises(InvalidEntry):
        Seal(claims=[])
    with pytest.raises(InvalidEntry):
        Seal(claims=[b"x" * 32, b"x" * 32])
    with pytest.raises(InvalidEntry):
        Seal(claims=[b"x" * 32] * 257)
    with pytest.raises(InvalidEntry):
        make_spec(CREATOR, [ANCHOR, ANCHOR2], quorum=2, assigned=1)  # could never reach its quorum
    assert make_spec(CREATOR, [ANCHOR], assigned=0).spec.assigned == 0
