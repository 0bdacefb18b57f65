"""node/market/policy.py: the market's pure decisions (request checks, offer choice, spot-check pick)."""
from __future__ import annotations

import hashlib
import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import fold
from ledger import market as ledger_market
from ledger.bodies import Body, Mint, Offer, Receipt, Settle, Transfer
from ledger.entry import Entry
from ledger.keys import Identity
from node.web.views import jobs_table
from tests.ledger import factory

from node.market.policy import (MAX_JOB_S, BadJobRequest, JobRequest, OfferView, accept_due, check_request,
                                choose_offer, cost_ucr, gpu_ms, job_rows, needed_holders, parse_train_args,
                                replay_verdict, reputation_score, should_offer, signed_gpu_s, spot_checked)

COMMIT = b"c" * 20


def request(**changes: object) -> JobRequest:
    fields: dict[str, object] = {"job_type": "train", "commit": COMMIT, "bundle": b"b" * 32, "args": ("--steps", "20"),
                                 "platform_class": "cpu-tiny", "max_gpu_s": 10, "price_ucr_per_gpu_s": 100,
                                 "expires_s": 60}
    fields.update(changes)
    return JobRequest(**fields)  # type: ignore[arg-type]


def check(req: JobRequest, balance: int = 10**6) -> None:
    check_request(req, balance_ucr=balance, platform_classes=["cpu-tiny"], now_ms=1000)


def test_a_good_request_becomes_a_job() -> None:
    job = check_request(request(), balance_ucr=1000, platform_classes=["cpu-tiny"], now_ms=5000)
    assert job.max_gpu_s == 10 and job.price_ucr_per_gpu_s == 100 and job.expires_ms == 65_000
    assert job.args == ["--steps", "20"]


@pytest.mark.parametrize(("changes", "balance", "says"), [
    ({"job_type": "mine-bitcoin"}, 10**6, "unknown job type 'mine-bitcoin'"),
    ({"price_ucr_per_gpu_s": -5}, 10**6, "price must be positive"),
    ({"price_ucr_per_gpu_s": 0}, 10**6, "price must be positive"),
    ({"max_gpu_s": 0}, 10**6, "max GPU-seconds must be 1 to"),
    ({"max_gpu_s": 11}, 1000, "11 GPU-seconds at 100 ucr cost 1100 ucr, more than the balance of 1000 ucr"),
    ({"platform_class": "h100"}, 10**6, "platform class 'h100' is not one of"),
    ({"args": ("--steps", "10", "--data", "/etc")}, 10**6, "job arg '--data' is not allowed"),
    ({"args": ("--steps",)}, 10**6, "job args come in pairs"),
    ({"args": ("--steps", "-3")}, 10**6, "--steps must be a whole number"),
    ({"args": ("--seed", "1", "--seed", "2")}, 10**6, "--seed given twice"),
    ({"expires_s": 0}, 10**6, "expiry must be 1 to"),
])
def test_bad_requests_get_one_line(changes: dict[str, object], balance: int, says: str) -> None:
    with pytest.raises(BadJobRequest) as info:
        check(request(**changes), balance)
    text = str(info.value)
    assert says in text and "\n" not in text


def test_train_args_allow_list() -> None:
    assert parse_train_args(["--seed", "7", "--steps", "3"]).steps == 3
    assert parse_train_args([]).steps is None and parse_train_args([]).seed == 0


def offer(n: int, author: int, price: int, expires_ms: int = 10**9) -> OfferView:
    return OfferView(offer_id=bytes([n]) * 32, author=bytes([author]) * 32, price_ucr_per_gpu_s=price,
                     expires_ms=expires_ms, arrival=n)


def test_offers_by_price_then_reputation_then_arrival() -> None:
    offers = [offer(1, 1, 90), offer(2, 2, 80), offer(3, 3, 80), offer(4, 4, 70, expires_ms=10), offer(5, 5, 200)]
    rep = {bytes([2]) * 32: (0, 3), bytes([3]) * 32: (5, 0)}
    chosen = choose_offer(offers, job_price=100, reputation=rep, now_ms=1000)
    assert chosen is not None and chosen.arrival == 3  # 4 expired, 5 over the job's price, 3 beats 2 on reputation
    assert choose_offer(offers, 100, {}, 1000).arrival == 2  # type: ignore[union-attr]
    assert choose_offer(offers, 100, {}, 1000, exclude=frozenset({bytes([2]) * 32, bytes([3]) * 32})).arrival == 1  # type: ignore[union-attr]
    assert choose_offer([offer(5, 5, 200)], 100, {}, 1000) is None


def test_reputation_prior_and_order() -> None:
    assert reputation_score(0, 0) == 0.5
    assert reputation_score(3, 0) > reputation_score(0, 0) > reputation_score(0, 1)


def test_accept_window_counts_from_the_later_of_job_and_first_offer() -> None:
    assert not accept_due(1000, None, 10**9, 500)
    assert not accept_due(1000, 1200, 1600, 500)
    assert accept_due(1000, 1200, 1700, 500)


def test_offer_rules() -> None:
    base: dict[str, object] = {"job_author": b"p", "job_class": "cpu-tiny", "job_type": "train", "job_price": 100,
                               "job_expires_ms": 5000, "me": b"e", "my_classes": ["cpu-tiny"], "my_price": 50,
                               "free_slots": 1, "offered": False, "now_ms": 1000}
    assert should_offer(**base)  # type: ignore[arg-type]
    for key, value in [("job_author", b"e"), ("job_class", "h100"), ("my_price", 101), ("free_slots", 0),
                       ("offered", True), ("now_ms", 5000), ("job_type", "other")]:
        assert not should_offer(**{**base, key: value})  # type: ignore[arg-type]


