"""The credits market's decisions, as pure functions: no ledger IO, no clock, no network.

node/market/loop.py runs the loop (offer, accept, start, receipt, settle, spot check) and asks these
functions what to do; the ledger's own rules (ledger/market.py) decide what is valid. What lives
here is policy, the part a node may choose differently from another without breaking anything:

- A job request is checked before anything is signed, with a one-line reason a person can act on:
  an unknown job type, a price or a GPU-seconds limit that is not positive, arguments outside the
  job type's allow-list, or a cost (limit x price) the payer's balance does not cover.
- Offers are chosen by price (lowest first), then by the executor's reputation (paid jobs against
  refunded ones, with a prior so a newcomer is neither trusted nor shunned), then by arrival.
- A receipt is spot-checked when the first 8 bytes of sha256(receipt id) fall below rate x 2**64:
  every node computes the same pick, so the payer knows to wait for the verifiers and an executor
  cannot tell in advance which of its receipts will be replayed.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from ledger.bodies import JOB_TYPES, Job
from ledger.errors import LedgerError
from ledger.fold import State
from ledger.market import settle_amount

from node.errors import NodeError

MAX_STEPS = 1_000_000        # a "train" job's --steps
MAX_SEED = 2**31 - 1
MAX_JOB_S = 24 * 3600        # GPU-seconds one job may ask for
MAX_EXPIRY_S = 7 * 24 * 3600
PRIOR_PAID, PRIOR_REFUNDED = 1, 1   # reputation prior: a newcomer scores 0.5


class BadJobRequest(NodeError):
    """A job request that cannot be submitted as it is; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class TrainArgs:
    """What a "train" job may ask of the trainer: an exact step count and a data seed, nothing else."""

    steps: int | None
    seed: int


def parse_train_args(args: Sequence[str]) -> TrainArgs:
    """The allow-list of a "train" job's arguments: `--steps N` and `--seed N` (each at most once)."""
    allowed = {"--steps": (1, MAX_STEPS), "--seed": (0, MAX_SEED)}
    seen: dict[str, int] = {}
    items = list(args)
    if len(items) % 2:
        raise BadJobRequest(f"job args come in pairs (--steps N, --seed N), got {len(items)} items")
    for flag, text in zip(items[::2], items[1::2]):
        if flag not in allowed:
            raise BadJobRequest(f"job arg {flag[:40]!r} is not allowed for a train job (allowed: --steps, --seed)")
        if flag in seen:
            raise BadJobRequest(f"job arg {flag} given twice")
        low, high = allowed[flag]
        if not text.isdigit() or not low <= int(text) <= high:
            raise BadJobRequest(f"job arg {flag} must be a whole number {low} to {high}, got {text[:40]!r}")
        seen[flag] = int(text)
    return TrainArgs(steps=seen.get("--steps"), seed=seen.get("--seed", 0))


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a person or agent asks for, before it becomes a signed Job."""

    job_type: str
    commit: bytes
    bundle: bytes | None
    args: tuple[str, ...]
    platform_class: str
    max_gpu_s: int
    price_ucr_per_gpu_s: int
    expires_s: int               # from now


def escrow_ucr(max_gpu_s: int, price_ucr_per_gpu_s: int) -> int:
    """What accepting an offer holds from the payer: the whole limit at the offer's price."""
    return max_gpu_s * price_ucr_per_gpu_s


