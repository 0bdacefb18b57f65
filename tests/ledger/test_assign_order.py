"""The sealed assignment with earned keys is a function of the set of entries (issue 12): random
histories where keys earn and lose trust before and after the seals of the claims they replay, with
fee and record mints, fold to the same tables in every arrival order, and the assignment the
incremental fold keeps equals the one a rebuild computes."""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import assign, credits, fold
from ledger.bodies import Mint, Seal
from ledger.entry import Entry
from ledger.keys import Identity
from tests.ledger.factory import Feeds, claim, identity, make_spec, verify
from tests.ledger.test_fold import topological_shuffle

CREATOR, ANCHOR, ANCHOR2, ALICE = (identity(950 + i) for i in range(4))
EARNERS = [identity(960 + i) for i in range(5)]


def _history(seed: int, steps: int) -> tuple[object, list[Entry]]:
    """A random history folded as the writer folds it (rebuilding when asked); returns (spec, rows)."""
    rng = random.Random(seed)
    signed = make_spec(CREATOR, [ANCHOR, ANCHOR2], quorum=2, trust_replays=rng.choice([1, 2]), assigned=3)
    feeds, state = Feeds(signed.swarm_id), fold.initial(signed.spec)
    rows: list[Entry] = []
    claims: list[Entry] = []

    def add(who: Identity, body: object) -> Entry:
        nonlocal state
        entry = feeds.sign(who, body)  # type: ignore[arg-type]
        rows.append(entry)
        state = fold.apply_or_rebuild(state, entry, rows)
        return entry

    for _ in range(steps):
        u = rng.random()
        if u < 0.2 or not claims:
            claims.append(add(rng.choice([ALICE, *EARNERS]), claim(len(claims) + 1, rng.choice([1.5, 1.45, 1.4]))))
        elif u < 0.35:
            add(rng.choice([ANCHOR, ANCHOR2]), Seal(claims=[c.id for c in rng.sample(claims, min(3, len(claims)))]))
        else:
            c = rng.choice(claims)
            who = rng.choice([ANCHOR, ANCHOR2, *EARNERS])
            truth = c.body.val_bpb  # type: ignore[attr-defined]
            # mostly agreeing replays, sometimes one off by far more than the tolerance (trust lost)
            value = truth if rng.random() < 0.85 else truth + 0.2
            ver = add(who, verify(c, value))
            add(who, Mint(reason="verification", subject=ver.id, quorum=[], to=who.public_key, amount=1000,
                          value=None, prev_best=None))
            mint, _ = credits.record_mint(state, who.public_key, c.id)
            if mint is not None:
                add(who, mint)
    for c in claims:  # what the incremental fold kept is the assignment computed from the set
        if c.id in state.seals:
            assert assign.assignment(state, c.id) == assign.assignment(fold.rebuild(signed.spec, rows), c.id)
    assert fold.tables(state) == fold.tables(fold.rebuild(signed.spec, rows))
    return signed, rows


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(5, 80))
def test_assignments_and_tables_are_the_same_in_every_arrival_order(seed: int, steps: int) -> None:
    signed, rows = _history(seed, steps)
    spec = signed.spec  # type: ignore[attr-defined]
    want = fold.rebuild(spec, rows)
    rng = random.Random(seed ^ 0x5EED)
    for _ in range(3):
        order = topological_shuffle(rows, rng)
        state = fold.initial(spec)
        for n, entry in enumerate(order):
            state = fold.apply_or_rebuild(state, entry, order[:n + 1])
        assert fold.tables(state) == fold.tables(want)
        for claim_id in want.seals:
            assert assign.assignment(state, claim_id) == assign.assignment(want, claim_id)
