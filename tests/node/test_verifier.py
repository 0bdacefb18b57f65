"""Verification choices and mints against a real ledger file: every mint the node builds is one the fold accepts."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from ledger import assign, fold
from ledger.bodies import Claim, Seal, Verify
from ledger.entry import Entry
from ledger.fold import State
from ledger.keys import Identity
from ledger.store import Ledger
from node.display import Display
from node.research.history import ClaimRecord, History
from node.research.verifier import (CLAIM_Z, CONFIRM_REPLAYS, SPEC_NOISE_SDS, STALL_BUDGETS, fits_budget, noise_sd, owed_fees, owed_records,
                           quorum_of, record_mint, reference, sealable, unpaired_settled, verification_mint,
                           unpaired_queue)
from tests.ledger.factory import CLASS, NOISE, RATE, Feeds, commit, identity, make_spec

RESEARCHER, VERIFIER = identity(1), identity(2)


def _claim(n: int, value: float | None, parent: int | None = 0) -> Claim:
    return Claim(commit=commit(n), parent=None if parent is None else commit(parent), platform_class=CLASS,
                 status="ok" if value is not None else "crash", val_bpb=value, num_steps=10, planned_steps=10, seed=3,
                 training_s=1.0, wall_s=2.0, peak_vram_mb=0.0, loss_curve=[], diff_summary=f"key: k1-{n:032x}", message="",
                 bundle=None)


def _verify(claim_id: bytes, body: Claim, value: float) -> Verify:
    return Verify(claim=claim_id, commit=body.commit, platform_class=CLASS, status="ok", val_bpb=value,
                  num_steps=body.num_steps, seed=body.seed, training_s=1.0)


async def test_queue_then_record_and_fee_mints_are_valid(tmp_path: Path) -> None:
    spec = make_spec(RESEARCHER, [VERIFIER], verify_ucr=1000)
    async with Ledger.open(tmp_path / "l.sqlite", spec) as ledger:
        history = History()
        base = await ledger.publish(RESEARCHER, _claim(0, 2.0, parent=None), time_ms=1)
        worse = await ledger.publish(RESEARCHER, _claim(1, 2.1), time_ms=2)
        crash = await ledger.publish(RESEARCHER, _claim(2, None), time_ms=3)
        await history.sync(ledger)
        me = VERIFIER.public_key
        assert unpaired_queue(ledger.state, history, me, CLASS, set()) == []  # nothing sealed yet
        assert sealable(ledger.state, me) == [base.id, worse.id]  # successful claims only, oldest first
        assert sealable(ledger.state, RESEARCHER.public_key) == []  # no anchor: its seal would not count
        await ledger.publish(VERIFIER, Seal(claims=sealable(ledger.state, me)), time_ms=3)
        # before anything is verified: the baseline only (a child would meet no bar)
        assert [r.id for r in unpaired_queue(ledger.state, history, me, CLASS, set())] == [base.id]
        assert crash.id not in [r.id for r in unpaired_queue(ledger.state, history, me, CLASS, set())]
        assert unpaired_queue(ledger.state, history, RESEARCHER.public_key, CLASS, set()) == []  # not trusted

        v0 = await ledger.publish(VERIFIER, _verify(base.id, base.body, 2.0), time_ms=4)  # type: ignore[arg-type]
        mint, why = record_mint(ledger.state, me, base.id)
        assert mint is not None and mint.amount == 0 and mint.prev_best is None, why  # first record: nothing
        await ledger.publish(VERIFIER, mint, time_ms=5)
        fee = verification_mint(ledger.state, me, v0.id)
        assert fee is not None and fee.amount == 1000
        await ledger.publish(VERIFIER, fee, time_ms=6)

        good = await ledger.publish(RESEARCHER, _claim(3, 1.8), time_ms=7)
        close = await ledger.publish(RESEARCHER, _claim(4, 2.0 - NOISE / 2), time_ms=8)
        await ledger.publish(VERIFIER, Seal(claims=sealable(ledger.state, me)), time_ms=8)
        await history.sync(ledger)
        # now only claims that beat the best (2.0) by more than the noise
        assert [r.id for r in unpaired_queue(ledger.state, history, me, CLASS, set())] == [good.id]
        assert unpaired_queue(ledger.state, history, me, CLASS, {good.id}) == []
        assert close.id in history.claims
        await ledger.publish(VERIFIER, _verify(good.id, good.body, 1.8), time_ms=9)  # type: ignore[arg-type]
        mint, why = record_mint(ledger.state, me, good.id)
        assert mint is not None and mint.prev_best == 2.0 and mint.to == RESEARCHER.public_key, why
        assert mint.amount == int(RATE * (2.0 - 1.8))
        await ledger.publish(VERIFIER, mint, time_ms=10)
        assert record_mint(ledger.state, me, good.id)[0] is None  # once per subject
        assert all(reason == "" for reason in ledger.state.verdicts.values())
        assert ledger.state.balances[RESEARCHER.public_key] == mint.amount
        assert ledger.state.balances[me] == 1000


def test_fit_check_and_display() -> None:
    assert fits_budget(300.0, 300) and fits_budget(12.0, 2) and not fits_budget(30.0, 2)
    out = io.StringIO()
    display = Display(out, tty=False)
    display.event("hello")
    display.start("cpu", "experiment X", 10.0)
    display.trainer_line("cpu", "[train] step 00004 (40%) | loss 6.1")
    display.summary = lambda: "best 1.0"
    line = display.status_line()
    assert out.getvalue().endswith(" hello\n") and "40%" in line and line.endswith("best 1.0")
    tty = io.StringIO()
    Display(tty, tty=True).event("x")
    assert tty.getvalue().startswith("") and "x\n" in tty.getvalue()


async def test_mints_owed_after_a_stop_are_found_in_record_order(tmp_path: Path) -> None:
    spec = make_spec(RESEARCHER, [VERIFIER], verify_ucr=1000)
    me = VERIFIER.public_key
    async with Ledger.open(tmp_path / "l.sqlite", spec) as ledger:
        base = await ledger.publish(RESEARCHER, _claim(0, 2.0, parent=None), time_ms=1)
        await ledger.publish(VERIFIER, Seal(claims=[base.id]), time_ms=1)
        v0 = await ledger.publish(VERIFIER, _verify(base.id, base.body, 2.0), time_ms=2)  # type: ignore[arg-type]
        good = await ledger.publish(RESEARCHER, _claim(1, 1.5), time_ms=3)
        await ledger.publish(VERIFIER, Seal(claims=[good.id]), time_ms=3)
        v1 = await ledger.publish(VERIFIER, _verify(good.id, good.body, 1.5), time_ms=4)  # type: ignore[arg-type]
        assert owed_records(ledger.state, me) == [base.id, good.id]
        assert [f.subject for f in owed_fees(ledger.state, me)] == [v0.id, v1.id]
        for claim_id in owed_records(ledger.state, me):
            mint, why = record_mint(ledger.state, me, claim_id)
            assert mint is not None, why
            await ledger.publish(VERIFIER, mint, time_ms=5)
        for fee in owed_fees(ledger.state, me):
            await ledger.publish(VERIFIER, fee, time_ms=6)
        assert owed_records(ledger.state, me) == [] and owed_fees(ledger.state, me) == []
        assert ledger.state.balances[RESEARCHER.public_key] == int(RATE * 0.5)
        assert all(reason == "" for reason in ledger.state.verdicts.values())


# -- the policy in a swarm of many verifiers, on the pure fold (no SQLite)

MANY = [identity(100 + i) for i in range(10)]


def _swarm(quorum: int = 2) -> tuple[State, Feeds, History]:
    signed = make_spec(RESEARCHER, MANY, quorum=quorum)
    state = fold.initial(signed.spec)
    return state, Feeds(state.swarm_id), History()


SEALER = MANY[-1]


def _publish(state: State, feeds: Feeds, history: History, who: Identity, body: Claim | Verify,
             sealed: bool = True) -> Entry:
    entry = feeds.sign(who, body)
    fold.apply(state, entry)
    if isinstance(body, Claim):
        history.add(ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, body))
        if sealed:  # an anchor node's seal loop seals it within seconds
            fold.apply(state, feeds.sign(SEALER, Seal(claims=[entry.id])))
    return entry


def _assigned(state: State, claim_id: bytes) -> list[Identity]:
    keys = assign.assignment(state, claim_id) or ()
    return sorted((v for v in MANY if v.public_key in keys), key=lambda v: keys.index(v.public_key))


def _takers(state: State, history: History, claim_id: bytes, now_ms: int | None = None) -> list[Identity]:
    return [v for v in MANY if claim_id in [r.id for r in unpaired_queue(state, history, v.public_key, CLASS, set(),
                                                                            now_ms=now_ms)]]


def _with_record(state: State, feeds: Feeds, history: History, value: float = 2.0) -> None:
    base = _publish(state, feeds, history, RESEARCHER, _claim(0, value, parent=None))
    for v in _assigned(state, base.id)[:2]:
        _publish(state, feeds, history, v, _verify(base.id, base.body, value))  # type: ignore[arg-type]
    assert state.best[CLASS] == value


def test_one_replay_first_then_the_quorum_then_more_when_stalled() -> None:
    state, feeds, history = _swarm()
    _with_record(state, feeds, history)
    good = _publish(state, feeds, history, RESEARCHER, _claim(1, 1.9))
    first = _takers(state, history, good.id)
    assert len(first) == 1  # not a stampede: one verifier's rank is 0
    _publish(state, feeds, history, first[0], _verify(good.id, good.body, 1.9))  # type: ignore[arg-type]
    second = _takers(state, history, good.id)
    assert len(second) == 1 and second != first  # the rest of the quorum
    stalled = good.time_ms + 1000 * state.spec.time_budget_s * (STALL_BUDGETS + 1)
    assert len(_takers(state, history, good.id, now_ms=stalled)) == 2  # one more rank opened
    assert len(_takers(state, history, good.id, now_ms=good.time_ms + 1000)) == 1
    _publish(state, feeds, history, second[0], _verify(good.id, good.body, 1.9))  # type: ignore[arg-type]
    assert good.id in state.verified and good.id == state.records[-1].claim
    # the new best is re-measured by the rest of its assignment, who mint no record share for it
    confirming = _takers(state, history, good.id, now_ms=stalled)
    wanted = min(state.spec.quorum + CONFIRM_REPLAYS, state.spec.assigned) - 2
    assert len(confirming) == wanted == 1 and not set(confirming) & set(first + second)
    for v in confirming:
        _publish(state, feeds, history, v, _verify(good.id, good.body, 1.88))  # type: ignore[arg-type]
        assert record_mint(state, v.public_key, good.id)[0] is None
    assert _takers(state, history, good.id, now_ms=stalled) == [] and unpaired_settled(state, history.claims[good.id])
    assert len(quorum_of(state, good.id)) == 2 and reference(state, CLASS) == pytest.approx(1.8933, abs=1e-4)


def test_only_the_keys_a_seal_assigns_ever_take_a_claim() -> None:
    state, feeds, history = _swarm()
    _with_record(state, feeds, history)
    waiting = _publish(state, feeds, history, RESEARCHER, _claim(1, 1.9), sealed=False)
    assert _takers(state, history, waiting.id, now_ms=10**12) == []  # no seal: no verifier, however long
    fold.apply(state, feeds.sign(SEALER, Seal(claims=[waiting.id])))
    assigned = _assigned(state, waiting.id)
    assert len(assigned) == state.spec.assigned
    assert set(_takers(state, history, waiting.id, now_ms=10**12)) == set(assigned)  # stalled: all of them


def test_a_replay_that_says_no_record_ends_the_claim() -> None:
    state, feeds, history = _swarm()
    _with_record(state, feeds, history)
    lucky = _publish(state, feeds, history, RESEARCHER, _claim(1, 1.9))
    first = _takers(state, history, lucky.id)
    assert not unpaired_settled(state, history.claims[lucky.id])
    _publish(state, feeds, history, first[0], _verify(lucky.id, lucky.body, 1.995))  # type: ignore[arg-type]
    assert unpaired_settled(state, history.claims[lucky.id]) and _takers(state, history, lucky.id, now_ms=10**12) == []


def test_claims_need_a_margin_over_the_noise() -> None:
    state, feeds, history = _swarm()
    _with_record(state, feeds, history)
    # beats the best by the noise (a record if replays agree) but not by noise + CLAIM_Z sd
    sd = NOISE / SPEC_NOISE_SDS  # too few replays: the sd the spec's noise implies
    close = _publish(state, feeds, history, RESEARCHER, _claim(1, 2.0 - NOISE - CLAIM_Z * sd / 2))
    assert not unpaired_settled(state, history.claims[close.id]) and _takers(state, history, close.id, now_ms=10**12) == []
    assert noise_sd(state, CLASS) == pytest.approx(sd)


def test_a_program_is_verified_once() -> None:
    state, feeds, history = _swarm()
    a = _publish(state, feeds, history, RESEARCHER, _claim(0, 2.0, parent=None))
    b = _publish(state, feeds, history, VERIFIER, _claim(0, 1.9, parent=None))  # the same commit again
    assert len(_takers(state, history, a.id)) == 1 and _takers(state, history, b.id) == []
    for v in _takers(state, history, a.id) + _takers(state, history, a.id):
        _publish(state, feeds, history, v, _verify(a.id, a.body, 2.0))  # type: ignore[arg-type]
    _publish(state, feeds, history, _takers(state, history, a.id)[0], _verify(a.id, a.body, 2.0))  # type: ignore[arg-type]
    assert a.id in state.verified and _takers(state, history, b.id, now_ms=10**12) == []


def test_noise_is_estimated_from_replays_of_one_claim() -> None:
    state, feeds, history = _swarm(quorum=3)
    for n in range(5):
        c = _publish(state, feeds, history, RESEARCHER, _claim(n, 2.0, parent=None if n == 0 else 0))
        for v, delta in zip(_assigned(state, c.id), (-0.003, 0.0, 0.003)):
            _publish(state, feeds, history, v, _verify(c.id, c.body, 2.0 + delta))  # type: ignore[arg-type]
    assert noise_sd(state, CLASS) == pytest.approx(0.003)  # 10 degrees of freedom, sd of (-3, 0, 3) milli
