"""The mint abuses of issue 12, one test each: every one must fail in the fold."""
from __future__ import annotations

from ledger import credits, fold
from ledger.bodies import Claim, Mint
from ledger.entry import Entry
from tests.ledger.factory import RATE, Feeds, claim, identity, make_spec, record_mint, seal, verify

CREATOR, ALICE, BOB = identity(200), identity(201), identity(202)
V = [identity(210 + i) for i in range(4)]


class World:
    def __init__(self, quorum: int, verifiers: list = V, verify_ucr: int = 1000) -> None:
        # every trusted key assigned: these tests are about the mint rules, tests/ledger/test_seal.py about assignment
        signed = make_spec(CREATOR, verifiers, quorum=quorum, verify_ucr=verify_ucr, assigned=0)
        self.sealer = verifiers[-1]
        self.spec, self.feeds, self.state = signed.spec, Feeds(signed.swarm_id), fold.initial(signed.spec)

    def add(self, who, body) -> Entry:
        entry = self.feeds.sign(who, body)
        fold.apply(self.state, entry)
        if isinstance(body, Claim):  # an anchor seals it at once, as an anchor node does within seconds
            self.add(self.sealer, seal(entry))
        return entry

    def ok(self, entry: Entry) -> bool:
        return self.state.verdicts[entry.id] == ""

    def fee(self, who, ver: Entry) -> Entry:
        return self.add(who, Mint(reason="verification", subject=ver.id, quorum=[], to=who.public_key,
                                  amount=self.spec.verify_ucr, value=None, prev_best=None))


def test_a_thousand_verifies_of_one_claim_collect_one_fee() -> None:
    w = World(quorum=1)
    c = w.add(ALICE, claim(1, 1.5))
    paid = [w.ok(w.fee(V[0], w.add(V[0], verify(c, 1.5)))) for _ in range(1000)]
    assert paid.count(True) == 1
    assert w.state.balances[V[0].public_key] == w.spec.verify_ucr


def test_no_fee_for_replaying_ones_own_claim() -> None:
    w = World(quorum=1)
    c = w.add(V[0], claim(1, 1.5))
    assert "own claim" in w.state.verdicts[w.fee(V[0], w.add(V[0], verify(c, 1.5))).id]


def test_four_verifiers_mint_one_records_worth_in_total() -> None:
    w = World(quorum=1)
    base = w.add(ALICE, claim(1, 1.50))
    w.add(V[0], verify(base, 1.50))
    better = w.add(BOB, claim(2, 1.47))
    verifies = [w.add(v, verify(better, 1.47)) for v in V]
    worth = RATE * 3 // 100  # 0.03 bpb
    # every verifier tries to mint a full share naming its own replay
    for v, ver in zip(V, verifies):
        w.add(v, record_mint(better, [ver], 1.47, 1.50, worth))
    assert w.state.balances.get(BOB.public_key, 0) <= worth
    # and the honest path: only the quorum that made it a record mints, its shares sum to one worth
    for v in V:
        mint, _ = credits.record_mint(w.state, v.public_key, better.id)
        if mint is not None:
            w.add(v, mint)
    assert abs(w.state.balances[BOB.public_key] - worth) <= 1


def test_a_quorum_of_three_splits_one_records_worth() -> None:
    w = World(quorum=3)
    base = w.add(ALICE, claim(1, 1.50))
    for v in V[:3]:
        w.add(v, verify(base, 1.50))
    better = w.add(BOB, claim(2, 1.40))
    for v in V:
        w.add(v, verify(better, 1.40))
    minted = []
    for v in V:
        mint, why = credits.record_mint(w.state, v.public_key, better.id)
        if mint is not None:
            minted.append(w.add(v, mint))
        else:
            assert "only the verifiers of the quorum" in why  # the fourth replay came after the decision
    assert len(minted) == 3 and all(w.ok(m) for m in minted)
    total = sum(m.body.amount for m in minted)  # type: ignore[attr-defined]
    assert total <= RATE * 10 // 100 and total >= RATE * 10 // 100 - 3


def test_a_late_zero_mint_on_the_baseline_gives_no_prev_best() -> None:
    w = World(quorum=1)
    base = w.add(ALICE, claim(1, 1.50))
    w.add(V[0], verify(base, 1.50))
    better = w.add(BOB, claim(2, 1.30))
    w.add(V[0], verify(better, 1.30))
    # V1 was in neither quorum: a late zero-mint on the baseline and a mint from "its" prev_best fail
    zero = w.add(V[1], record_mint(base, [w.add(V[1], verify(base, 1.50))], 1.50, None, 0))
    assert "only the verifiers of the quorum" in w.state.verdicts[zero.id]
    steal = w.add(V[1], record_mint(better, [w.add(V[1], verify(better, 1.30))], 1.30, 1.50, RATE // 5))
    assert not w.ok(steal)
    assert BOB.public_key not in w.state.balances


def test_a_record_mint_needs_a_record_in_the_fold() -> None:
    w = World(quorum=1)
    base = w.add(ALICE, claim(1, 1.50))
    w.add(V[0], verify(base, 1.50))
    worse = w.add(BOB, claim(2, 1.60))
    ver = w.add(V[0], verify(worse, 1.60))
    assert worse.id in w.state.verified and worse.id not in w.state.record_of
    m = w.add(V[0], record_mint(worse, [ver], 1.60, 1.50, 0))
    assert "not a record" in w.state.verdicts[m.id]
    unverified = w.add(BOB, claim(3, 0.5))
    ver = w.add(V[0], verify(unverified, 0.7))  # open: its replay is far from the claim, but no quorum refutes yet
    m = w.add(V[0], record_mint(unverified, [ver], 0.7, 1.50, RATE))
    assert "not a record" in w.state.verdicts[m.id] or "refuted" in w.state.verdicts[m.id]


def test_an_untrusted_key_mints_nothing_whatever_it_verifies() -> None:
    w = World(quorum=1)
    sybil = identity(299)
    fake = w.add(sybil, claim(1, 0.5))
    ver = w.add(identity(298), verify(fake, 0.5))
    assert fake.id not in w.state.verified
    m = w.add(identity(298), record_mint(fake, [ver], 0.5, None, 0))
    assert not w.ok(m)
    assert not w.ok(w.fee(identity(298), ver))
    assert w.state.balances == {}


def test_junk_mints_by_keys_outside_the_quorum_never_make_the_fold_rebuild() -> None:
    """A rebuild costs the whole ledger: keys whose replays the decision never read must not cause one,
    however many record mints they publish for open claims before honest replays decide them."""
    w = World(quorum=2)
    junk = [identity(290 + i) for i in range(5)]
    base = w.add(ALICE, claim(1, 1.50))
    for n in range(20):
        c = w.add(BOB, claim(10 + n, round(1.50 - n * 0.02, 3))) if n else base
        for j in junk:  # an untrusted replay and a mint naming it, before any trusted replay
            ver = w.add(j, verify(c, 0.1))
            w.add(j, record_mint(c, [ver], 0.1, 1.5, RATE))
        for v in V[:2]:
            w.add(v, verify(c, c.body.val_bpb))  # type: ignore[attr-defined]
            assert not w.state.needs_rebuild
    assert len(w.state.records) == 20 and w.state.balances == {}
