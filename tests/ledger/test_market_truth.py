"""One truth on every node for the credits market: histories full of rival entries — payers' and
verifiers' settles of one job, two verifiers' checks, a receipt against the payer's refund after
expiry, reveals, transfers that spend settle outputs — mixed with admissions, earned and lost
trust, mints and forks, fold to identical tables in every arrival order, one entry at a time as
a store receives them, and in real ledger files that audit clean. Each race is also spelled out
in every order, and two attacks run against real ledger files."""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import audit, fold, market
from ledger.bodies import Admit, Body, Job, Mint, Post, Settle
from ledger.entry import Entry
from ledger.feed import make_fraud
from ledger.keys import Identity
from ledger.spec import SignedSpec, sign_spec
from ledger.store import Ledger, Status
from tests.ledger.factory import CLASS, Feeds, claim, commit, identity, make_spec, seal, transfer, verify
from tests.ledger.test_fold import replay_as_a_store, topological_shuffle
from tests.ledger.test_market import (
    ALICE, BOB, CREATOR, E1, E2, E3, FUND_UCR, V1, V2, escrow_body, market_view, offer_body, receipt_body,
)
from tests.ledger.test_one_truth import ADMITTED, EARNER, SYBIL, V3, facts_history, facts_view

PAYERS, EXECUTORS = [ALICE, BOB], [E1, E2, E3]
# anchors, a key the creator admits (in the facts or here), one that earns and may lose trust, one never trusted
CHECKERS = [V1, V2, ADMITTED, EARNER, SYBIL]
SPOT_PER_MILLE = 500  # half the jobs with a secret are picked: both paths run


def truth_spec(quorum: int = 1) -> SignedSpec:
    # assigned=0 (every trusted key counts): later admissions would otherwise displace the funding
    # verifier from old assignments and void the payers' funds (open: docs/architecture.md)
    signed = make_spec(CREATOR, [V1, V2, V3], quorum=quorum, verify_ucr=FUND_UCR, trust_replays=2, assigned=0)
    return sign_spec(CREATOR, dataclasses.replace(signed.spec, spot_check_per_mille=SPOT_PER_MILLE))


SPEC = truth_spec()


def secret_of(n: int) -> bytes:
    return hashlib.sha256(b"check-secret-%d" % n).digest()


