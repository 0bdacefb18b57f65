"""Credit rules, one rule at a time: who may mint, how much, and spending once."""
from __future__ import annotations

import pytest

from ledger import fold
from ledger.bodies import Admit, Claim, Mint
from ledger.credits import record_share_ucr
from ledger.entry import Entry
from ledger.feed import make_fraud
from tests.ledger.factory import (
    NOISE, RATE, Feeds, claim, identity, make_spec, post, record_mint, seal, transfer, verify,
)

CREATOR, V1, V2, ALICE, BOB, CAROL = (identity(i) for i in range(6))


class World:
    """A fold driven entry by entry, as a store would."""

    def __init__(self, quorum: int = 1, verifiers: tuple = (V1,)) -> None:
        signed = make_spec(CREATOR, list(verifiers), quorum=quorum)
        self.spec = signed.spec
        self.feeds = Feeds(signed.swarm_id)
        self.state = fold.initial(signed.spec)
        self.rows: list[Entry] = []

    def add(self, who, body) -> Entry:
        entry = self.apply(self.feeds.sign(who, body))
        sealer = next((k for k in (V1, V2) if k.public_key in self.spec.verifiers and k is not who), None)
        if isinstance(body, Claim) and sealer is not None:  # an anchor seals it at once, as anchor nodes do
            self.add(sealer, seal(entry))
        return entry

    def apply(self, entry: Entry) -> Entry:
        self.rows.append(entry)
        self.state = fold.apply(self.state, entry)
        return entry

    def verdict(self, entry: Entry) -> str:
        return self.state.verdicts[entry.id]

    def verified_record(self, author, n: int, value: float, prev: float | None, *, amount: int | None = None):
        c = self.add(author, claim(n, value))
        v = self.add(V1, verify(c, value))
        share = 0 if prev is None else record_share_ucr(RATE, prev, value, 1)
        m = self.add(V1, record_mint(c, [v], value, prev, share if amount is None else amount))
        return c, v, m


def test_first_record_mints_nothing_then_improvements_mint_their_share() -> None:
    w = World()
    _, _, m0 = w.verified_record(ALICE, 1, 1.50, None)
    assert w.verdict(m0) == ""
    _, _, m1 = w.verified_record(BOB, 2, 1.40, 1.50)
    assert w.verdict(m1) == ""
    assert w.state.balances[BOB.public_key] == record_share_ucr(RATE, 1.50, 1.40, 1) > 0
    assert [r.value for r in w.state.records] == [1.50, 1.40]


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda m: {**m, "amount": m["amount"] + 1}, "amount must be"),
        (lambda m: {**m, "prev_best": 1.6}, "prev_best must be"),
        (lambda m: {**m, "prev_best": None}, "prev_best must be"),
        (lambda m: {**m, "value": 1.39}, "value must be"),
        (lambda m: {**m, "to": CAROL.public_key}, "pays the claim's author"),
    ],
)
def test_a_mint_that_breaks_a_rule_is_invalid(mutate, reason: str) -> None:
    w = World()
    w.verified_record(ALICE, 1, 1.50, None)
    c = w.add(BOB, claim(2, 1.40))
    v = w.add(V1, verify(c, 1.40))
    good = record_mint(c, [v], 1.40, 1.50, record_share_ucr(RATE, 1.50, 1.40, 1))
    m = w.add(V1, Mint(**mutate(good.to_map())))
    assert reason in w.verdict(m)
    assert BOB.public_key not in w.state.balances


def test_only_trusted_verifiers_mint_and_only_once_per_claim() -> None:
    w = World()
    w.verified_record(ALICE, 1, 1.50, None)
    c = w.add(BOB, claim(2, 1.40))
    v = w.add(V1, verify(c, 1.40))
    share = record_share_ucr(RATE, 1.50, 1.40, 1)
    forged = w.add(BOB, record_mint(c, [v], 1.40, 1.50, share))
    assert "only the verifiers of the quorum" in w.verdict(forged)
    first = w.add(V1, record_mint(c, [v], 1.40, 1.50, share))
    again = w.add(V1, record_mint(c, [v], 1.40, 1.50, share))
    assert w.verdict(first) == ""
    assert "already minted" in w.verdict(again)
    assert w.state.balances[BOB.public_key] == share


def test_a_record_needs_a_margin_over_the_noise() -> None:
    w = World()
    w.verified_record(ALICE, 1, 1.50, None)
    value = 1.50 - NOISE / 2
    _, _, m = w.verified_record(BOB, 2, value, 1.50, amount=record_share_ucr(RATE, 1.50, value, 1))
    assert "not a record" in w.verdict(m)
    assert len(w.state.records) == 1


