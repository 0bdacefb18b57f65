"""Verification choices and mints against a real ledger file: every mint the node builds is one the fold accepts."""
from __future__ import annotations

import io
from pathlib import Path

from ledger.bodies import Claim, Verify
from ledger.store import Ledger
from node.display import Display
from node.history import History
from node.verifier import (fits_budget, owed_fees, owed_records, record_mint, verification_mint,
                           verification_queue)
from tests.ledger.factory import CLASS, NOISE, RATE, commit, identity, make_spec

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
        # before anything is verified: every successful claim, the baseline first
        assert [r.id for r in verification_queue(ledger.state, history, me, CLASS, set())] == [base.id, worse.id]
        assert crash.id not in [r.id for r in verification_queue(ledger.state, history, me, CLASS, set())]
        assert verification_queue(ledger.state, history, RESEARCHER.public_key, CLASS, set()) == []  # not trusted

        v0 = await ledger.publish(VERIFIER, _verify(base.id, base.body, 1.9), time_ms=4)  # type: ignore[arg-type]
        mint, why = record_mint(ledger.state, me, base.id)
        assert mint is not None and mint.amount == 0 and mint.prev_best is None, why  # first record: nothing
        await ledger.publish(VERIFIER, mint, time_ms=5)
        fee = verification_mint(ledger.state, me, v0.id)
        assert fee is not None and fee.amount == 1000
        await ledger.publish(VERIFIER, fee, time_ms=6)

        good = await ledger.publish(RESEARCHER, _claim(3, 1.8), time_ms=7)
        close = await ledger.publish(RESEARCHER, _claim(4, 1.9 - NOISE / 2), time_ms=8)
        await history.sync(ledger)
        # now only claims that beat the best (1.9) by more than the noise
        assert [r.id for r in verification_queue(ledger.state, history, me, CLASS, set())] == [good.id]
        assert verification_queue(ledger.state, history, me, CLASS, {good.id}) == []
        assert close.id in history.claims
        await ledger.publish(VERIFIER, _verify(good.id, good.body, 1.7), time_ms=9)  # type: ignore[arg-type]
        mint, why = record_mint(ledger.state, me, good.id)
        assert mint is not None and mint.prev_best == 1.9 and mint.to == RESEARCHER.public_key, why
        assert mint.amount == int(RATE * (1.9 - 1.7))
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
        v0 = await ledger.publish(VERIFIER, _verify(base.id, base.body, 2.0), time_ms=2)  # type: ignore[arg-type]
        good = await ledger.publish(RESEARCHER, _claim(1, 1.5), time_ms=3)
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