def racing_history(spec: SignedSpec, *, steps: int, seed: int, before: list[Entry] | None = None) -> list[Entry]:
    """Market entries after `before` (whose feeds they continue), with rivals on purpose: settles
    of jobs that are already settled, refunds after expiry of jobs that have a receipt, second
    receipts, checks by keys of any trust, spends of outputs that a rival may void. Built by
    consulting a fold that rebuilds when asked, as a node's would; not all of them valid."""
    rng = random.Random(seed)
    prior = list(before or [])
    feeds = Feeds(spec.swarm_id, clock_ms=2 * 10**9)
    for e in prior:  # continue every feed the facts wrote, so no author forks by accident
        if e.seq > feeds.heads.get(e.author, (0, b""))[0]:
            feeds.heads[e.author] = (e.seq, e.id)
    rows: list[Entry] = []
    history = list(prior)
    state = fold.rebuild(spec.spec, prior)
    entries: dict[bytes, Entry] = {}
    secrets: dict[bytes, bytes] = {}

    def add(who: Identity, body: Body) -> Entry:
        nonlocal state
        entry = feeds.sign(who, body)
        rows.append(entry)
        history.append(entry)
        entries[entry.id] = entry
        state = fold.apply_or_rebuild(state, entry, history)
        return entry

    for n, payer in enumerate(PAYERS):
        c = add(payer, claim(9000 + n, 1.5))
        add(V1, seal(c))  # an anchor's seal: then V1's replay is assigned and earns its fee
        v = add(V1, verify(c, 1.5))
        m = add(V1, Mint(reason="verification", subject=v.id, quorum=[], to=V1.public_key, amount=FUND_UCR,
                         value=None, prev_best=None))
        add(V1, transfer(payer, FUND_UCR, [m.id]))
    by_key = {i.public_key: i for i in [*PAYERS, *EXECUTORS, *CHECKERS]}

    def jobs(*statuses: str, receipt: bool | None = None) -> list[tuple[bytes, market.JobInfo]]:
        return [(jid, info) for jid, info in state.jobs.items() if info.status in statuses
                and (receipt is None or (info.receipt is not None) == receipt)]

    for n in range(steps):
        action = rng.choices(["job", "offer", "accept", "receipt", "reveal", "pay", "check", "expire", "cancel",
                              "spend", "admit", "wait"], weights=[3, 4, 3, 4, 1, 3, 4, 2, 1, 3, 1, 2])[0]
        if action == "job" or not state.jobs:
            payer = rng.choice(PAYERS)
            secret = secret_of(seed * 1000 + n) if rng.random() < 0.5 else None
            job = add(payer, Job(job_type="train", commit=commit(n), bundle=None, args=[], platform_class=CLASS,
                                 max_gpu_s=rng.randint(1, 50), price_ucr_per_gpu_s=rng.randint(1, 9),
                                 expires_ms=feeds.clock_ms + rng.randint(5, 80),
                                 check_hash=None if secret is None else hashlib.sha256(secret).digest()))
            if secret is not None:
                secrets[job.id] = secret
        elif action == "wait":
            feeds.clock_ms += rng.randint(10, 60)
        elif action == "admit":
            add(CREATOR, Admit(verifier=rng.choice([ADMITTED, EARNER]).public_key, platform_classes=[CLASS]))
        elif action == "spend":
            who = rng.choice([*PAYERS, *EXECUTORS])
            mine = sorted((e, a) for (e, o), a in state.outputs.items() if o == who.public_key)
            if mine:
                e_id, amount = rng.choice(mine)
                add(who, transfer(rng.choice([p for p in [*PAYERS, *EXECUTORS] if p is not who]),
                                  rng.randint(1, amount), [e_id]))
        elif action == "offer" and (fits := jobs("open")):
            jid, info = rng.choice(fits)
            ex = rng.choice(EXECUTORS)
            add(ex, offer_body(entries[jid], rng.randint(1, info.job.price_ucr_per_gpu_s)))
        elif action == "cancel" and (fits := jobs("open")):
            jid, info = rng.choice(fits)
            add(by_key[info.author], Settle(job=jid, payment=None, receipt=None, outcome="cancelled", amount=0,
                                            reason=""))
        elif action == "accept" and (fits := [(j, i) for j, i in jobs("open") if i.offers]):
            jid, info = rng.choice(fits)
            oid = rng.choice(info.offers)
            need = info.job.max_gpu_s * state.offers[oid].price_ucr_per_gpu_s
            mine = sorted((e, a) for (e, o), a in state.outputs.items() if o == info.author)
            picked, total = [], 0
            for e_id, amount in mine[:64]:
                if total >= need:
                    break
                picked.append(e_id)
                total += amount
            if total >= need:
                add(by_key[info.author], escrow_body(entries[jid], entries[oid], picked))
        elif action == "receipt" and (fits := jobs("accepted", "refunded", "ran")):
            # a refunded job here had no receipt: this one was in flight; a "ran" one gets a second
            jid, info = rng.choice(fits)
            assert info.payment is not None
            esc = state.escrows[info.payment]
            ex = by_key[esc.executor] if rng.random() < 0.9 else rng.choice(EXECUTORS)
            gpu_s = round(rng.uniform(0, info.job.max_gpu_s * 1.05), 3)
            add(ex, receipt_body(entries[jid], entries[esc.offer], entries[info.payment], gpu_s))
        elif action == "reveal" and (fits := [(j, i) for j, i in jobs("ran", "settled", "refunded", receipt=True)
                                              if j in secrets]):
            jid, info = rng.choice(fits)
            add(by_key[info.author], Settle(job=jid, payment=info.payment, receipt=info.receipt, outcome="reveal",
                                            amount=0, reason="", reveal=secrets[jid]))
        elif action == "pay" and (fits := jobs("ran", "settled", "refunded", receipt=True)):
            jid, info = rng.choice(fits)  # settled or refunded already: a rival
            amount, _ = market.settle_amount(state, jid)
            reveal = secrets.get(jid) if rng.random() < 0.7 else None
            add(by_key[info.author], Settle(job=jid, payment=info.payment, receipt=info.receipt, outcome="paid",
                                            amount=amount, reason="receipt accepted", reveal=reveal))
        elif action == "check" and (fits := jobs("ran", "settled", "refunded", receipt=True)):
            jid, info = rng.choice(fits)
            who = rng.choice(CHECKERS)
            if rng.random() < 0.4:
                body = Settle(job=jid, payment=info.payment, receipt=info.receipt, outcome="refunded", amount=0,
                              reason="spot check failed")
            else:
                assert info.receipt is not None
                measured = round(state.receipts[info.receipt].gpu_s * rng.uniform(0.5, 1.2), 3)
                amount, _ = market.settle_amount(state, jid, measured)
                body = Settle(job=jid, payment=info.payment, receipt=info.receipt, outcome="paid", amount=amount,
                              reason="spot check reproduced", gpu_s=measured)
            add(who, body)
        elif action == "expire" and (fits := [(j, i) for j, i in jobs("accepted", "ran", "settled")
                                              if feeds.clock_ms >= i.job.expires_ms]):
            jid, info = rng.choice(fits)  # with a receipt already: the payer's refund races it
            add(by_key[info.author], Settle(job=jid, payment=info.payment, receipt=None, outcome="refunded", amount=0,
                                            reason="expired"))
    return rows


