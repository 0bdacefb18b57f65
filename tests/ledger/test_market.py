"""The credits market on real ledger files: jobs, offers, escrow, receipts, any order. Settlement rules and
a forked payer: tests/ledger/test_market_settle.py; rival settles and receipts: test_market_truth.py."""
from __future__ import annotations

import dataclasses
import io
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import audit, cli, fold, market
from ledger.bodies import Body, Job, Mint, Offer, Post, Receipt, Settle, Transfer
from ledger.entry import Entry
from ledger.feed import make_fraud
from ledger.keys import Identity
from ledger.spec import SignedSpec
from ledger.store import Ledger, Status
from tests.ledger.factory import CLASS, Appender, Feeds, claim, commit, identity, make_spec, seal, transfer, verify
from tests.ledger.test_fold import topological_shuffle

CREATOR, V1, V2 = identity(400), identity(401), identity(402)  # V1 funds payers, V2 spot-checks
ALICE, BOB = identity(410), identity(411)                        # payers
E1, E2, E3 = identity(420), identity(421), identity(422)         # executors
FUND_UCR = 1_000_000
SPEC = make_spec(CREATOR, [V1, V2], quorum=1, verify_ucr=FUND_UCR)


def job_body(max_gpu_s: int = 100, price: int = 5, expires_ms: int = 10**12, cls: str = CLASS) -> Job:
    return Job(job_type="train", commit=commit(1), bundle=None, args=["--steps", "10"], platform_class=cls,
               max_gpu_s=max_gpu_s, price_ucr_per_gpu_s=price, expires_ms=expires_ms)


def offer_body(job: Entry, price: int = 4) -> Offer:
    return Offer(job=job.id, price_ucr_per_gpu_s=price, expires_ms=10**12)


def escrow_body(job: Entry, offer: Entry, spends: list[bytes], amount: int | None = None) -> Transfer:
    j, o = job.body, offer.body
    assert isinstance(j, Job) and isinstance(o, Offer)
    held = j.max_gpu_s * o.price_ucr_per_gpu_s if amount is None else amount
    return Transfer(to=offer.author, amount=held, spends=spends, memo="escrow", job=job.id, offer=offer.id)


def receipt_body(job: Entry, offer: Entry, payment: Entry, gpu_s: float) -> Receipt:
    return Receipt(job=job.id, offer=offer.id, payment=payment.id, status="ok", gpu_s=gpu_s,
                   metrics={"val_bpb": 1.2}, artifacts=[], log_tail="done")


def settle_body(job: Entry, outcome: str, payment: Entry | None = None, receipt: Entry | None = None,
                amount: int = 0, reason: str = "") -> Settle:
    return Settle(job=job.id, payment=None if payment is None else payment.id,
                  receipt=None if receipt is None else receipt.id, outcome=outcome, amount=amount, reason=reason)


class Market:
    """A real ledger file driven entry by entry, with helpers for the market's steps."""

    def __init__(self, ledger: Ledger, feeds: Feeds) -> None:
        self.ledger, self.feeds = ledger, feeds
        self.rows: list[Entry] = []
        self.funds: dict[bytes, bytes] = {}  # payer -> the entry holding its funding output

    @property
    def state(self) -> fold.State:
        return self.ledger.state

    async def add(self, who: Identity, body: Body) -> Entry:
        return await self.append(self.feeds.sign(who, body))

    async def append(self, entry: Entry) -> Entry:
        outcome = await self.ledger.append(entry)
        assert outcome.status is Status.APPENDED, outcome
        self.rows.append(entry)
        return entry

    def verdict(self, entry: Entry) -> str:
        return self.state.verdicts[entry.id]

    def balance(self, who: Identity) -> int:
        return self.state.balances.get(who.public_key, 0)

    async def fund(self, payer: Identity) -> Entry:
        """V1 earns a verification mint and pays all of it to `payer`."""
        c = await self.add(payer, claim(len(self.rows), 1.5))
        await self.add(V1, seal(c))
        v = await self.add(V1, verify(c, 1.5))
        m = await self.add(V1, Mint(reason="verification", subject=v.id, quorum=[], to=V1.public_key,
                                    amount=FUND_UCR, value=None, prev_best=None))
        pay = await self.add(V1, transfer(payer, FUND_UCR, [m.id]))
        self.funds[payer.public_key] = pay.id
        return pay

    async def accepted(self, payer: Identity = ALICE, executor: Identity = E1, **job: Any) -> tuple[Entry, Entry, Entry]:
        j = await self.add(payer, job_body(**job))
        o = await self.add(executor, offer_body(j))
        pay = await self.add(payer, escrow_body(j, o, [self.funds[payer.public_key]]))
        assert self.verdict(pay) == "", self.verdict(pay)
        self.funds[payer.public_key] = pay.id  # the change output
        return j, o, pay


