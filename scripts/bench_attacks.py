"""The mint, trust and market attacks of issue 12, played against the fold, then against a real node.

Each attack builds the signed entries an attacker would publish beside an honest swarm, folds
them as a store does (and in shuffled arrival orders where order is the attack), and prints one
JSON object per line: {"attack", "succeeded", "attacker_ucr", ...}. `attacker_ucr` counts the
credits the attacker's keys hold beyond what honest work entitles them to (always expected 0).
The identity attacks (free keys asking to verify, rings, self-admission, fee floods) are then
played against a real default node on loopback by scripts/attacks_live.py; the attacks here need
trusted keys or an honest swarm's entries that an outside attacker cannot get that way. Then the
colluding minority (scripts/sim_collude.py: 10% and 30% of identities earn trust honestly, then
vouch for each other, invent gains and copy honest ones), once with copies and once without.

    python scripts/bench_attacks.py [--fold-only] [--no-collusion]
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger import credits, fold, market  # noqa: E402
from ledger.bodies import Admit, Body, Claim, Job, Mint, Offer, Receipt, Seal, Settle, Transfer, Verify  # noqa: E402
from ledger.entry import Entry, sign_entry  # noqa: E402
from ledger.keys import Identity  # noqa: E402
from ledger.spec import SwarmSpec, sign_spec  # noqa: E402

CLASS = "cpu-tiny"
NOISE_BPB = 0.01
RATE_UCR_PER_BPB = 1_000_000_000  # 0.03 bpb of progress is worth 30 credits
FEE_UCR = 1_000


def key(name: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"bench-attacks/" + name.encode()).digest())


CREATOR, HONEST_V, HONEST_V2, HONEST_V3, ALICE = (key(n) for n in ("creator", "v1", "v2", "v3", "alice"))


class Swarm:
    """An honest swarm's spec and a fold fed one entry at a time, with a hand on every feed."""

    def __init__(self, quorum: int = 1, spot_check_per_mille: int = 100) -> None:
        spec = SwarmSpec(
            name="bench-attacks", creator=CREATOR.public_key, created_ms=0, harness_hash=b"h" * 32,
            dataset_hash=b"d" * 32, tokenizer_hash=b"t" * 32, time_budget_s=300, metric="val_bpb", direction="min",
            baseline_commit=b"\0" * 20, allowed_files=["train.py"], platform_classes=[CLASS],
            verifiers=[HONEST_V.public_key, HONEST_V2.public_key, HONEST_V3.public_key], quorum=quorum,
            noise_bpb={CLASS: NOISE_BPB}, record_ucr_per_bpb=RATE_UCR_PER_BPB, verify_ucr=FEE_UCR,
            spot_check_per_mille=spot_check_per_mille)
        self.signed = sign_spec(CREATOR, spec)
        self.spec = spec
        self.state = fold.initial(spec)
        self.rows: list[Entry] = []
        self.heads: dict[bytes, tuple[int, bytes | None]] = {}
        self.clock_ms = 1_000_000

    def add(self, who: Identity, body: Body, *, time_ms: int | None = None) -> Entry:
        seq, prev = self.heads.get(who.public_key, (0, None))
        self.clock_ms += 1000
        entry = sign_entry(who, swarm=self.signed.swarm_id, seq=seq + 1, prev=prev, body=body,
                           time_ms=self.clock_ms if time_ms is None else time_ms)
        self.heads[who.public_key] = (entry.seq, entry.id)
        self.rows.append(entry)
        fold.apply(self.state, entry)
        if self.state.needs_rebuild:
            self.state = fold.rebuild(self.spec, self.rows)
        if isinstance(body, Claim):  # an anchor's node seals it, as an honest swarm's does within seconds
            self.add(HONEST_V2 if who is HONEST_V else HONEST_V, Seal(claims=[entry.id]))
        return entry

    def holds(self, keys: list[Identity]) -> int:
        return sum(self.state.balances.get(k.public_key, 0) for k in keys)

    def honest_mints(self) -> None:
        """Every quorum member of every record mints its share, as honest nodes do."""
        for row in list(self.state.records):
            for v in (HONEST_V, HONEST_V2, HONEST_V3):
                mint, _ = credits.record_mint(self.state, v.public_key, row.claim)
                if mint is not None:
                    self.add(v, mint)