def with_market_fork(spec: SignedSpec, rows: list[Entry], rng: random.Random) -> list[Entry]:
    """The rows with a proof that a market party forked at one of its market entries, placed anywhere after it."""
    parties = {i.public_key: i for i in [*PAYERS, *EXECUTORS, V1, V2]}
    at_market = [n for n, e in enumerate(rows) if e.author in parties and e.kind in ("job", "transfer", "receipt", "settle")]
    if not at_market:
        return rows
    n = rng.choice(at_market)
    forked = rows[n]
    feeds = Feeds(spec.swarm_id)
    other = feeds.sign_at(parties[forked.author], forked.seq, forked.prev, Post(channel="general", text="the other branch",
                                                                                reply_to=None))
    proof = feeds.sign(identity(499), make_fraud(forked, other))
    at = rng.randint(n + 1, len(rows))
    return [*rows[:at], proof, *rows[at:]]


def incremental(spec: SignedSpec, rows: list[Entry]) -> fold.State:
    state = fold.initial(spec.spec)
    for n, entry in enumerate(rows):
        state = fold.apply_or_rebuild(state, entry, rows[:n + 1])
    return state


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 70), fact_steps=st.integers(0, 60),
       order_seed=st.integers(0, 2**32 - 1), fork=st.booleans())
def test_every_table_is_the_same_in_any_arrival_order(seed: int, steps: int, fact_steps: int, order_seed: int,
                                                      fork: bool) -> None:
    facts = facts_history(SPEC, steps=fact_steps, seed=seed, forks=fork)
    rows = facts + racing_history(SPEC, steps=steps, seed=seed, before=facts)
    if fork:
        rows = with_market_fork(SPEC, rows, random.Random(order_seed))
    shuffled = topological_shuffle(rows, random.Random(order_seed))
    want = fold.rebuild(SPEC.spec, rows)
    for got in (fold.rebuild(SPEC.spec, shuffled), incremental(SPEC, shuffled)):
        assert fold.tables(got) == fold.tables(want)
        assert market_view(got) == market_view(want)
        assert facts_view(got) == facts_view(want)  # trust among them
    # the rows a store persists, entry by entry, end where a rebuild of the set does
    assert replay_as_a_store(SPEC.spec, shuffled) == fold.tables(want)
    held = sum(want.balances.values()) + sum(want.held.values())
    assert held == want.total_minted_ucr if not fork else held <= want.total_minted_ucr
    assert all(v >= 0 for v in want.balances.values())


def race_verdicts(state: fold.State) -> dict[str, int]:
    """How often each rival rule decided: a history that never races proves nothing."""
    rules = (market.BEATEN, market.RECEIPT_BEATS_REFUND, market.ALREADY_SAID, "spends an entry that holds no output")
    return {rule: sum(rule in reason for reason in state.verdicts.values()) for rule in rules}


