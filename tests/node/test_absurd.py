"""Issue 12 on the node's side: nobody admitted for asking, our own absurd claims published as
rejected, and the verifier queue's filters (implausible claims, barred authors) over a real
ledger file, as node/research/verifier.py is to apply them."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import fold
from ledger.bodies import Admit, Claim, Seal, Verify
from ledger.plausible import implausible
from ledger.spec import sign_spec
from ledger.standing import STRIKE_MARGIN, barred_authors
from ledger.store import Ledger
from node.research.admission import due_admissions
from node.research.history import ClaimRecord, History
from node.research.limits import MAX_CLAIM_MESSAGE
from node.research.submit import refuse_implausible
from node.research.verifier import settled, verification_queue
from tests.ledger.factory import CLASS, NOISE, Feeds, commit, identity, make_spec

CREATOR, VERIFIER, HONEST, LIAR = identity(1300), identity(1301), identity(1302), identity(1303)
MAX_STEPS = 30_000


def _claim(n: int, value: float | None, *, steps: int = 900, parent: int | None = 0, message: str = "") -> Claim:
    return Claim(commit=commit(n), parent=None if parent is None else commit(parent), platform_class=CLASS,
                 status="ok" if value is not None else "crash", val_bpb=value, num_steps=steps, planned_steps=steps,
                 seed=3, training_s=29.0, wall_s=35.0, peak_vram_mb=0.0, loss_curve=[], diff_summary=f"key: k-{n}",
                 message=message, bundle=None)


# -- admission


def test_the_creator_admits_only_the_keys_it_was_told_to() -> None:
    listed, stranger, frozen, elsewhere = identity(1310), identity(1311), identity(1312), identity(1313)
    spec = make_spec(CREATOR, [VERIFIER])
    state = fold.initial(spec.spec)
    state.frozen[frozen.public_key] = 1
    profiles = {listed.public_key: CLASS, stranger.public_key: CLASS, frozen.public_key: CLASS,
                elsewhere.public_key: "tpu", VERIFIER.public_key: CLASS}
    keys = {listed.public_key, frozen.public_key, elsewhere.public_key, VERIFIER.public_key, identity(1314).public_key}
    assert due_admissions(state, profiles, keys) == [Admit(verifier=listed.public_key, platform_classes=[CLASS])]
    assert due_admissions(state, profiles, set()) == []  # the default: a profile alone admits nobody
    fold.apply(state, Feeds(spec.swarm_id).sign(CREATOR, due_admissions(state, profiles, keys)[0]))
    assert due_admissions(state, profiles, keys) == []  # admitted: nothing more to do


@settings(max_examples=60, deadline=None)
@given(listed=st.sets(st.integers(0, 9)), profiled=st.sets(st.integers(0, 9)))
def test_an_admission_needs_both_a_listing_and_a_profile(listed: set[int], profiled: set[int]) -> None:
    spec = make_spec(CREATOR, [VERIFIER])
    state = fold.initial(spec.spec)
    keys = {n: identity(1400 + n).public_key for n in range(10)}
    admitted = due_admissions(state, {keys[n]: CLASS for n in profiled}, {keys[n] for n in listed})
    assert {a.verifier for a in admitted} == {keys[n] for n in listed & profiled}


# -- our own claims


def test_a_run_that_reports_impossible_steps_is_published_as_rejected() -> None:
    spec = dataclasses.replace(make_spec(CREATOR, [VERIFIER]).spec, max_steps={CLASS: MAX_STEPS})
    honest = _claim(1, 1.5, message="agent: lr")
    assert refuse_implausible(spec, honest) is honest
    absurd = refuse_implausible(spec, _claim(2, 0.5, steps=10**6, message="agent: lr"))
    assert absurd.status == "rejected" and absurd.val_bpb is None and absurd.num_steps == 10**6
    assert absurd.message.startswith("agent: lr: refused: 1000000 steps cannot fit")
    long = refuse_implausible(spec, _claim(3, 0.5, steps=10**6, message="x" * MAX_CLAIM_MESSAGE))
    assert len(long.message) == MAX_CLAIM_MESSAGE  # still a claim the ledger accepts
    assert Claim.from_map(absurd.to_map()) == absurd


# -- the verifier's queue, with the filters the lead wires into verification_queue


def _queue(state: fold.State, history: History) -> list[bytes]:
    """verification_queue, then the one-line filter the report asks node/research/verifier.py to add."""
    barred = barred_authors(state)
    return [r.id for r in verification_queue(state, history, VERIFIER.public_key, CLASS, set())
            if not implausible(state.spec, r.body) and r.author not in barred]


async def test_the_queue_skips_absurd_claims_and_barred_authors(tmp_path: Path) -> None:
    spec = sign_spec(CREATOR, dataclasses.replace(make_spec(CREATOR, [VERIFIER]).spec, max_steps={CLASS: MAX_STEPS}))
    async with Ledger.open(tmp_path / "l.sqlite", spec) as ledger:
        history = History()
        clock = iter(range(1, 10**6))

        async def publish(who: object, body: object) -> ClaimRecord:
            entry = await ledger.publish(who, body, time_ms=next(clock))  # type: ignore[arg-type]
            if isinstance(body, Claim):  # the anchor's seal, as its node publishes one: then replays count
                await ledger.publish(VERIFIER, Seal(claims=[entry.id]), time_ms=next(clock))
            return ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, body)  # type: ignore[arg-type]

        base = await publish(HONEST, _claim(0, 2.0, parent=None))
        await publish(VERIFIER, Verify(claim=base.id, commit=base.body.commit, platform_class=CLASS, status="ok",
                                       val_bpb=2.0, num_steps=900, seed=3, training_s=29.0))
        absurd = await publish(LIAR, _claim(1, 1.0, steps=10**6))
        good = await publish(HONEST, _claim(2, 1.8))
        await history.sync(ledger)
        # open and far past the bar: only the filter keeps a verifier from a million steps, killed each time
        assert not settled(ledger.state, absurd) and absurd.body.val_bpb < good.body.val_bpb  # type: ignore[operator]
        assert _queue(ledger.state, history) == [good.id]

        # the liar's plausible claims are refuted one by one; past the margin it is no longer replayed
        for n in range(STRIKE_MARGIN + 1):
            lie = await publish(LIAR, _claim(10 + n, 1.0))
            await publish(VERIFIER, Verify(claim=lie.id, commit=lie.body.commit, platform_class=CLASS, status="ok",
                                           val_bpb=1.0 + 50 * NOISE, num_steps=900, seed=3, training_s=29.0))
        await history.sync(ledger)
        assert LIAR.public_key in barred_authors(ledger.state)
        next_lie = await publish(LIAR, _claim(99, 1.0))
        honest_next = await publish(HONEST, _claim(98, 1.0))  # the same numbers from an author in good standing
        await history.sync(ledger)
        assert not settled(ledger.state, next_lie)
        queue = _queue(ledger.state, history)
        assert next_lie.id not in queue and honest_next.id in queue
    async with Ledger.open(tmp_path / "l.sqlite") as again:  # the same verdicts from the file alone
        history = History()
        await history.sync(again)
        assert LIAR.public_key in barred_authors(again.state)
        assert next_lie.id not in _queue(again.state, history) and absurd.id not in _queue(again.state, history)