def commit_of(n: int) -> bytes:
    return hashlib.sha1(b"bench-commit-%d" % n).digest()


def claim(n: int, val_bpb: float, steps: int = 100) -> Claim:
    return Claim(commit=commit_of(n), parent=commit_of(0), platform_class=CLASS, status="ok", val_bpb=val_bpb,
                 num_steps=steps, planned_steps=steps, seed=1, training_s=3.0, wall_s=5.0, peak_vram_mb=0.0,
                 loss_curve=[], diff_summary="", message="", bundle=None)


def verify(c: Entry, val_bpb: float) -> Verify:
    body = c.body
    assert isinstance(body, Claim)
    return Verify(claim=c.id, commit=body.commit, platform_class=CLASS, status="ok", val_bpb=val_bpb,
                  num_steps=100, seed=2, training_s=3.0)


def fee(ver: Entry) -> Mint:
    return Mint(reason="verification", subject=ver.id, quorum=[], to=ver.author, amount=FEE_UCR, value=None,
                prev_best=None)


def record_mint(c: Entry, quorum: list[Entry], value: float, prev: float | None, amount: int) -> Mint:
    return Mint(reason="record", subject=c.id, quorum=[q.id for q in quorum], to=c.author, amount=amount,
                value=value, prev_best=prev)


def baseline(s: Swarm) -> Entry:
    base = s.add(ALICE, claim(0, 1.50))
    s.add(HONEST_V, verify(base, 1.50))
    return base


# -- the attacks: each returns (succeeded, attacker_ucr, details)


def sybil_verifier_mints_an_invented_record() -> tuple[bool, int, dict[str, Any]]:
    """A fresh key (no admission, no replays beside trusted ones) verifies an invented 0.5 bpb claim."""
    s = Swarm()
    baseline(s)
    sybil, sock = key("sybil"), key("sock")
    fake = s.add(sock, claim(99, 0.5))
    ver = s.add(sybil, verify(fake, 0.5))
    s.add(sybil, record_mint(fake, [ver], 0.5, 1.5, RATE_UCR_PER_BPB))
    s.add(sybil, fee(ver))
    held = s.holds([sybil, sock])
    return held > 0 or fake.id in s.state.record_of, held, {"records": len(s.state.records)}


def sybil_ring_earns_trust() -> tuple[bool, int, dict[str, Any]]:
    """Two fresh keys claim and replay each other 50 times, no anchor ever replaying."""
    s = Swarm()
    a, b = key("ring-a"), key("ring-b")
    for n in range(50):
        c = s.add(a, claim(1000 + n, 0.9))
        s.add(b, verify(c, 0.9))
        c2 = s.add(b, claim(2000 + n, 0.9))
        s.add(a, verify(c2, 0.9))
    trusted = any(k.public_key in s.state.verifiers for k in (a, b))
    return trusted, s.holds([a, b]), {"trusted": trusted}