def test_the_racing_histories_race() -> None:
    rows = racing_history(SPEC, steps=400, seed=3)
    state = fold.rebuild(SPEC.spec, rows)
    counts = race_verdicts(state)
    assert min(counts.values()) >= 1 and counts[market.BEATEN] >= 5, counts  # spends: of a loser's output
    statuses = {info.status for info in state.jobs.values()}
    assert {"open", "ran", "settled", "refunded", "cancelled"} <= statuses, statuses
    assert state.losers  # this rebuild met a winner after a rival it beats, and folded again
    for order_seed in range(3):
        shuffled = topological_shuffle(rows, random.Random(order_seed))
        assert fold.tables(incremental(SPEC, shuffled)) == fold.tables(state)


@pytest.mark.slow
async def test_two_real_ledgers_fed_in_different_orders_hold_the_same_tables_and_audit_clean(tmp_path: Path) -> None:
    spec = truth_spec(quorum=2)
    # without forks: a store refuses a frozen author's entries after the proof, so which of them a
    # file holds depends on arrival (the pure fold test above covers forks)
    facts = facts_history(spec, steps=150, seed=21, forks=False)
    rows = facts + racing_history(spec, steps=250, seed=21, before=facts)
    want = fold.rebuild(spec.spec, rows)
    assert race_verdicts(want)[market.BEATEN] >= 3
    held = []
    for n in range(2):
        path = tmp_path / f"node{n}"
        async with Ledger.open(path, spec) as ledger:
            for entry in topological_shuffle(rows, random.Random(100 + n)):
                assert (await ledger.append(entry)).status is Status.APPENDED
            held.append((fold.tables(ledger.state), market_view(ledger.state), facts_view(ledger.state)))
        report = audit.audit_file(path, workers=1)
        assert report.ok, report.problems
        async with Ledger.open(path) as again:  # reopening folds the file afresh
            assert (fold.tables(again.state), market_view(again.state)) == held[-1][:2]
    assert held[0] == held[1] == (fold.tables(want), market_view(want), facts_view(want))


# -- each race, in every arrival order


class Scene:
    """A funded payer's accepted job (ALICE pays E1 through an escrow), signed, with a fold of it."""

    def __init__(self, *, spot_per_mille: int = 0, expires_ms: int = 10**12, secret: bytes | None = None) -> None:
        signed = make_spec(CREATOR, [V1, V2, V3], quorum=1, verify_ucr=FUND_UCR, trust_replays=2)
        self.spec = sign_spec(CREATOR, dataclasses.replace(signed.spec, spot_check_per_mille=spot_per_mille))
        self.feeds = Feeds(self.spec.swarm_id)
        self.rows: list[Entry] = []
        c = self.sign(ALICE, claim(1, 1.5))
        self.sign(V1, seal(c))
        v = self.sign(V1, verify(c, 1.5))
        m = self.sign(V1, Mint(reason="verification", subject=v.id, quorum=[], to=V1.public_key, amount=FUND_UCR,
                               value=None, prev_best=None))
        fund = self.sign(V1, transfer(ALICE, FUND_UCR, [m.id]))
        self.job = self.sign(ALICE, Job(job_type="train", commit=commit(1), bundle=None, args=[], platform_class=CLASS,
                                        max_gpu_s=100, price_ucr_per_gpu_s=5, expires_ms=expires_ms,
                                        check_hash=None if secret is None else hashlib.sha256(secret).digest()))
        self.offer = self.sign(E1, offer_body(self.job, 4))  # 400 ucr held
        self.pay = self.sign(ALICE, escrow_body(self.job, self.offer, [fund.id]))

    def sign(self, who: Identity, body: Body, *, keep: bool = True) -> Entry:
        entry = self.feeds.sign(who, body)
        if keep:
            self.rows.append(entry)
        return entry

    def receipt(self, gpu_s: float = 30.0, *, keep: bool = True) -> Entry:
        return self.sign(E1, receipt_body(self.job, self.offer, self.pay, gpu_s), keep=keep)

    def settle(self, who: Identity, outcome: str, receipt: Entry | None, amount: int = 0, **extra: Any) -> Entry:
        return self.sign(who, Settle(job=self.job.id, payment=self.pay.id, receipt=None if receipt is None else receipt.id,
                                     outcome=outcome, amount=amount, reason="", **extra), keep=False)

    def every_order(self, rivals: list[Entry]) -> fold.State:
        """Folds the scene, then `rivals` in each order their references allow, one entry at a time
        with rebuilds as a store does; every order must end in the same tables and market state."""
        seen: list[tuple[Any, ...]] = []
        state = fold.initial(self.spec.spec)
        for order in itertools.permutations(rivals):
            ids = {e.id for e in self.rows}
            if not all(set(e.deps()) <= ids | {x.id for x in order[:n]} for n, e in enumerate(order)):
                continue
            state = incremental(self.spec, [*self.rows, *order])
            seen.append((fold.tables(state), market_view(state)))
        assert len(seen) >= 2 and all(s == seen[0] for s in seen), "arrival order changed a table"
        assert seen[0] == (fold.tables(rebuilt := fold.rebuild(self.spec.spec, [*self.rows, *rivals])),
                           market_view(rebuilt))
        return state


