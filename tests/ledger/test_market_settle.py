"""The credits market's settlement rules on real ledger files: amounts, who settles which way, expiry,
and a forked payer. Split from tests/ledger/test_market.py, whose helpers these tests share."""
from __future__ import annotations

from pathlib import Path

from ledger import fold, market
from ledger.store import Ledger, Status
from tests.ledger.factory import Feeds
from tests.ledger.test_market import (  # noqa: F401  (world is a fixture)
    ALICE, BOB, E1, E2, SPEC, V2, FUND_UCR, Market, audit_ok, escrow_body, job_body, market_view, offer_body,
    receipt_body, settle_body, world,
)


# -- settlement


def test_cost_is_rounded_up_exactly() -> None:
    assert market.cost_ucr(0.0, 7) == 0
    assert market.cost_ucr(2.0, 7) == 14
    assert market.cost_ucr(2.5, 3) == 8                 # 7.5 -> 8
    assert market.cost_ucr(1e-9, 1) == 1                # any use costs at least one ucr
    assert market.cost_ucr(0.1, 10) == 2                # 0.1 is a little over 1/10 as a float: exact, so 2
    assert market.cost_ucr(3600.0, 10**9) == 3600 * 10**9  # no float rounding at large prices


async def test_paid_amount_is_exact_and_any_other_amount_is_refused(world: Market) -> None:
    w = world
    j, o, pay = await w.accepted(max_gpu_s=100, price=5)  # offer price 4: 400 held
    r = await w.add(E1, receipt_body(j, o, pay, gpu_s=2.5))  # 2.5 * 4 = 10 exactly
    r_cost = market.cost_ucr(2.5, 4)
    assert r_cost == 10
    for wrong in (9, 11, 400):
        assert "releases 10 ucr" in w.verdict(await w.add(ALICE, settle_body(j, "paid", pay, r, amount=wrong)))
    assert "only the payer or a trusted verifier" in w.verdict(await w.add(BOB, settle_body(j, "paid", pay, r, 10)))
    assert "only the payer or a trusted verifier" in w.verdict(await w.add(E1, settle_body(j, "paid", pay, r, 10)))
    good = await w.add(ALICE, settle_body(j, "paid", pay, r, amount=10))
    assert w.verdict(good) == ""
    assert w.balance(E1) == 10 and w.balance(ALICE) == FUND_UCR - 10
    # a trusted verifier's refund takes precedence over the payer's paid settle, even after it
    # (tests/ledger/test_market_truth.py has every race in both orders)
    second = await w.add(V2, settle_body(j, "refunded", pay, r, reason="late spot check"))
    assert w.verdict(second) == "" and w.verdict(good) == market.BEATEN
    assert w.balance(E1) == 0 and w.balance(ALICE) == FUND_UCR
    assert w.verdict(await w.add(ALICE, settle_body(j, "paid", pay, r, amount=10))) == market.ALREADY_SAID


async def test_a_trusted_verifier_refunds_a_receipt_its_spot_check_did_not_reproduce(world: Market) -> None:
    w = world
    j, o, pay = await w.accepted()
    r = await w.add(E1, receipt_body(j, o, pay, gpu_s=50.0))
    assert "only a trusted verifier" in w.verdict(await w.add(BOB, settle_body(j, "refunded", pay, r)))
    assert "only a trusted verifier" in w.verdict(await w.add(ALICE, settle_body(j, "refunded", pay, r)))
    assert "releases nothing" in w.verdict(await w.add(V2, settle_body(j, "refunded", pay, r, amount=1)))
    s = await w.add(V2, settle_body(j, "refunded", pay, r, reason="replay: val_bpb 1.31, receipt says 1.2"))
    assert w.verdict(s) == ""
    assert w.balance(ALICE) == FUND_UCR and w.balance(E1) == 0 and w.state.held == {}
    assert market.job_status(w.state, j.id) == "refunded"
    assert (w.state.reputation[E1.public_key].paid, w.state.reputation[E1.public_key].refunded) == (0, 1)
    # a verifier may also confirm: another job, settled paid by V2
    j2, o2, pay2 = await w.accepted(executor=E2)
    r2 = await w.add(E2, receipt_body(j2, o2, pay2, gpu_s=1.0))
    assert w.verdict(await w.add(V2, settle_body(j2, "paid", pay2, r2, amount=4))) == ""
    assert w.balance(E2) == 4


