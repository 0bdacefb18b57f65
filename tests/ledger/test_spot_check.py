"""Market randomness the executor cannot steer, and billing by measured time (issue 12)."""
from __future__ import annotations

import hashlib
import random

from ledger import fold, market
from ledger.bodies import Job, Receipt, Settle
from ledger.entry import Entry
from tests.ledger.factory import CLASS, Feeds, commit, identity, make_spec, transfer, verify, claim, seal
from tests.ledger.test_fold import topological_shuffle
from tests.ledger.test_market import escrow_body, offer_body

CREATOR, V1, PAYER, EXEC = (identity(600 + i) for i in range(4))
FUND = 10**6
PRICE = 10


class World:
    def __init__(self, per_mille: int = 100) -> None:
        signed = make_spec(CREATOR, [V1], verify_ucr=FUND)
        spec = signed.spec.__class__(**{**signed.spec.to_map(), "spot_check_per_mille": per_mille})
        self.spec, self.feeds, self.state = spec, Feeds(signed.swarm_id), fold.initial(spec)
        self.feeds.swarm = self.state.swarm_id
        self.rows: list[Entry] = []
        c = self.add(PAYER, claim(1, 1.5))
        self.add(V1, seal(c))
        v = self.add(V1, verify(c, 1.5))
        from ledger.bodies import Mint
        m = self.add(V1, Mint(reason="verification", subject=v.id, quorum=[], to=V1.public_key, amount=FUND,
                              value=None, prev_best=None))
        self.add(V1, transfer(PAYER, FUND, [m.id]))

    def add(self, who, body) -> Entry:
        entry = self.feeds.sign(who, body)
        fold.apply(self.state, entry)
        self.rows.append(entry)
        return entry

    def verdict(self, e: Entry) -> str:
        return self.state.verdicts[e.id]

    def job_run(self, secret: bytes, gpu_s: float) -> tuple[Entry, Entry, Entry, Entry]:
        job = self.add(PAYER, Job(job_type="train", commit=commit(7), bundle=None, args=[], platform_class=CLASS,
                                  max_gpu_s=60, price_ucr_per_gpu_s=PRICE, expires_ms=10**12,
                                  check_hash=hashlib.sha256(secret).digest()))
        offer = self.add(EXEC, offer_body(job, PRICE))
        funds = sorted((a, e) for (e, o), a in self.state.outputs.items() if o == PAYER.public_key)
        pay = self.add(PAYER, escrow_body(job, offer, [funds[-1][1]]))
        receipt = self.add(EXEC, Receipt(job=job.id, offer=offer.id, payment=pay.id, status="ok", gpu_s=gpu_s,
                                         metrics={"val_bpb": 1.2}, artifacts=[], log_tail=""))
        return job, offer, pay, receipt


def settle(job: Entry, outcome: str, pay: Entry, receipt: Entry, amount: int = 0, *, reveal: bytes | None = None,
           gpu_s: float | None = None) -> Settle:
    return Settle(job=job.id, payment=pay.id, receipt=receipt.id, outcome=outcome, amount=amount, reason="",
                  reveal=reveal, gpu_s=gpu_s)


def secret_picked(job_id_of, want: bool) -> bytes:
    for n in range(10_000):
        secret = hashlib.sha256(b"secret-%d" % n).digest()
        if market.spot_checked(secret, job_id_of(secret), 100) == want:
            return secret
    raise AssertionError("no secret found")


def test_regenerating_receipts_cannot_change_the_pick() -> None:
    # the pick reads the payer's secret and the job id only: every receipt the executor could sign
    # for the job meets the same pick, and the executor cannot compute it before the reveal
    job_id = hashlib.sha256(b"job").digest()
    secrets = [hashlib.sha256(b"s%d" % n).digest() for n in range(2000)]
    rate = sum(market.spot_checked(s, job_id, 100) for s in secrets) / len(secrets)
    assert 0.07 < rate < 0.13
    w = World()
    secret = b"\x01" * 32
    job, offer, pay, _ = w.job_run(secret, 30.0)
    picks = set()
    for n in range(200):  # receipts the executor might regenerate: each differs, the pick does not
        r = Receipt(job=job.id, offer=offer.id, payment=pay.id, status="ok", gpu_s=30.0 + n / 1000,
                    metrics={"val_bpb": 1.2}, artifacts=[], log_tail=str(n))
        picks.add(market.spot_checked(secret, job.id, 100))
        assert r.to_map()["log_tail"] == str(n)
    assert len(picks) == 1