def test_a_quorum_must_agree_and_come_from_distinct_verifiers() -> None:
    w = World(quorum=2, verifiers=(V1, V2))
    c0 = w.add(ALICE, claim(1, 1.5))
    v1, v2 = w.add(V1, verify(c0, 1.5)), w.add(V2, verify(c0, 1.5))
    assert w.verdict(w.add(V1, record_mint(c0, [v1, v2], 1.5, None, 0))) == ""
    c = w.add(BOB, claim(2, 1.3))
    a, b = w.add(V1, verify(c, 1.30)), w.add(V2, verify(c, 1.36))
    assert c.id not in w.state.decisions  # two replays 0.06 apart: no quorum agrees yet
    assert "not a record" in w.verdict(w.add(V1, record_mint(c, [a, b], 1.33, 1.5, 1)))
    assert "not a record" in w.verdict(w.add(V2, record_mint(c, [b], 1.36, 1.5, 0)))
    w2 = World(quorum=2, verifiers=(V1, V2))
    c0 = w2.add(ALICE, claim(1, 1.5))
    w2.add(V1, verify(c0, 1.5))
    self_verify = w2.add(ALICE, verify(c0, 1.5))  # the claimant is never part of its own quorum
    assert c0.id not in w2.state.decisions and self_verify.author not in w2.state.measured.get(c0.id, {})


def test_verification_mints_pay_the_verifier_for_its_own_run() -> None:
    w = World()
    c = w.add(ALICE, claim(1, 1.5))
    v = w.add(V1, verify(c, 1.5))
    ok = w.add(V1, Mint(reason="verification", subject=v.id, quorum=[], to=V1.public_key, amount=1000,
                         value=None, prev_best=None))
    stolen = w.add(V2, Mint(reason="verification", subject=v.id, quorum=[], to=V2.public_key, amount=1000,
                            value=None, prev_best=None))
    assert w.verdict(ok) == ""
    assert w.verdict(stolen) != ""
    assert w.state.balances == {V1.public_key: 1000}


def test_transfers_spend_outputs_once_and_never_overdraw() -> None:
    w = World()
    w.verified_record(ALICE, 1, 1.50, None)
    _, _, m = w.verified_record(BOB, 2, 1.40, 1.50)
    earned = w.state.balances[BOB.public_key]
    pay = w.add(BOB, transfer(CAROL, earned // 4, [m.id]))
    assert w.verdict(pay) == ""
    assert w.state.balances[BOB.public_key] == earned - earned // 4
    again = w.add(BOB, transfer(CAROL, 1, [m.id]))
    assert "already spent" in w.verdict(again)
    too_much = w.add(BOB, transfer(CAROL, earned, [pay.id]))
    assert "short of" in w.verdict(too_much)
    change = w.add(BOB, transfer(CAROL, earned - earned // 4, [pay.id]))
    assert w.verdict(change) == ""
    assert w.state.balances.get(BOB.public_key, 0) == 0  # a zero balance is no balance
    assert w.state.balances[CAROL.public_key] == earned
    assert "holds no output" in w.verdict(w.add(ALICE, transfer(CAROL, 1, [m.id])))


def test_a_fork_freezes_its_author_and_voids_what_followed() -> None:
    w = World()
    w.verified_record(ALICE, 1, 1.50, None)
    _, _, m = w.verified_record(BOB, 2, 1.40, 1.50)
    earned = w.state.balances[BOB.public_key]
    seq, prev = w.feeds.heads[BOB.public_key]
    to_carol = w.add(BOB, transfer(CAROL, earned, [m.id]))
    to_alice = w.feeds.sign_at(BOB, seq + 1, prev, transfer(ALICE, earned, [m.id]))  # the double spend
    assert w.state.balances[CAROL.public_key] == earned
    proof = make_fraud(to_carol, to_alice)
    w.add(CAROL, proof)
    assert w.state.frozen == {BOB.public_key: seq + 1}
    assert w.state.needs_rebuild
    rebuilt = fold.rebuild(w.spec, w.rows)
    assert rebuilt.balances[BOB.public_key] == earned
    assert rebuilt.balances.get(CAROL.public_key, 0) == 0
    assert rebuilt.verdicts[to_carol.id] == "author is frozen by a fork proof"
    assert rebuilt.verdicts[w.rows[-1].id] == ""  # the proof itself
    w.state = rebuilt
    later = w.add(BOB, post())
    assert later.id not in w.state.verdicts  # posts are not judged, and count for nothing


def test_only_the_creator_admits_verifiers() -> None:
    w = World()
    bad = w.add(ALICE, Admit(verifier=ALICE.public_key, platform_classes=["cpu-tiny"]))
    good = w.add(CREATOR, Admit(verifier=V2.public_key, platform_classes=["cpu-tiny"]))
    assert w.verdict(bad) != "" and w.verdict(good) == ""
    assert "cpu-tiny" in w.state.verifiers[V2.public_key]
    assert ALICE.public_key not in w.state.verifiers