def balance(state: fold.State, who: Identity) -> int:
    return state.balances.get(who.public_key, 0)


def test_a_verifiers_refund_beats_the_payers_paid_settle_and_voids_what_the_executor_spent_of_it() -> None:
    s = Scene()
    r = s.receipt(30.0)
    paid = s.settle(ALICE, "paid", r, 120)
    refund = s.settle(V2, "refunded", r)
    spend = s.sign(E1, transfer(E2, 100, [paid.id]), keep=False)  # spends the executor's 120 of the paid settle
    state = s.every_order([paid, refund, spend])
    assert state.verdicts[refund.id] == "" and state.verdicts[paid.id] == market.BEATEN
    assert "holds no output" in state.verdicts[spend.id]
    assert (balance(state, ALICE), balance(state, E1), balance(state, E2)) == (FUND_UCR, 0, 0)
    assert market.job_status(state, s.job.id) == "refunded" and state.reputation[E1.public_key].refunded == 1


def test_a_verifiers_check_beats_the_payers_paid_settle_and_bills_its_measured_time() -> None:
    s = Scene()
    r = s.receipt(60.0)  # the receipt says 60 GPU-s (240 ucr); the check measured 20 (100 ucr with the slack)
    paid, check = s.settle(ALICE, "paid", r, 240), s.settle(V2, "paid", r, 100, gpu_s=20.0)
    state = s.every_order([paid, check])
    assert state.verdicts[check.id] == "" and state.verdicts[paid.id] == market.BEATEN
    assert balance(state, E1) == 100 and balance(state, ALICE) == FUND_UCR - 100


def test_between_verifiers_a_refund_beats_a_paid_check_then_the_smaller_bill_then_the_smaller_id() -> None:
    s = Scene()
    r = s.receipt(60.0)
    paid, refund = s.settle(V1, "paid", r, 240, gpu_s=60.0), s.settle(V2, "refunded", r)
    state = s.every_order([paid, refund])
    assert state.verdicts[refund.id] == "" and state.verdicts[paid.id] == market.BEATEN
    s = Scene()
    r = s.receipt(60.0)
    dear, cheap = s.settle(V1, "paid", r, 240, gpu_s=60.0), s.settle(V2, "paid", r, 200, gpu_s=40.0)
    state = s.every_order([dear, cheap])
    assert state.verdicts[cheap.id] == "" and balance(state, E1) == 200
    s = Scene()
    r = s.receipt(60.0)
    a, b = s.settle(V1, "paid", r, 240, gpu_s=60.0), s.settle(V2, "paid", r, 240, gpu_s=60.0)
    state = s.every_order([a, b])
    first = min(a.id, b.id)
    assert state.verdicts[first] == "" and state.verdicts[max(a.id, b.id)] == market.BEATEN
    assert state.jobs[s.job.id].settle == first and state.outputs[(first, E1.public_key)] == 240