def fee_flood() -> tuple[bool, int, dict[str, Any]]:
    """A trusted verifier publishes 1,000 verifies of one claim and a fee mint for each."""
    s = Swarm()
    c = s.add(ALICE, claim(1, 1.5))
    for _ in range(1000):
        s.add(HONEST_V2, fee(s.add(HONEST_V2, verify(c, 1.5))))
    excess = s.holds([HONEST_V2]) - FEE_UCR
    return excess > 0, max(0, excess), {"fees_paid": s.holds([HONEST_V2]) // FEE_UCR}


def four_full_shares() -> tuple[bool, int, dict[str, Any]]:
    """Four verifiers each mint a full share of one 0.03 bpb record (quorum 1)."""
    s = Swarm()
    baseline(s)
    extra = key("v4")
    s.add(CREATOR, Admit(verifier=extra.public_key, platform_classes=[CLASS]))
    better = s.add(ALICE, claim(2, 1.47))
    worth = RATE_UCR_PER_BPB * 3 // 100
    for v in (HONEST_V, HONEST_V2, HONEST_V3, extra):
        ver = s.add(v, verify(better, 1.47))
        s.add(v, record_mint(better, [ver], 1.47, 1.50, worth))
    excess = s.holds([ALICE]) - worth
    return excess > 0, max(0, excess), {"minted_ucr": s.holds([ALICE]), "one_record_ucr": worth}


def late_zero_mint_on_baseline() -> tuple[bool, int, dict[str, Any]]:
    """A verifier outside the quorums zero-mints the baseline late, then mints from that prev_best."""
    s = Swarm()
    base = baseline(s)
    better = s.add(ALICE, claim(3, 1.30))
    s.add(HONEST_V, verify(better, 1.30))
    s.add(HONEST_V2, record_mint(base, [s.add(HONEST_V2, verify(base, 1.50))], 1.50, None, 0))
    steal = RATE_UCR_PER_BPB // 5
    s.add(HONEST_V2, record_mint(better, [s.add(HONEST_V2, verify(better, 1.30))], 1.30, 1.50, steal))
    return s.holds([ALICE]) > 0, s.holds([ALICE]), {}


def mint_for_a_non_record() -> tuple[bool, int, dict[str, Any]]:
    """A quorum member mints for a verified claim that is no record (worse than the best)."""
    s = Swarm()
    baseline(s)
    worse = s.add(ALICE, claim(4, 1.60))
    ver = s.add(HONEST_V, verify(worse, 1.60))
    s.add(HONEST_V, record_mint(worse, [ver], 1.60, 1.50, 0))
    s.add(HONEST_V, record_mint(worse, [ver], 1.40, 1.50, RATE_UCR_PER_BPB // 10))
    return s.holds([ALICE]) > 0, s.holds([ALICE]), {}


def sybil_refutes_honest_claims() -> tuple[bool, int, dict[str, Any]]:
    """A fresh key posts a worse number the instant each honest claim appears, with an early clock."""
    s = Swarm()
    baseline(s)
    sybil = key("refuter")
    refuted = 0
    for n in range(10):
        c = s.add(ALICE, claim(10 + n, 1.45 - n * 0.02))
        s.add(sybil, verify(c, 1.9), time_ms=c.time_ms)
        s.add(HONEST_V, verify(c, 1.45 - n * 0.02))
        refuted += c.id in s.state.refuted
    return refuted > 0, s.holds([sybil]), {"honest_claims_refuted": refuted}


def earned_sybil_refutes_honest_claims() -> tuple[bool, int, dict[str, Any]]:
    """A key earns trust honestly (spec.trust_replays agreeing replays), then front-runs honest claims
    with worse numbers; the anchors replay them too. One disagreement voids its trust, and with it
    every replay it made, whenever it arrived."""
    s = Swarm()
    baseline(s)
    sybil = key("earner")
    for n in range(s.spec.trust_replays):
        c = s.add(ALICE, claim(100 + n, 1.6 + n / 100))
        s.add(HONEST_V, verify(c, 1.6 + n / 100))
        s.add(sybil, verify(c, 1.6 + n / 100))
    earned = sybil.public_key in s.state.verifiers
    refuted_while_trusted = 0
    claims = []
    for n in range(5):
        c = s.add(ALICE, claim(200 + n, 1.45 - n * 0.02))
        s.add(sybil, verify(c, 1.9), time_ms=c.time_ms)
        refuted_while_trusted += c.id in s.state.refuted
        claims.append(c)
    for n, c in enumerate(claims):
        s.add(HONEST_V, verify(c, 1.45 - n * 0.02))
    refuted = sum(c.id in s.state.refuted for c in claims)
    return (refuted > 0 or sybil.public_key in s.state.verifiers, s.holds([sybil]),
            {"earned_trust_first": earned, "refuted_before_anchors_replayed": refuted_while_trusted,
             "refuted_after": refuted, "trusted_after": sybil.public_key in s.state.verifiers})


def clock_lie_moves_a_record_ahead() -> tuple[bool, int, dict[str, Any]]:
    """A claimant back-dates its claim of the same gain to take an honest record's place."""
    s = Swarm()
    baseline(s)
    honest = s.add(ALICE, claim(5, 1.40))
    s.add(HONEST_V, verify(honest, 1.40))
    liar = key("liar")
    lie = s.add(liar, claim(6, 1.395), time_ms=1)
    s.add(HONEST_V, verify(lie, 1.395))
    s.honest_mints()
    ahead = any(r.claim == lie.id for r in s.state.records)
    return ahead, s.holds([liar]), {"records": [r.claim.hex()[:8] for r in s.state.records]}


def arrival_order_splits_the_swarm() -> tuple[bool, int, dict[str, Any]]:
    """The attacker's admitted key verifies and mints; nodes receive the entries in different orders."""
    s = Swarm(quorum=2)
    attacker = key("admitted")
    base = s.add(ALICE, claim(0, 1.50))
    for v in (HONEST_V, HONEST_V2):
        s.add(v, verify(base, 1.50))
    c = s.add(attacker, claim(7, 1.30))
    for v in (HONEST_V, HONEST_V2):
        s.add(v, verify(c, 1.30))
    fake = s.add(key("attacker-sock"), claim(8, 0.5))
    ver = s.add(attacker, verify(fake, 0.5))
    s.add(CREATOR, Admit(verifier=attacker.public_key, platform_classes=[CLASS]))
    s.add(attacker, record_mint(fake, [ver], 0.5, 1.3, RATE_UCR_PER_BPB))
    s.honest_mints()
    want = fold.tables(fold.rebuild(s.spec, s.rows))
    differing = 0
    for seed in range(30):
        order = _topological_shuffle(s.rows, random.Random(seed))
        state = fold.initial(s.spec)
        for i, e in enumerate(order):
            fold.apply(state, e)
            if state.needs_rebuild:
                state = fold.rebuild(s.spec, order[:i + 1])
        differing += fold.tables(state) != want
    return differing > 0, s.holds([key("attacker-sock")]), {"orders": 30, "orders_differing": differing}


def _topological_shuffle(rows: list[Entry], rng: random.Random) -> list[Entry]:
    present: set[bytes] = set()
    waiting, out = list(rows), []
    while waiting:
        ready = [e for e in waiting if all(d in present for d in e.deps())]
        pick = rng.choice(ready)
        waiting.remove(pick)
        present.add(pick.id)
        out.append(pick)
    return out


def _market(s: Swarm, secret: bytes, gpu_s: float, executor: Identity) -> tuple[Entry, Entry, Entry, Entry]:
    c = s.add(ALICE, claim(500, 1.5))
    fund = s.add(HONEST_V, fee(s.add(HONEST_V, verify(c, 1.5))))
    s.add(HONEST_V, Transfer(to=ALICE.public_key, amount=FEE_UCR, spends=[fund.id], memo="", job=None, offer=None))
    tx = s.rows[-1]
    job = s.add(ALICE, Job(job_type="train", commit=commit_of(9), bundle=None, args=[], platform_class=CLASS,
                           max_gpu_s=60, price_ucr_per_gpu_s=10, expires_ms=10**13,
                           check_hash=hashlib.sha256(secret).digest()))
    offer = s.add(executor, Offer(job=job.id, price_ucr_per_gpu_s=10, expires_ms=10**13))
    pay = s.add(ALICE, Transfer(to=executor.public_key, amount=600, spends=[tx.id], memo="", job=job.id,
                                offer=offer.id))
    receipt = s.add(executor, Receipt(job=job.id, offer=offer.id, payment=pay.id, status="ok", gpu_s=gpu_s,
                                      metrics={"val_bpb": 1.2}, artifacts=[], log_tail=""))
    return job, offer, pay, receipt


def receipt_grinding() -> tuple[bool, int, dict[str, Any]]:
    """An executor that never ran the job regenerates receipts until the spot check misses it."""
    lazy = key("lazy-executor")
    dodged, picked_jobs = 0, 0
    for n in range(40):
        s = Swarm(spot_check_per_mille=250)
        secret = hashlib.sha256(b"payer-secret-%d" % n).digest()
        # whatever receipt the executor signs (gpu_s, metrics, log), the pick reads only the payer's
        # secret, unknown until after the receipt, and the job id, fixed before the executor offered
        job, offer, pay, receipt = _market(s, secret, 60.0 - n / 100, lazy)
        picked = market.spot_checked(secret, job.id, 250)
        picked_jobs += picked
        s.add(ALICE, Settle(job=job.id, payment=pay.id, receipt=receipt.id, outcome="reveal", amount=0, reason="",
                            reveal=secret))
        if picked:  # the verifier's replay finds nothing was run: refund
            s.add(HONEST_V2, Settle(job=job.id, payment=pay.id, receipt=receipt.id, outcome="refunded", amount=0,
                                    reason="spot check did not reproduce"))
            dodged += s.holds([lazy]) > 0
    return dodged > 0, 0, {"jobs": 40, "picked_jobs": picked_jobs, "picked_jobs_paid": dodged}


def overbilling() -> tuple[bool, int, dict[str, Any]]:
    """An executor bills max_gpu_s (60) for a job whose spot check measured 30 GPU-seconds."""
    s = Swarm(spot_check_per_mille=1000)
    executor = key("overbiller")
    secret = b"\x07" * 32
    job, _, pay, receipt = _market(s, secret, 60.0, executor)
    s.add(ALICE, Settle(job=job.id, payment=pay.id, receipt=receipt.id, outcome="reveal", amount=0, reason="",
                        reveal=secret))
    full, _ = market.settle_amount(s.state, job.id)
    s.add(HONEST_V2, Settle(job=job.id, payment=pay.id, receipt=receipt.id, outcome="paid", amount=full, reason="",
                            gpu_s=30.0))
    fair, _ = market.settle_amount(s.state, job.id, 30.0)
    s.add(HONEST_V2, Settle(job=job.id, payment=pay.id, receipt=receipt.id, outcome="paid", amount=fair, reason="",
                            gpu_s=30.0))
    paid = s.holds([executor])
    over = paid - int(30 * 10 * 1.25)
    return over > 0, max(0, over), {"billed_ucr": paid, "receipt_ucr": full, "measured_gpu_s": 30.0}


ATTACKS: list[Callable[[], tuple[bool, int, dict[str, Any]]]] = [
    sybil_verifier_mints_an_invented_record, sybil_ring_earns_trust, fee_flood, four_full_shares,
    late_zero_mint_on_baseline, mint_for_a_non_record, sybil_refutes_honest_claims, earned_sybil_refutes_honest_claims,
    clock_lie_moves_a_record_ahead,
    arrival_order_splits_the_swarm, receipt_grinding, overbilling,
]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    failed = 0
    for attack in ATTACKS:
        start = time.perf_counter()
        succeeded, attacker_ucr, details = attack()
        failed += succeeded
        print(json.dumps({"attack": attack.__name__, "level": "fold", "succeeded": succeeded,
                          "attacker_ucr": attacker_ucr, **details,
                          "elapsed_s": round(time.perf_counter() - start, 3)}), flush=True)
    if "--no-collusion" not in args:
        import sim_collude
        for copies in (False, True):
            for share in (0.1, 0.3):
                # a trust tolerance wide enough that colluders keep the trust they earn (with the spec's
                # default, noise_bpb, most lose it to noise and the attack is barely played)
                row = sim_collude.scenario(sim_collude.DEFAULT_NODES, sim_collude.DEFAULT_HOURS, share, 1, copies,
                                           sim_collude.WIDE_TOLERANCE_BPB)
                failed += bool(row["succeeded"]) or not row["verification_share_ok"]
                print(json.dumps(row), flush=True)
    if "--fold-only" not in args:  # then the identity attacks against a real default node
        import attacks_live
        failed += attacks_live.main([])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
