"""Earned trust and order-free facts: a key earns trust by agreeing replays beside the anchors',
loses it on one disagreement, cannot be vouched for by other earned keys, and nothing here
depends on arrival order or on a claimant's clock."""
from __future__ import annotations

import random

from ledger import fold
from ledger.bodies import Admit, Claim
from ledger.entry import Entry, sign_entry
from tests.ledger.factory import CLASS, NOISE, Feeds, claim, identity, make_spec, seal, verify
from tests.ledger.test_fold import topological_shuffle

CREATOR, ANCHOR, NEW, NEW2, ALICE, BOB = (identity(500 + i) for i in range(6))
K = 3


class World:
    def __init__(self, quorum: int = 1, trust_replays: int = K) -> None:
        signed = make_spec(CREATOR, [ANCHOR], quorum=quorum, trust_replays=trust_replays)
        self.spec, self.feeds, self.state = signed.spec, Feeds(signed.swarm_id), fold.initial(signed.spec)
        self.rows: list[Entry] = []

    def add(self, who, body) -> Entry:
        entry = self.feeds.sign(who, body)
        fold.apply(self.state, entry)
        self.rows.append(entry)
        if isinstance(body, Claim):  # the anchor seals it at once, as an anchor node does within seconds
            self.add(ANCHOR, seal(entry))
        return entry

    def trusted(self, who) -> bool:
        return CLASS in self.state.verifiers.get(who.public_key, frozenset())

    def replayed_claim(self, n: int, value: float, *, by=(ANCHOR,), new_value: float | None = None,
                       new=NEW) -> Entry:
        c = self.add(ALICE, claim(n, value))
        for v in by:
            self.add(v, verify(c, value))
        self.add(new, verify(c, value if new_value is None else new_value))
        return c


def test_agreeing_replays_beside_an_anchor_earn_trust() -> None:
    w = World()
    for n in range(K - 1):
        w.replayed_claim(n, 1.5 - n / 100, new_value=1.5 - n / 100 + NOISE / 2)
        assert not w.trusted(NEW)
    w.replayed_claim(K, 1.4)
    assert w.trusted(NEW)
    assert "h100" not in w.state.verifiers[NEW.public_key]  # earned per class


def test_one_disagreement_takes_earned_trust_away() -> None:
    w = World()
    for n in range(K):
        w.replayed_claim(n, 1.5 - n / 100)
    assert w.trusted(NEW)
    w.replayed_claim(99, 1.3, new_value=1.3 - 5 * NOISE)
    assert not w.trusted(NEW)


def test_earned_keys_cannot_vouch_for_each_other() -> None:
    w = World()
    for n in range(K):
        w.replayed_claim(n, 1.5 - n / 100)
    assert w.trusted(NEW)
    # a second key replays only claims that the earned key (not an anchor) replayed
    for n in range(10, 10 + 2 * K):
        w.replayed_claim(n, 1.2, by=(NEW,), new=NEW2)
    assert not w.trusted(NEW2)


def test_replays_without_an_anchor_decision_earn_nothing() -> None:
    w = World()
    for n in range(3 * K):  # a Sybil pair: one claims, the other agrees, no anchor ever replays
        c = w.add(BOB, claim(n, 0.5))
        w.add(NEW, verify(c, 0.5))
    assert not w.trusted(NEW)
    assert w.state.verified == {} and w.state.records == []


def test_trust_replays_zero_means_only_anchors() -> None:
    w = World(trust_replays=0)
    for n in range(2 * K):
        w.replayed_claim(n, 1.5 - n / 100)
    assert not w.trusted(NEW)


def test_an_admit_counts_the_same_before_or_after_the_admitted_keys_replays() -> None:
    w = World(trust_replays=0)
    c = w.add(ALICE, claim(1, 1.5))
    w.add(NEW, verify(c, 1.5))
    assert c.id not in w.state.verified
    w.add(CREATOR, Admit(verifier=NEW.public_key, platform_classes=[CLASS]))
    assert c.id in w.state.verified  # the replay that came first now counts
    for seed in range(20):
        shuffled = topological_shuffle(w.rows, random.Random(seed))
        assert fold.tables(fold.rebuild(w.spec, shuffled)) == fold.tables(fold.rebuild(w.spec, w.rows))


def test_a_claimant_cannot_move_its_record_ahead_by_lying_about_its_clock() -> None:
    w = World()
    base = w.add(ALICE, claim(1, 1.50))
    w.add(ANCHOR, verify(base, 1.50))
    honest = w.add(ALICE, claim(2, 1.40))
    w.add(ANCHOR, verify(honest, 1.40))
    # BOB's claim of the same gain is signed with a clock far in the past; it is replayed after
    seq, prev = w.feeds.heads.get(BOB.public_key, (0, None))
    liar = sign_entry(BOB, swarm=w.feeds.swarm, seq=seq + 1, prev=prev, body=claim(3, 1.395), time_ms=1)
    w.feeds.heads[BOB.public_key] = (liar.seq, liar.id)
    fold.apply(w.state, liar)
    w.rows.append(liar)
    w.add(ANCHOR, seal(liar))
    w.add(ANCHOR, verify(liar, 1.395))
    assert [r.claim for r in w.state.records] == [base.id, honest.id]
    for seed in range(20):
        state = fold.rebuild(w.spec, topological_shuffle(w.rows, random.Random(seed)))
        assert [r.claim for r in state.records] == [base.id, honest.id]