@pytest.fixture
async def world(tmp_path: Path) -> Any:
    async with Ledger.open(tmp_path / "ledger", SPEC) as ledger:
        m = Market(ledger, Feeds(SPEC.swarm_id))
        await m.fund(ALICE)
        yield m


def audit_ok(path: Path) -> audit.AuditReport:
    report = audit.audit_file(path, workers=1)
    assert report.ok, report.problems
    return report


def market_view(state: fold.State) -> tuple[Any, ...]:
    """The market's derived state as plain, order-free values."""
    jobs = {jid: (i.author, i.status, sorted(i.offers), i.payment, i.receipt, i.settle, i.revealed)
            for jid, i in state.jobs.items()}
    escrows = {eid: (e.payer, e.executor, e.job, e.offer, e.amount, e.settle) for eid, e in state.escrows.items()}
    reputation = {k: (r.paid, r.refunded, r.gpu_s) for k, r in state.reputation.items()}
    return jobs, dict(state.offers), escrows, dict(state.receipts), dict(state.held), reputation, dict(state.outputs)


# -- the whole flow


async def test_job_offer_escrow_receipt_settle_moves_exactly_what_was_used(world: Market, tmp_path: Path) -> None:
    w = world
    j = await w.add(ALICE, job_body(max_gpu_s=100, price=5))
    assert market.job_status(w.state, j.id) == "open" and market.open_jobs(w.state, CLASS) == [j.id]
    cheap, dear = await w.add(E1, offer_body(j, 4)), await w.add(E2, offer_body(j, 5))
    assert w.state.jobs[j.id].offers == [cheap.id, dear.id]
    pay = await w.add(ALICE, escrow_body(j, cheap, [w.funds[ALICE.public_key]]))
    assert w.verdict(pay) == ""
    assert w.balance(ALICE) == FUND_UCR - 400 and w.state.held == {ALICE.public_key: 400}
    assert w.balance(E1) == 0 and (pay.id, E1.public_key) not in w.state.outputs  # held, not owned
    assert market.job_status(w.state, j.id) == "accepted" and market.open_jobs(w.state, CLASS) == []
    r = await w.add(E1, receipt_body(j, cheap, pay, gpu_s=37.25))
    assert w.verdict(r) == "" and market.job_status(w.state, j.id) == "ran"
    to_executor, refund = market.settle_amount(w.state, j.id)
    assert (to_executor, refund) == (149, 251)  # 37.25 * 4 = 149 exactly; 400 held, 251 back
    s = await w.add(ALICE, settle_body(j, "paid", pay, r, amount=149, reason="receipt accepted"))
    assert w.verdict(s) == ""
    assert w.balance(ALICE) == FUND_UCR - 149 and w.balance(E1) == 149 and w.state.held == {}
    assert w.state.outputs[(s.id, E1.public_key)] == 149 and w.state.outputs[(s.id, ALICE.public_key)] == 251
    assert market.job_status(w.state, j.id) == "settled" and w.state.escrows[pay.id].settle == s.id
    rep = w.state.reputation[E1.public_key]
    assert (rep.paid, rep.refunded, rep.gpu_s) == (1, 0, 37.25)
    spend = await w.add(E1, transfer(BOB, 100, [s.id]))  # the executor's pay is an ordinary output
    assert w.verdict(spend) == "" and w.balance(E1) == 49 and w.balance(BOB) == 100
    assert sum(w.state.balances.values()) + sum(w.state.held.values()) == w.state.total_minted_ucr
    before = (fold.tables(w.state), market_view(w.state))
    await w.ledger.aclose()
    async with Ledger.open(tmp_path / "ledger") as again:  # reopening folds the file afresh
        assert (fold.tables(again.state), market_view(again.state)) == before
    report = audit_ok(tmp_path / "ledger")
    assert report.invalid_count == 0 and report.counts["settle"] == 1 and report.counts["receipt"] == 1
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["audit", str(tmp_path / "ledger")], out=out, err=err) == 0, out.getvalue() + err.getvalue()


# -- acceptance


