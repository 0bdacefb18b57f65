"""Property tests of the fold: any valid history folds, in any order its dependencies allow."""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import fold
from ledger.bodies import Mint
from ledger.credits import record_share_ucr
from ledger.entry import Entry
from tests.ledger.factory import RATE, Feeds, claim, identity, make_spec, post, record_mint, transfer, verify

CREATOR = identity(100)
VERIFIERS = [identity(101), identity(102)]
USERS = [identity(110 + i) for i in range(4)]


def simulate(seed: int, steps: int) -> tuple[object, list[Entry]]:
    """A random history of valid entries, built by consulting the fold as an honest node would."""
    rng = random.Random(seed)
    signed = make_spec(CREATOR, VERIFIERS, quorum=1)
    feeds = Feeds(signed.swarm_id)
    state = fold.initial(signed.spec)
    rows: list[Entry] = []
    claims: list[Entry] = []
    verifies: list[Entry] = []

    def add(who, body) -> Entry:
        nonlocal state
        entry = feeds.sign(who, body)
        rows.append(entry)
        state = fold.apply(state, entry)
        return entry

    for n in range(steps):
        action = rng.choice(["claim", "claim", "verify", "pay", "post", "vmint"])
        if action == "claim":
            claims.append(add(rng.choice(USERS), claim(n, round(rng.uniform(1.0, 2.0), 3))))
        elif action == "verify" and claims:
            c = rng.choice(claims)
            v = rng.choice(VERIFIERS)
            value = c.body.val_bpb  # type: ignore[union-attr]
            ver = add(v, verify(c, value))
            verifies.append(ver)
            prev = state.verifier_best.get((v.public_key, "cpu-tiny"))
            if (v.public_key, c.id) in state.minted:
                continue
            if prev is None:
                add(v, record_mint(c, [ver], value, None, 0))
            elif value < prev - 0.01:
                add(v, record_mint(c, [ver], value, prev, record_share_ucr(RATE, prev, value, 1)))
        elif action == "vmint" and verifies:
            ver = rng.choice(verifies)
            me = next(v for v in VERIFIERS if v.public_key == ver.author)
            if (me.public_key, ver.id) not in state.minted:
                add(me, Mint(reason="verification", subject=ver.id, quorum=[], to=me.public_key,
                             amount=1000, value=None, prev_best=None))
        elif action == "pay":
            payer = rng.choice(USERS + VERIFIERS)
            mine = [(eid, amt) for (eid, owner), amt in state.outputs.items() if owner == payer.public_key]
            if mine:
                picked = rng.sample(mine, k=rng.randint(1, len(mine)))
                total = sum(a for _, a in picked)
                to = rng.choice([u for u in USERS + VERIFIERS if u is not payer])
                add(payer, transfer(to, rng.randint(1, total), [e for e, _ in picked]))
        else:
            add(rng.choice(USERS), post(f"note {n}"))
    return signed.spec, rows


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
    state = fold.initial(spec)
    persisted = fold.Tables({}, {}, [], {})
    for entry in rows:
        state = fold.apply(state, entry)
        changes = fold.take_changes(state)
        persisted.balances.update(changes.balances)
        persisted.frozen.update(changes.frozen)
        persisted.records.extend(changes.records)
        persisted.verdicts.update(changes.verdicts)
    assert persisted == fold.tables(fold.rebuild(spec, rows))


def test_minting_is_bounded_by_progress() -> None:
    spec, rows = simulate(seed=7, steps=400)
    state = fold.rebuild(spec, rows)
    for verifier in VERIFIERS:
        mints = [e.body for e in rows if e.author == verifier.public_key and isinstance(e.body, Mint)
                 and e.body.reason == "record" and state.verdicts[e.id] == ""]
        assert len(mints) >= 2
        minted = sum(m.amount for m in mints)
        # the verifier's record mints telescope: no more than the progress it witnessed
        assert 0 < minted <= RATE * (mints[0].value - mints[-1].value) / spec.quorum
