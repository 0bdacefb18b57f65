"""Property tests of the fold: any valid history folds, in any order its dependencies allow."""
from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import fold
from ledger.bodies import Mint
from ledger.entry import Entry
from ledger.spec import SwarmSpec
from tests.ledger.factory import RATE, identity, make_spec, valid_history

CREATOR = identity(100)
VERIFIERS = [identity(101), identity(102)]
USERS = [identity(110 + i) for i in range(4)]


def simulate(seed: int, steps: int) -> tuple[SwarmSpec, list[Entry]]:
    signed = make_spec(CREATOR, VERIFIERS, quorum=1)
    return signed.spec, valid_history(signed, VERIFIERS, USERS, steps=steps, seed=seed)


def topological_shuffle(rows: list[Entry], rng: random.Random) -> list[Entry]:
    """Another order in which a store could have received the same entries."""
    present: set[bytes] = set()
    waiting = list(rows)
    out: list[Entry] = []
    while waiting:
        ready = [e for e in waiting if all(d in present for d in e.deps())]
        pick = rng.choice(ready)
        waiting.remove(pick)
        present.add(pick.id)
        out.append(pick)
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 60))
def test_any_valid_history_folds_with_every_rule_satisfied(seed: int, steps: int) -> None:
    spec, rows = simulate(seed, steps)
    state = fold.rebuild(spec, rows)
    assert all(reason == "" for reason in state.verdicts.values()), state.verdicts
    assert all(v >= 0 for v in state.balances.values())
    assert sum(state.balances.values()) == state.total_minted_ucr  # transfers conserve credit
    assert sum(state.outputs.values()) == state.total_minted_ucr


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 60), order_seed=st.integers(0, 2**32 - 1))
def test_balances_and_verdicts_do_not_depend_on_arrival_order(seed: int, steps: int, order_seed: int) -> None:
    spec, rows = simulate(seed, steps)
    a = fold.tables(fold.rebuild(spec, rows))
    b = fold.tables(fold.rebuild(spec, topological_shuffle(rows, random.Random(order_seed))))
    assert (a.balances, a.verdicts, a.frozen) == (b.balances, b.verdicts, b.frozen)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 60))
def test_incremental_changes_rebuild_the_same_tables(seed: int, steps: int) -> None:
    spec, rows = simulate(seed, steps)
    assert replay_as_a_store(spec, rows) == fold.tables(fold.rebuild(spec, rows))


def replay_as_a_store(spec: SwarmSpec, rows: list[Entry]) -> fold.Tables:
    """Applies `rows` one by one and keeps the derived tables as ledger/writer.py does."""
    state = fold.initial(spec)
    persisted = fold.Tables({}, {}, [], {})
    records: dict[tuple[str, int], fold.RecordRow] = {}
    for i, entry in enumerate(rows):
        state = fold.apply(state, entry)
        if state.needs_rebuild:
            state = fold.rebuild(spec, rows[:i + 1])
        changes = fold.take_changes(state)
        if changes.replace_all:
            persisted = fold.Tables({}, {}, [], {})
            records.clear()
        persisted.balances.update(changes.balances)
        persisted.frozen.update(changes.frozen)
        records.update({(r.platform_class, r.n): r for r in changes.records})  # INSERT OR REPLACE
        persisted.verdicts.update(changes.verdicts)
        persisted.seals.update(changes.seals)
    # a balance that went to zero stays in the file as a 0 row, which readers take for no balance
    return dataclasses.replace(persisted, balances={k: v for k, v in persisted.balances.items() if v},
                               records=[records[k] for k in sorted(records)])


def test_minting_is_bounded_by_progress() -> None:
    spec, rows = simulate(seed=7, steps=400)
    state = fold.rebuild(spec, rows)
    mints = [e.body for e in rows if isinstance(e.body, Mint) and e.body.reason == "record" and state.verdicts[e.id] == ""]
    assert len(mints) >= 2
    # one record's worth per record, whoever mints it: the sum telescopes to the class's progress
    by_class = {}
    for row in state.records:
        by_class.setdefault(row.platform_class, []).append(row.value)
    progress = sum(RATE * (values[0] - values[-1]) for values in by_class.values())
    assert 0 < sum(m.amount for m in mints) <= progress


def test_a_claim_whose_numbers_do_not_reproduce_is_refuted_and_mints_nothing() -> None:
    from ledger import credits
    from tests.ledger.factory import NOISE, Feeds, claim, record_mint, seal, verify

    signed = make_spec(CREATOR, VERIFIERS, quorum=2)
    feeds, state = Feeds(signed.swarm_id), fold.initial(signed.spec)
    liar = feeds.sign(USERS[0], claim(1, 0.80))          # claims 0.80
    honest = feeds.sign(USERS[1], claim(2, 1.20))
    for entry in (liar, honest, feeds.sign(VERIFIERS[0], seal(liar, honest))):
        fold.apply(state, entry)
    measured = [feeds.sign(v, verify(liar, 1.25 + i * NOISE / 2)) for i, v in enumerate(VERIFIERS)]
    for entry in measured:
        fold.apply(state, entry)
    assert liar.id in state.refuted and liar.id not in state.verified and not state.records
    assert abs(state.refuted[liar.id] - 1.2525) < 1e-9  # what the swarm measured, kept for the record
    mint = record_mint(liar, measured, 1.2525, None, 0)
    assert credits.check_mint(state, VERIFIERS[0].public_key, mint)  # refused: not verified
    late = feeds.sign(identity(103), verify(liar, 0.80))  # nothing reopens it, even an agreeing number
    fold.apply(state, late)
    assert liar.id in state.refuted and liar.id not in state.verified
    for v in VERIFIERS:  # an honest claim within the noise of its re-runs is verified as before
        fold.apply(state, feeds.sign(v, verify(honest, 1.20 + NOISE / 2)))
    assert honest.id in state.verified and state.records[0].claim == honest.id