async def test_a_job_is_cancelled_only_before_acceptance_and_then_takes_no_payment(world: Market) -> None:
    w = world
    j = await w.add(ALICE, job_body())
    o = await w.add(E1, offer_body(j))
    assert "only the job's author" in w.verdict(await w.add(BOB, settle_body(j, "cancelled")))
    cancel = await w.add(ALICE, settle_body(j, "cancelled", reason="changed my mind"))
    assert w.verdict(cancel) == "" and market.job_status(w.state, j.id) == "cancelled"
    late = await w.add(ALICE, escrow_body(j, o, [w.funds[ALICE.public_key]]))
    assert "cancelled" in w.verdict(late)
    assert w.balance(ALICE) == FUND_UCR and w.state.held == {} and w.state.escrows == {}
    j2, _, _ = await w.accepted()
    assert "has a payment" in w.verdict(await w.add(ALICE, settle_body(j2, "cancelled")))
    assert market.job_status(w.state, j2.id) == "accepted"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"offer_price": 6}, "above the job's"),
        ({"amount": 399}, "holds max_gpu_s times the offer's price, 400 ucr"),
        ({"amount": 401}, "400 ucr"),
        ({"to": E2}, "goes to the offer's author"),
        ({"payer": BOB}, "only the job's author"),
        ({"other_job": True}, "no offer for this job"),
    ],
    ids=lambda v: str(v)[:24],
)
async def test_an_escrow_payment_that_breaks_a_rule_is_refused(world: Market, change: dict[str, Any],
                                                              reason: str) -> None:
    w = world
    await w.fund(BOB)
    j = await w.add(ALICE, job_body(max_gpu_s=100, price=5))
    other = await w.add(ALICE, job_body(max_gpu_s=100, price=5))
    o = await w.add(E1, offer_body(other if change.get("other_job") else j, change.get("offer_price", 4)))
    payer = change.get("payer", ALICE)
    body = escrow_body(j, o, [w.funds[payer.public_key]], change.get("amount"))
    if "to" in change:
        body = Transfer(**{**body.to_map(), "to": change["to"].public_key})
    pay = await w.add(payer, body)
    assert reason in w.verdict(pay)
    assert w.balance(payer) == FUND_UCR and w.state.held == {} and market.job_status(w.state, j.id) == "open"


async def test_one_payment_per_job_and_the_spends_rules_still_hold(world: Market) -> None:
    w = world
    j, o, pay = await w.accepted()
    again = await w.add(ALICE, escrow_body(j, o, [pay.id]))
    assert "already has a payment" in w.verdict(again)
    j2 = await w.add(ALICE, job_body(max_gpu_s=10**6, price=5))
    o2 = await w.add(E2, offer_body(j2, 5))
    assert "short of" in w.verdict(await w.add(ALICE, escrow_body(j2, o2, [pay.id])))
    memo = await w.add(ALICE, Transfer(to=E2.public_key, amount=5, spends=[pay.id], memo="tip", job=j2.id, offer=None))
    assert w.verdict(memo) == "" and w.balance(E2) == 5  # job without offer: a plain transfer
    assert market.job_status(w.state, j2.id) == "open"


async def test_a_job_for_an_unknown_class_or_already_expired_is_invalid(world: Market) -> None:
    w = world
    assert "platform class" in w.verdict(await w.add(ALICE, job_body(cls="tpu-v9")))
    expired = await w.add(ALICE, job_body(expires_ms=5))
    assert "expires before" in w.verdict(expired)
    o = await w.add(E1, offer_body(expired))
    assert o.id not in w.state.offers  # offers for an invalid job count for nothing
    assert "no valid job" in w.verdict(await w.add(ALICE, escrow_body(expired, o, [w.funds[ALICE.public_key]])))


# -- receipts


async def test_receipts_come_from_the_executor_once_and_within_the_limit(world: Market) -> None:
    w = world
    j, o, pay = await w.accepted(max_gpu_s=100)
    assert "only the payment's executor" in w.verdict(await w.add(E2, receipt_body(j, o, pay, 10.0)))
    assert "over the job's max_gpu_s" in w.verdict(await w.add(E1, receipt_body(j, o, pay, 100.5)))
    other_offer = await w.add(E1, offer_body(j, 3))
    wrong = Receipt(**{**receipt_body(j, o, pay, 10.0).to_map(), "offer": other_offer.id})
    assert "another offer" in w.verdict(await w.add(E1, wrong))
    ok = await w.add(E1, receipt_body(j, o, pay, 100.0))
    assert w.verdict(ok) == "" and w.state.jobs[j.id].receipt == ok.id
    assert "already has a receipt" in w.verdict(await w.add(E1, receipt_body(j, o, pay, 1.0)))
    to_executor, refund = market.settle_amount(w.state, j.id)
    assert (to_executor, refund) == (400, 0)  # all of max_gpu_s: the whole escrow