async def test_the_payer_refunds_only_after_expiry_and_only_without_a_receipt(world: Market) -> None:
    w = world
    w.feeds.clock_ms = 10_000
    j, o, pay = await w.accepted(expires_ms=20_000)
    early = await w.add(ALICE, settle_body(j, "refunded", pay, reason="nothing came back"))
    assert "not expired yet" in w.verdict(early)
    w.feeds.clock_ms = 20_000  # the next entry is signed at 20_001
    assert "only the payer refunds" in w.verdict(await w.add(BOB, settle_body(j, "refunded", pay)))
    refund = await w.add(ALICE, settle_body(j, "refunded", pay, reason="nothing came back by expiry"))
    assert w.verdict(refund) == "" and w.balance(ALICE) == FUND_UCR
    assert w.state.reputation[E1.public_key].refunded == 1
    # a receipt that was in flight beats the refund: the escrow is held again until the job is settled
    late = await w.add(E1, receipt_body(j, o, pay, 1.0))
    assert w.verdict(late) == "" and w.verdict(refund) == market.RECEIPT_BEATS_REFUND
    assert w.balance(ALICE) == FUND_UCR - 400 and w.state.held == {ALICE.public_key: 400}
    assert market.job_status(w.state, j.id) == "ran" and E1.public_key not in w.state.reputation
    # with a receipt, expiry is no reason: the receipt is settled by the payer or a verifier
    w.feeds.clock_ms = 30_000
    j2, o2, pay2 = await w.accepted(expires_ms=30_010)
    r2 = await w.add(E1, receipt_body(j2, o2, pay2, 1.0))
    w.feeds.clock_ms = 40_000
    assert "has a receipt" in w.verdict(await w.add(ALICE, settle_body(j2, "refunded", pay2)))
    assert market.job_status(w.state, j2.id) == "ran" and r2.id in w.state.receipts


# -- forks


async def test_a_payer_forking_two_escrow_payments_is_frozen_and_pays_no_one(tmp_path: Path) -> None:
    feeds = Feeds(SPEC.swarm_id)
    async with Ledger.open(tmp_path / "a", SPEC) as a, Ledger.open(tmp_path / "b", SPEC) as b:
        wa, wb = Market(a, feeds), Market(b, feeds)
        fund = await wa.fund(ALICE)
        j = await wa.add(ALICE, job_body())
        o1, o2 = await wa.add(E1, offer_body(j)), await wa.add(E2, offer_body(j))
        for entry in wa.rows:
            await wb.append(entry)
        seq, prev = feeds.heads[ALICE.public_key]
        # the double spend: the same funding output, two executors, one seq
        pay1 = await wa.add(ALICE, escrow_body(j, o1, [fund.id]))
        pay2 = await wb.append(feeds.sign_at(ALICE, seq + 1, prev, escrow_body(j, o2, [fund.id])))
        assert wa.verdict(pay1) == "" and wb.verdict(pay2) == ""  # each node alone sees a valid payment
        assert wa.state.held == wb.state.held == {ALICE.public_key: 400}
        r1 = await wa.add(E1, receipt_body(j, o1, pay1, 10.0))  # E1 ran (it should have waited: witnesses)
        fork = await a.append(pay2)
        assert fork.status is Status.FORK and fork.fraud is not None
        proof = await wa.add(BOB, fork.fraud)  # anyone may publish the proof
        await wb.append(proof)
        for w in (wa, wb):
            assert w.state.frozen == {ALICE.public_key: seq + 1}
            assert w.state.escrows == {} and w.state.held == {} and w.state.receipts == {}
            assert w.balance(E1) == 0 and w.balance(E2) == 0
            assert market.job_status(w.state, j.id) == "open"  # the job came before the fork
        assert wa.verdict(pay1) == "author is frozen by a fork proof"
        assert "no escrow payment" in wa.verdict(r1)
        late = feeds.sign(ALICE, settle_body(j, "cancelled"))
        outcome = await a.append(late)
        assert outcome.status is Status.REJECTED and "frozen" in outcome.reason
        # the incremental fold (rebuilt by the writer after the proof) equals a fold from scratch
        for w in (wa, wb):
            rebuilt = fold.rebuild(SPEC.spec, w.rows)
            assert fold.tables(w.state) == fold.tables(rebuilt)
            assert market_view(w.state) == market_view(rebuilt)
        assert fold.tables(wa.state).balances == fold.tables(wb.state).balances
    audit_ok(tmp_path / "a")
    audit_ok(tmp_path / "b")