def test_a_picked_job_is_never_paid_without_a_verifiers_check() -> None:
    w = World(per_mille=1000)  # every job is picked
    secret = b"\x02" * 32
    job, _, pay, receipt = w.job_run(secret, 60.0)
    amount, _ = market.settle_amount(w.state, job.id)
    s = w.add(PAYER, settle(job, "paid", pay, receipt, amount, reveal=secret))
    assert "picked for a spot check" in w.verdict(s)
    assert w.state.balances.get(EXEC.public_key, 0) == 0
    reveal = w.add(PAYER, settle(job, "reveal", pay, receipt, reveal=secret))
    assert w.verdict(reveal) == "" and market.picked(w.state, job.id) is True
    # the verifier replays it; the executor never ran it, so the verifier refunds
    refund = w.add(V1, settle(job, "refunded", pay, receipt))
    assert w.verdict(refund) == ""
    assert w.state.balances.get(EXEC.public_key, 0) == 0 and w.state.balances[PAYER.public_key] == FUND


def test_an_unpicked_job_is_paid_by_its_payer_with_the_secret() -> None:
    w = World(per_mille=0)
    secret = b"\x03" * 32
    job, _, pay, receipt = w.job_run(secret, 30.0)
    amount, _ = market.settle_amount(w.state, job.id)
    no_secret = w.add(PAYER, settle(job, "paid", pay, receipt, amount))
    assert "revealed secret" in w.verdict(no_secret)
    wrong = w.add(PAYER, settle(job, "paid", pay, receipt, amount, reveal=b"\x04" * 32))
    assert "does not hash" in w.verdict(wrong)
    ok = w.add(PAYER, settle(job, "paid", pay, receipt, amount, reveal=secret))
    assert w.verdict(ok) == "" and w.state.balances[EXEC.public_key] == 30 * PRICE


def test_a_spot_check_bills_the_time_it_measured_not_the_receipts() -> None:
    w = World(per_mille=1000)
    secret = b"\x05" * 32
    job, _, pay, receipt = w.job_run(secret, 60.0)  # the executor says 60 GPU-s; the replay took 30
    w.add(PAYER, settle(job, "reveal", pay, receipt, reveal=secret))
    full, _ = market.settle_amount(w.state, job.id)
    over = w.add(V1, settle(job, "paid", pay, receipt, full, gpu_s=30.0))
    assert "releases" in w.verdict(over)
    fair, _ = market.settle_amount(w.state, job.id, 30.0)
    assert fair == int(30 * 1.25 * PRICE) < full == 60 * PRICE
    assert w.verdict(w.add(V1, settle(job, "paid", pay, receipt, fair, gpu_s=30.0))) == ""
    assert w.state.balances[EXEC.public_key] == fair
    # only a verifier may state a measured time
    w2 = World(per_mille=0)
    job, _, pay, receipt = w2.job_run(secret, 60.0)
    low, _ = market.settle_amount(w2.state, job.id, 1.0)
    assert "only a verifier" in w2.verdict(w2.add(PAYER, settle(job, "paid", pay, receipt, low, reveal=secret, gpu_s=1.0)))


def test_spot_check_histories_fold_the_same_in_any_order() -> None:
    w = World(per_mille=500)
    for n in range(6):
        secret = hashlib.sha256(b"order-%d" % n).digest()
        job, _, pay, receipt = w.job_run(secret, 10.0 + n)
        w.add(PAYER, settle(job, "reveal", pay, receipt, reveal=secret))
        if market.picked(w.state, job.id):
            amount, _ = market.settle_amount(w.state, job.id, 9.0)
            w.add(V1, settle(job, "paid", pay, receipt, amount, gpu_s=9.0))
        else:
            amount, _ = market.settle_amount(w.state, job.id)
            w.add(PAYER, settle(job, "paid", pay, receipt, amount))
    assert all(v == "" for v in w.state.verdicts.values()), w.state.verdicts
    want = fold.tables(fold.rebuild(w.spec, w.rows))
    for seed in range(10):
        assert fold.tables(fold.rebuild(w.spec, topological_shuffle(w.rows, random.Random(seed)))) == want


def test_jobs_and_settles_without_the_new_fields_encode_and_decode_as_before() -> None:
    job = Job(job_type="train", commit=commit(1), bundle=None, args=[], platform_class=CLASS, max_gpu_s=5,
              price_ucr_per_gpu_s=1, expires_ms=1)
    assert "check_hash" not in job.to_map() and Job.from_map(job.to_map()) == job
    s = Settle(job=b"j" * 32, payment=None, receipt=None, outcome="cancelled", amount=0, reason="")
    assert not {"reveal", "gpu_s"} & set(s.to_map()) and Settle.from_map(s.to_map()) == s
    with_secret = Job(**{**job.to_map(), "check_hash": b"h" * 32})
    assert Job.from_map(with_secret.to_map()) == with_secret