def test_a_keys_first_paid_settle_of_a_job_is_its_only_paid_one_and_its_first_refund_its_only_refund() -> None:
    # else one trusted key could settle a job again and again for ever smaller amounts, and every
    # node would rebuild each time; its feed orders its settles, so every node reads the same first
    s = Scene()
    r = s.receipt(60.0)
    first = s.settle(V2, "paid", r, 240, gpu_s=60.0)
    again = s.settle(V2, "paid", r, 200, gpu_s=40.0)
    payer = s.settle(ALICE, "paid", r, 240)
    state = s.every_order([first, again, payer])
    assert state.verdicts[first.id] == "" and state.verdicts[payer.id] == market.BEATEN
    assert state.verdicts[again.id] == market.ALREADY_SAID and balance(state, E1) == 240
    # its refund is another word, and a refund takes precedence: the payer keeps its money
    change = s.settle(V2, "refunded", r)
    state = s.every_order([first, again, change, payer])
    assert state.verdicts[change.id] == "" and state.verdicts[first.id] == market.BEATEN
    assert balance(state, E1) == 0 and balance(state, ALICE) == FUND_UCR
    # a first settle that is invalid on its own is no word: the next one counts
    s = Scene()
    r = s.receipt(60.0)
    wrong, right = s.settle(V2, "paid", r, 999, gpu_s=60.0), s.settle(V2, "paid", r, 240, gpu_s=60.0)
    state = s.every_order([wrong, right, s.settle(ALICE, "paid", r, 240)])
    assert "releases 240 ucr" in state.verdicts[wrong.id] and state.verdicts[right.id] == ""


def test_the_payers_second_refund_after_expiry_is_no_rival_of_its_first() -> None:
    s = Scene(expires_ms=2_000)
    s.feeds.clock_ms = 5_000
    first, second = s.settle(ALICE, "refunded", None), s.settle(ALICE, "refunded", None)
    r = s.receipt(30.0, keep=False)
    state = s.every_order([first, second, r])
    assert state.verdicts[first.id] == market.RECEIPT_BEATS_REFUND and state.verdicts[second.id] == market.ALREADY_SAID
    state = s.every_order([first, second, s.sign(BOB, Post(channel="general", text="unrelated", reply_to=None),
                                                  keep=False)])
    assert state.verdicts[first.id] == "" and state.verdicts[second.id] == market.ALREADY_SAID


def test_a_receipt_beats_the_payers_refund_after_expiry_and_voids_what_the_payer_spent_of_it() -> None:
    s = Scene(expires_ms=2_000)
    s.feeds.clock_ms = 5_000  # past the expiry: the payer may refund a job without a receipt
    r = s.receipt(30.0, keep=False)
    refund = s.settle(ALICE, "refunded", None)
    spend = s.sign(ALICE, transfer(BOB, 300, [refund.id]), keep=False)  # the refunded 400 is spent
    paid = s.settle(ALICE, "paid", r, 120)  # after all that the payer pays the receipt
    state = s.every_order([r, refund, spend, paid])
    assert state.verdicts[r.id] == "" and state.verdicts[refund.id] == market.RECEIPT_BEATS_REFUND
    assert "holds no output" in state.verdicts[spend.id] and state.verdicts[paid.id] == ""
    assert (balance(state, E1), balance(state, BOB), balance(state, ALICE)) == (120, 0, FUND_UCR - 120)
    assert E1.public_key in state.reputation and state.reputation[E1.public_key].refunded == 0


def test_a_secret_in_a_paid_settle_that_lost_still_counts_as_revealed() -> None:
    secret = secret_of(77)
    s = Scene(secret=secret)  # per mille 0: never picked, so the payer may pay with its secret
    r = s.receipt(30.0)
    paid = s.settle(ALICE, "paid", r, 120, reveal=secret)
    refund = s.settle(V2, "refunded", r)
    reveal = s.settle(ALICE, "reveal", r, reveal=secret)  # revealing again moves nothing and stays valid
    state = s.every_order([paid, refund, reveal])
    assert state.verdicts[paid.id] == market.BEATEN and state.verdicts[reveal.id] == ""
    assert state.jobs[s.job.id].revealed == secret and market.picked(state, s.job.id) is False