def check_request(req: JobRequest, *, balance_ucr: int, platform_classes: Sequence[str], now_ms: int,
                  check_hash: bytes | None = None) -> Job:
    """The Job to sign for `req`, or BadJobRequest with the first thing wrong with it."""
    if req.job_type not in JOB_TYPES:
        raise BadJobRequest(f"unknown job type {req.job_type[:40]!r} (known: {', '.join(sorted(JOB_TYPES))})")
    if req.price_ucr_per_gpu_s <= 0:
        raise BadJobRequest(f"price must be positive (ucr per GPU-second), got {req.price_ucr_per_gpu_s}")
    if req.max_gpu_s <= 0 or req.max_gpu_s > MAX_JOB_S:
        raise BadJobRequest(f"max GPU-seconds must be 1 to {MAX_JOB_S}, got {req.max_gpu_s}")
    if not 1 <= req.expires_s <= MAX_EXPIRY_S:
        raise BadJobRequest(f"expiry must be 1 to {MAX_EXPIRY_S} seconds, got {req.expires_s}")
    if req.platform_class not in platform_classes:
        raise BadJobRequest(f"platform class {req.platform_class[:40]!r} is not one of this swarm's "
                            f"({', '.join(platform_classes)})")
    parse_train_args(req.args)
    cost = escrow_ucr(req.max_gpu_s, req.price_ucr_per_gpu_s)
    if cost > balance_ucr:
        raise BadJobRequest(f"{req.max_gpu_s} GPU-seconds at {req.price_ucr_per_gpu_s} ucr cost {cost} ucr, "
                            f"more than the balance of {balance_ucr} ucr")
    try:
        return Job(job_type=req.job_type, commit=req.commit, bundle=req.bundle, args=list(req.args),
                   platform_class=req.platform_class, max_gpu_s=req.max_gpu_s,
                   price_ucr_per_gpu_s=req.price_ucr_per_gpu_s, expires_ms=now_ms + 1000 * req.expires_s,
                   check_hash=check_hash)
    except LedgerError as exc:   # the body's own checks (InvalidEntry)
        raise BadJobRequest(f"bad job: {exc}") from None


# -- offers


@dataclass(frozen=True, slots=True)
class OfferView:
    offer_id: bytes
    author: bytes
    price_ucr_per_gpu_s: int
    expires_ms: int
    arrival: int                 # position among the job's offers


def reputation_score(paid: int, refunded: int) -> float:
    """Share of an executor's settled jobs that were paid, with a prior of one of each."""
    return (paid + PRIOR_PAID) / (paid + refunded + PRIOR_PAID + PRIOR_REFUNDED)


def choose_offer(offers: Sequence[OfferView], job_price: int, reputation: Mapping[bytes, tuple[int, int]],
                 now_ms: int, exclude: frozenset[bytes] = frozenset()) -> OfferView | None:
    """The offer to accept: unexpired, within the job's price, cheapest, then best reputation, then first."""
    live = [o for o in offers if o.price_ucr_per_gpu_s <= job_price and o.expires_ms > now_ms
            and o.author not in exclude]
    if not live:
        return None
    return min(live, key=lambda o: (o.price_ucr_per_gpu_s, -reputation_score(*reputation.get(o.author, (0, 0))),
                                    o.arrival, o.offer_id))


def accept_due(job_time_ms: int, first_offer_ms: int | None, now_ms: int, window_ms: int) -> bool:
    """Whether the payer should pick an offer now: the accept window after the job has passed, or
    after the first offer, whichever is later (offers take a moment to arrive)."""
    if first_offer_ms is None:
        return False
    return now_ms >= max(job_time_ms, first_offer_ms) + window_ms


def should_offer(*, job_author: bytes, job_class: str, job_type: str, job_price: int, job_expires_ms: int,
                 me: bytes, my_classes: Sequence[str], my_price: int, free_slots: int, offered: bool,
                 now_ms: int) -> bool:
    """Whether this node offers on an open job: another's job, of a class and type we run, at a price
    we take, not expired, not offered on already, and a worker that can take it."""
    return (job_author != me and job_class in my_classes and job_type in JOB_TYPES and my_price <= job_price
            and job_expires_ms > now_ms and not offered and free_slots > 0)


def needed_holders(connected: int) -> int:
    """Peers that must report holding a payment before its executor starts: two where there are
    two, so a forked payer cannot show each of two executors its own branch."""
    return min(2, connected)


# -- receipts and spot checks


def spot_checked(receipt_id: bytes, rate: float) -> bool:
    """The same pick on every node: sha256(receipt id)'s first 8 bytes below rate x 2**64."""
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    return int.from_bytes(hashlib.sha256(receipt_id).digest()[:8], "big") < rate * 2**64