# -- any order


def market_history(spec: SignedSpec, *, steps: int, seed: int) -> list[Entry]:
    """A random valid market history in row order, built as honest nodes would, by consulting the fold.

    Rival entries (two settles of one job, a receipt and a refund after expiry) are avoided, so
    every entry is valid; tests/ledger/test_market_truth.py builds histories full of them.
    """
    rng = random.Random(seed)
    feeds, state = Feeds(spec.swarm_id), fold.initial(spec.spec)
    add = Appender(feeds, state)
    rows = add.rows
    payers, executors = [ALICE, BOB], [E1, E2, E3]

    def outputs_of(who: Identity) -> list[tuple[bytes, int]]:
        return sorted((e, a) for (e, o), a in state.outputs.items() if o == who.public_key)

    entries: dict[bytes, Entry] = {}
    for n, payer in enumerate(payers):
        c = add(payer, claim(1000 + n, 1.5))
        add(V1, seal(c))
        v = add(V1, verify(c, 1.5))
        m = add(V1, Mint(reason="verification", subject=v.id, quorum=[], to=V1.public_key, amount=FUND_UCR,
                         value=None, prev_best=None))
        add(V1, transfer(payer, FUND_UCR, [m.id]))
    wants = {"offer": "open", "accept": "open", "cancel": "open", "receipt": "accepted", "settle": "ran",
             "expire": "accepted"}
    for _ in range(steps):
        action = rng.choices(["job", "offer", "accept", "cancel", "receipt", "settle", "expire", "spend"],
                             weights=[2, 4, 3, 1, 3, 3, 1, 2])[0]
        fits = [(jid, info) for jid, info in state.jobs.items() if info.status == wants.get(action)]
        if action == "expire":
            fits = [(jid, info) for jid, info in fits if feeds.clock_ms >= info.job.expires_ms]
        if action == "accept":
            fits = [(jid, info) for jid, info in fits if info.offers]
        if action == "job" or (action != "spend" and not fits):
            payer = rng.choice(payers)
            e = add(payer, job_body(max_gpu_s=rng.randint(1, 50), price=rng.randint(1, 9),
                                    expires_ms=feeds.clock_ms + rng.randint(2, 60)))
            entries[e.id] = e
            continue
        if action == "spend":
            who = rng.choice([*payers, *executors])
            mine = outputs_of(who)
            if mine:
                to = rng.choice([p for p in [*payers, *executors] if p is not who])
                e_id, amount = rng.choice(mine)
                add(who, transfer(to, rng.randint(1, amount), [e_id]))
            continue
        jid, info = rng.choice(fits)
        job, payer = entries[jid], next(p for p in payers if p.public_key == info.author)
        if action == "offer":
            ex = rng.choice(executors)
            o = add(ex, offer_body(job, rng.randint(1, info.job.price_ucr_per_gpu_s)))
            entries[o.id] = o
        elif action == "accept" and info.offers:
            oid = min(info.offers, key=lambda i: (state.offers[i].price_ucr_per_gpu_s, i))
            need = info.job.max_gpu_s * state.offers[oid].price_ucr_per_gpu_s
            picked, total = [], 0
            for e_id, amount in outputs_of(payer)[:64]:
                if total >= need:
                    break
                picked.append(e_id)
                total += amount
            if total >= need:
                p = add(payer, escrow_body(job, entries[oid], picked))
                entries[p.id] = p
        elif action == "cancel":
            add(payer, settle_body(job, "cancelled", reason="no longer needed"))
        elif action == "receipt" and info.payment is not None:
            esc = state.escrows[info.payment]
            ex = next(x for x in executors if x.public_key == esc.executor)
            r = add(ex, receipt_body(job, entries[esc.offer], entries[info.payment],
                                     round(rng.uniform(0, info.job.max_gpu_s), 3)))
            entries[r.id] = r
        elif action == "settle" and info.payment is not None and info.receipt is not None:
            pay, rec = entries[info.payment], entries[info.receipt]
            amount, _ = market.settle_amount(state, jid)
            if rng.random() < 0.3:
                add(V2, settle_body(job, "refunded", pay, rec, reason="spot check differs"))
            else:
                add(rng.choice([payer, V2]), settle_body(job, "paid", pay, rec, amount=amount))
        elif action == "expire" and info.payment is not None:
            add(payer, settle_body(job, "refunded", entries[info.payment], reason="expired"))
    return rows