def test_holders_needed() -> None:
    assert [needed_holders(n) for n in range(5)] == [0, 1, 2, 2, 2]


@given(st.binary(min_size=32, max_size=32), st.floats(min_value=0, max_value=1))
def test_spot_check_pick_is_the_hash_rule(receipt_id: bytes, rate: float) -> None:
    value = int.from_bytes(hashlib.sha256(receipt_id).digest()[:8], "big")
    assert spot_checked(receipt_id, rate) == (rate >= 1 or (rate > 0 and value < rate * 2**64))


def test_spot_check_rate_is_roughly_honoured() -> None:
    picked = sum(spot_checked(hashlib.sha256(b"%d" % i).digest(), 0.25) for i in range(4000))
    assert 850 < picked < 1150


def test_gpu_milliseconds_round_up_and_are_capped_at_the_limit() -> None:
    assert gpu_ms(3.21, 1, 10) == 3210
    assert gpu_ms(3.2101, 1, 10) == 3211
    assert gpu_ms(30.0, 1, 10) == 10_000
    assert gpu_ms(2.0, 0, 10) == 2000  # a CPU counts as one device
    assert gpu_ms(-1.0, 1, 10) == 0


@given(st.integers(0, MAX_JOB_S * 1000), st.integers(1, 10**6))
def test_the_signed_gpu_seconds_cost_on_the_ledger_exactly_the_integer_milliseconds(ms: int, price: int) -> None:
    """The ledger reads the signed float exactly and rounds up; from below it reads back the same
    integer milliseconds, so payer, executor and test agree to the micro-credit (12.56 s at 50
    ucr/GPU-s costs 628, not the 629 of the float just above 12.56)."""
    signed = signed_gpu_s(ms)
    assert Fraction(signed) <= Fraction(ms, 1000)
    assert ledger_market.cost_ucr(signed, price) == cost_ucr(ms, price) == math.ceil(Fraction(ms * price, 1000))
    assert math.ceil(Fraction(signed) * 1000) == ms   # the reputation's GPU-milliseconds
    assert round(signed * 1000) == ms


def test_the_off_by_one_the_market_test_met_is_gone() -> None:
    assert ledger_market.cost_ucr(12.56, 50) == 629   # the float 12.56 is a little over 12.56
    assert ledger_market.cost_ucr(signed_gpu_s(12_560), 50) == 628


def test_replay_verdict() -> None:
    assert replay_verdict({"val_bpb": 2.0, "num_steps": 20}, 2.001, 20, 0.01)[0]
    ok, why = replay_verdict({"val_bpb": 1.0, "num_steps": 20}, 2.0, 20, 0.01)
    assert not ok and "measured val_bpb 2.0000" in why and "claimed 1.0000" in why
    assert not replay_verdict({"val_bpb": 2.0, "num_steps": 20}, 2.0, 19, 0.01)[0]
    assert not replay_verdict({"val_bpb": 2.0}, None, 0, 0.01)[0]


def test_job_rows_and_the_dashboard_table_follow_a_job_to_settlement() -> None:
    payer, executor, verifier = factory.identity(60), factory.identity(61), factory.identity(62)
    spec = factory.make_spec(factory.identity(63), [verifier])
    feeds = factory.Feeds(spec.swarm_id)
    state = fold.initial(spec.spec)

    def add(who: Identity, body: Body) -> Entry:
        entry = feeds.sign(who, body)
        fold.apply(state, entry)
        assert not state.verdicts.get(entry.id), state.verdicts[entry.id]
        return entry

    claim = add(payer, factory.claim(1, 1.5))
    add(verifier, factory.seal(claim))
    verify = add(verifier, factory.verify(claim, 1.5))
    add(verifier, Mint(reason="verification", subject=verify.id, quorum=[], to=verifier.public_key, amount=1000,
                       value=None, prev_best=None))
    funds = add(verifier, factory.transfer(payer, 1000, [e for (e, o) in state.outputs if o == verifier.public_key]))
    job_body = check_request(request(max_gpu_s=10, price_ucr_per_gpu_s=50), balance_ucr=1000,
                             platform_classes=["cpu-tiny"], now_ms=feeds.clock_ms)
    job = add(payer, job_body).id
    offer = add(executor, Offer(job=job, price_ucr_per_gpu_s=40, expires_ms=job_body.expires_ms)).id
    payment = add(payer, Transfer(to=executor.public_key, amount=400, spends=[funds.id], memo="escrow", job=job,
                                  offer=offer)).id
    (row,) = job_rows(state, 10)
    assert row["status"] == "accepted" and row["held_ucr"] == 400 and row["offer_price"] == 40
    receipt = add(executor, Receipt(job=job, offer=offer, payment=payment, status="ok", gpu_s=2.5,
                                    metrics={"val_bpb": 2.0}, artifacts=[], log_tail="")).id
    add(payer, Settle(job=job, payment=payment, receipt=receipt, outcome="paid", amount=100, reason="ok"))
    (row,) = job_rows(state, 10)
    assert (row["status"], row["gpu_s"], row["paid_ucr"], row["refund_ucr"]) == ("settled", 2.5, 100, 300)
    table = jobs_table(state)
    assert table["rows"][0][1]["text"] == "settled" and table["rows"][0][-1]["text"].startswith("paid")