def test_a_check_by_a_key_the_creator_admits_later_wins_in_every_order() -> None:
    s = Scene()
    r = s.receipt(60.0)
    paid, check = s.settle(ALICE, "paid", r, 240), s.settle(ADMITTED, "paid", r, 200, gpu_s=40.0)
    admit = s.sign(CREATOR, Admit(verifier=ADMITTED.public_key, platform_classes=[CLASS]), keep=False)
    state = s.every_order([paid, check, admit])
    assert state.verdicts[check.id] == "" and state.verdicts[paid.id] == market.BEATEN
    unadmitted = incremental(s.spec, [*s.rows, check, paid])  # without the admit it is nobody's check
    assert "only a verifier" in unadmitted.verdicts[check.id]
    assert unadmitted.verdicts[paid.id] == ""


# -- attacks on real ledger files: two nodes, the same entries, different arrival orders


async def two_nodes(tmp_path: Path, s: Scene, tails: list[list[Entry]],
                    midway: Any = None) -> list[tuple[Any, ...]]:
    """Appends the scene and then each tail to its own ledger file; `midway(state)` is called on the
    first file after the first two entries of its tail. Returns each file's tables and market
    state; both files must audit clean."""
    held = []
    for n, tail in enumerate(tails):
        path = tmp_path / f"node{n}"
        async with Ledger.open(path, s.spec) as ledger:
            for k, entry in enumerate([*s.rows, *tail]):
                assert (await ledger.append(entry)).status is Status.APPENDED
                if n == 0 and midway is not None and k == len(s.rows) + 1:
                    midway(ledger.state)
            held.append((fold.tables(ledger.state), market_view(ledger.state)))
        report = audit.audit_file(path, workers=1)
        assert report.ok, report.problems
    assert all(h == held[0] for h in held)
    return held


async def test_an_executor_racing_a_refund_with_the_payers_paid_settle_is_refunded_on_every_node(tmp_path: Path) -> None:
    # The executor gets the payer's paid settle to node 0 first and spends its pay there at once;
    # node 1 hears the verifier's failed check first. Both end refunded: the pay and its spend are void.
    s = Scene()
    r = s.receipt(30.0)
    paid = s.settle(ALICE, "paid", r, 120)
    spend = s.sign(E1, transfer(E2, 120, [paid.id]), keep=False)
    refund = s.settle(V2, "refunded", r)

    def during_the_race(state: fold.State) -> None:
        assert balance(state, E2) == 120 and state.verdicts[spend.id] == ""  # the window the attacker used

    held = await two_nodes(tmp_path, s, [[paid, spend, refund], [refund, paid, spend]], during_the_race)
    tables, view = held[0]
    assert tables.verdicts[refund.id] == "" and tables.verdicts[paid.id] == market.BEATEN
    assert "holds no output" in tables.verdicts[spend.id]
    assert E1.public_key not in tables.balances and E2.public_key not in tables.balances
    assert tables.balances[ALICE.public_key] == FUND_UCR


async def test_a_payer_refunding_while_the_receipt_is_in_flight_takes_nothing_back_on_any_node(tmp_path: Path) -> None:
    # The payer refunds after expiry and spends the refund at once on node 0, while the executor's
    # receipt (signed in time) is still on its way there; node 1 has the receipt first.
    s = Scene(expires_ms=2_000)
    receipt = s.receipt(30.0, keep=False)
    s.feeds.clock_ms = 5_000
    refund = s.settle(ALICE, "refunded", None)
    spend = s.sign(ALICE, transfer(BOB, 400, [refund.id]), keep=False)
    check = s.settle(V2, "paid", receipt, 120, gpu_s=30.0)  # a verifier then checks the receipt

    def during_the_race(state: fold.State) -> None:
        assert balance(state, BOB) == 400  # the window the attacker used

    held = await two_nodes(tmp_path, s, [[refund, spend, receipt, check], [receipt, refund, spend, check]],
                           during_the_race)
    tables, view = held[0]
    assert tables.verdicts[receipt.id] == "" and tables.verdicts[refund.id] == market.RECEIPT_BEATS_REFUND
    assert "holds no output" in tables.verdicts[spend.id] and tables.verdicts[check.id] == ""
    assert BOB.public_key not in tables.balances
    assert (tables.balances[E1.public_key], tables.balances[ALICE.public_key]) == (120, FUND_UCR - 120)