def simulate(seed: int, steps: int) -> list[Entry]:
    return market_history(SPEC, steps=steps, seed=seed)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 80), order_seed=st.integers(0, 2**32 - 1))
def test_any_arrival_order_of_a_market_history_folds_to_the_same_state(seed: int, steps: int, order_seed: int) -> None:
    rows = simulate(seed, steps)
    a = fold.rebuild(SPEC.spec, rows)
    b = fold.rebuild(SPEC.spec, topological_shuffle(rows, random.Random(order_seed)))
    assert all(reason == "" for reason in a.verdicts.values())
    assert fold.tables(a) == fold.tables(b)
    assert market_view(a) == market_view(b)
    assert sum(a.balances.values()) + sum(a.held.values()) == a.total_minted_ucr  # the market conserves credit
    assert all(v >= 0 for v in a.balances.values())


def with_fork_proof(rows: list[Entry], rng: random.Random) -> list[Entry]:
    """The rows with a proof that a payer forked at one of its market entries, placed anywhere after it."""
    market_rows = [i for i, e in enumerate(rows) if e.author in (ALICE.public_key, BOB.public_key)
                   and e.kind in ("job", "transfer", "settle")]
    if not market_rows:
        return rows
    i = rng.choice(market_rows)
    forked = rows[i]
    payer = ALICE if forked.author == ALICE.public_key else BOB
    feeds = Feeds(SPEC.swarm_id)
    other = feeds.sign_at(payer, forked.seq, forked.prev, Post(channel="general", text="the other branch", reply_to=None))
    proof = feeds.sign(V2, make_fraud(forked, other))
    at = rng.randint(i + 1, len(rows))
    return [*rows[:at], proof, *rows[at:]]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 80), fork_seed=st.integers(0, 2**32 - 1),
       fork=st.booleans())
def test_incremental_market_changes_equal_a_rebuild(seed: int, steps: int, fork_seed: int, fork: bool) -> None:
    rows = simulate(seed, steps)
    if fork:
        rows = with_fork_proof(rows, random.Random(fork_seed))
    state = fold.initial(SPEC.spec)
    persisted = fold.Tables({}, {}, [], {})
    for n, entry in enumerate(rows):
        state = fold.apply(state, entry)
        if state.needs_rebuild:  # as the store's writer does
            state = fold.rebuild(SPEC.spec, rows[: n + 1])
        changes = fold.take_changes(state)
        if changes.replace_all:
            persisted = fold.Tables({}, {}, [], {})
        persisted.balances.update(changes.balances)
        persisted.frozen.update(changes.frozen)
        persisted.records.extend(changes.records)
        persisted.verdicts.update(changes.verdicts)
        persisted.seals.update(changes.seals)
    rebuilt = fold.rebuild(SPEC.spec, rows)
    # a balance that went to zero stays in the file as a 0 row, which readers take for no balance
    persisted = dataclasses.replace(persisted, balances={k: v for k, v in persisted.balances.items() if v})
    assert persisted == fold.tables(rebuilt)
    assert market_view(state) == market_view(rebuilt)
    shuffled = fold.rebuild(SPEC.spec, topological_shuffle(rows, random.Random(fork_seed)))
    assert (fold.tables(shuffled), market_view(shuffled)) == (fold.tables(rebuilt), market_view(rebuilt))
    assert sum(rebuilt.balances.values()) + sum(rebuilt.held.values()) <= rebuilt.total_minted_ucr


def test_a_long_market_history_exercises_every_outcome() -> None:
    rows = simulate(seed=11, steps=600)
    state = fold.rebuild(SPEC.spec, rows)
    statuses = {info.status for info in state.jobs.values()}
    assert {"open", "settled", "refunded", "cancelled"} <= statuses, statuses
    assert any(r.refunded for r in state.reputation.values()) and any(r.paid for r in state.reputation.values())


async def test_a_market_history_on_a_real_file_audits_clean(tmp_path: Path) -> None:
    rows = simulate(seed=5, steps=200)
    async with Ledger.open(tmp_path / "l", SPEC) as ledger:
        for entry in topological_shuffle(rows, random.Random(3)):
            assert (await ledger.append(entry)).status is Status.APPENDED
        held = (fold.tables(ledger.state), market_view(ledger.state))
    assert held == (fold.tables(fold.rebuild(SPEC.spec, rows)), market_view(fold.rebuild(SPEC.spec, rows)))
    report = audit_ok(tmp_path / "l")
    assert report.invalid_count == 0 and report.counts.get("settle", 0) > 0
