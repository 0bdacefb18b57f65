"""A colluding minority against the real fold, seals and verifier policy (node/sim/collude.py, issue 12):
keys that earned trust honestly, then vouch for each other's invented gains, mint no record credit,
and every table equals a rebuild. Small sizes: the full figures are scripts/sim_collude.py's."""
from __future__ import annotations

import random

import pytest

from ledger import assign, fold
from ledger.bodies import Seal
from ledger.entry import Entry
from node.sim.collude import CollusionConfig, simulate_collusion
from tests.ledger.factory import CLASS, Feeds, claim, identity, make_spec, verify


@pytest.mark.slow
@pytest.mark.parametrize("share", [0.1, 0.3])
def test_vouching_colluders_mint_no_record_credit(share: float) -> None:
    # a wide trust tolerance, so that colluders (and honest keys) keep the trust they earn and vouch all day
    config = CollusionConfig(nodes=20, hours=4, colluding=share, copy=False, trust_tolerance_bpb=0.006)
    figures = simulate_collusion(config, random.Random(3))
    assert figures.colluders_trusted > 0 and figures.colluder_claims > 0  # the attack was played
    assert figures.colluder_record_ucr == 0 and figures.colluder_records == 0
    assert figures.colluder_claims_verified == 0
    assert figures.folds_equal
    # no bound on the verification share here: at 20 nodes for 4 hours the 5 trust-earning replays of
    # every new key are a sixth of the GPU time; scripts/sim_collude.py measures it at 40 nodes, 8 hours


CREATOR, ANCHOR, ANCHOR2, ALICE = (identity(900 + i) for i in range(4))
RING = [identity(910 + i) for i in range(6)]


def test_earned_keys_never_hold_a_quorum_of_an_assignment() -> None:
    """Six earned keys and two spec verifiers, quorum 2 of 3: every sealed claim's assignment holds
    at most one earned key, so two colluders can never decide a claim between them."""
    signed = make_spec(CREATOR, [ANCHOR, ANCHOR2], quorum=2, trust_replays=1, assigned=3)
    feeds, state = Feeds(signed.swarm_id), fold.initial(signed.spec)
    rows: list[Entry] = []

    def add(who, body) -> Entry:  # type: ignore[no-untyped-def]
        entry = feeds.sign(who, body)
        rows.append(entry)
        fold.apply(state, entry)
        return entry

    for n, key in enumerate(RING):  # each earns trust beside both anchors' replays
        c = add(ALICE, claim(100 + n, 1.5))
        add(ANCHOR, Seal(claims=[c.id]))
        for v in (ANCHOR, ANCHOR2, key):
            add(v, verify(c, 1.5))
        assert CLASS in state.verifiers[key.public_key]
    fakes = [add(RING[0], claim(200 + n, 0.9)) for n in range(40)]
    add(ANCHOR, Seal(claims=[f.id for f in fakes]))
    for fake in fakes:
        for key in RING[1:]:  # the ring vouches for every fake at once
            add(key, verify(fake, 0.9))
        earned = set(assign.assignment(state, fake.id) or ()) - set(signed.spec.verifiers)
        assert len(earned) <= 1
        assert fake.id not in state.verified
    assert fold.tables(fold.rebuild(signed.spec, rows)) == fold.tables(state)