def gpu_ms(wall_s: float, devices: int, max_gpu_s: int) -> int:
    """What an executor bills, in integer GPU-milliseconds rounded up: the run's wall time times its
    devices (a CPU counts as one), capped at the job's limit (the limit is also the run's time
    budget, so only startup overruns it). Integers, as the ledger counts an executor's reputation."""
    used = math.ceil(Fraction(max(0.0, wall_s)) * max(1, devices) * 1000)
    return min(used, max_gpu_s * 1000)


def signed_gpu_s(gpu_ms_: int) -> float:
    """A Receipt's gpu_s for `gpu_ms_` GPU-milliseconds: the largest float not above gpu_ms_ / 1000.

    The ledger reads the signed float exactly and rounds up (ledger/market.py cost_ucr, and the
    reputation's milliseconds); most thousandths are a little over their decimal as a float, and
    ceil(12.56 x 50) would then be 629, not 628. From below, its readings are exactly gpu_ms_ and
    `cost_ucr(gpu_ms_, price)`, for any price below about 1e7 ucr per GPU-second at the largest
    job (a float's spacing near 86400 s, times the price, stays under a thousandth)."""
    value = gpu_ms_ / 1000
    if Fraction(value) > Fraction(gpu_ms_, 1000):
        value = math.nextafter(value, 0.0)
    return value


def cost_ucr(gpu_ms_: int, price_ucr_per_gpu_s: int) -> int:
    """What `gpu_ms_` GPU-milliseconds cost at a price, rounded up: integers end to end."""
    return -(-gpu_ms_ * price_ucr_per_gpu_s // 1000)


def replay_verdict(claimed: Mapping[str, float], measured_bpb: float | None, measured_steps: int,
                   tolerance_bpb: float) -> tuple[bool, str]:
    """Whether a spot check's replay reproduces a receipt's metrics, and what it measured."""
    want = claimed.get("val_bpb")
    steps = claimed.get("num_steps")
    if want is None or not math.isfinite(want):
        return measured_bpb is None, f"receipt has no val_bpb; replay measured {measured_bpb}"
    if measured_bpb is None:
        return False, f"replay failed; the receipt claimed val_bpb {want:.4f}"
    if steps is not None and int(steps) != measured_steps:
        return False, f"replay ran {measured_steps} steps; the receipt claimed {int(steps)}"
    ok = abs(measured_bpb - want) <= tolerance_bpb
    return ok, f"replay measured val_bpb {measured_bpb:.4f}, the receipt claimed {want:.4f}"


# -- views (the local API and the dashboard)


def job_row(state: State, job_id: bytes) -> dict[str, object]:
    """One job as plain JSON-able values: what it asks, who runs it, what it used, how it ended."""
    info = state.jobs[job_id]
    job = info.job
    row: dict[str, object] = {
        "job": job_id.hex(), "payer": info.author, "job_type": job.job_type, "platform_class": job.platform_class,
        "commit": job.commit.hex(), "args": list(job.args), "max_gpu_s": job.max_gpu_s,
        "price_ucr_per_gpu_s": job.price_ucr_per_gpu_s, "expires_ms": job.expires_ms, "time_ms": info.time_ms,
        "status": info.status, "offers": len(info.offers), "executor": None, "offer_price": None,
        "held_ucr": None, "gpu_s": None, "receipt_status": None, "paid_ucr": None, "refund_ucr": None,
    }
    if info.payment is not None and (escrow := state.escrows.get(info.payment)) is not None:
        offer = state.offers.get(escrow.offer)
        row.update(executor=escrow.executor, held_ucr=escrow.amount,
                   offer_price=offer.price_ucr_per_gpu_s if offer else None)
    if info.receipt is not None and (receipt := state.receipts.get(info.receipt)) is not None:
        row.update(gpu_s=receipt.gpu_s, receipt_status=receipt.status)
    if info.status == "settled":
        row["paid_ucr"], row["refund_ucr"] = settle_amount(state, job_id)
    elif info.status == "refunded" and info.payment is not None:
        row["paid_ucr"], row["refund_ucr"] = 0, state.escrows[info.payment].amount
    return row


def job_rows(state: State, limit: int) -> list[dict[str, object]]:
    """The newest `limit` jobs, newest first."""
    ids = sorted(state.jobs, key=lambda j: (state.jobs[j].time_ms, j), reverse=True)[:limit]
    return [job_row(state, j) for j in ids]
