"""Market rules: jobs, offers, escrow payments, receipts and settlement. Pure functions over fold state.

Theory of operation. A payer publishes a Job; executors publish Offers for it; the payer
accepts one with an escrow payment (a Transfer naming both the job and the offer): its amount,
max_gpu_s times the offer's price, leaves the payer's balance but creates no output for anyone
yet, it is *held*. The executor runs the job and signs a Receipt naming the payment. A Settle
then closes the job, once:
- paid: the payer, or a trusted verifier of the job's class, releases what the receipt's
  GPU-seconds cost at the offer's price (rounded up, at most the escrow) to the executor, the
  rest back to the payer;
- refunded: a trusted verifier whose spot check did not reproduce the receipt, or the payer after
  the job expired without a receipt, returns the whole escrow to the payer;
- cancelled: the payer withdraws a job that has no escrow payment.
The job, its cancel and its escrow payment all sit in the payer's feed, so every node sees them
in one order. Settle outputs are ordinary outputs, keyed (settle id, owner), spent by transfers
like any other. Reputation counts an executor's paid and refunded jobs.

Spot checks the executor cannot steer. A job may carry `check_hash`, sha256 of a secret only the
payer knows. After the receipt the payer reveals the secret (a `reveal` settle, which moves
nothing, or inside its own paid settle); `spot_checked(secret, job id)` then picks the job for a
check with the spec's rate. The executor signed its receipt before the secret was public and
chose neither input, so regenerating receipts changes nothing. A picked job is settled only by a
trusted verifier, who replays it; its paid settle states the GPU-seconds its own replay took and
releases at most that (with BILLING_SLACK) at the offer's price: billing follows measured time, not
what the receipt says. A payer that never reveals cannot pay unchecked; a verifier may always
check and settle.

Two settles of one job by different authors (or a receipt and a payer's refund after expiry)
race: the first the fold sees wins and the other gets a verdict. Nodes avoid the race by waiting
(a payer refunds only well after expiry); the ledger stays consistent either way because each
node folds its own row order and the audit refolds the same order.
"""
from __future__ import annotations

import hashlib
import math
from fractions import Fraction

from ledger import credits
from ledger.bodies import Job, Offer, Receipt, Settle, Transfer
from ledger.state import EscrowInfo, JobInfo, OfferInfo, ReceiptInfo, Reputation, State

__all__ = ["EscrowInfo", "JobInfo", "OfferInfo", "ReceiptInfo", "Reputation"]

SPOT_CHECK_DOMAIN = b"autoswarm/spot-check\x00"
BILLING_SLACK = Fraction(5, 4)  # a spot check releases at most 1.25 x the GPU-seconds its own replay took
JOB_STATUSES = ("open", "accepted", "ran", "settled", "refunded", "cancelled")
UNKNOWN = "unknown"  # job_status of an id that is not a valid job in this state


def cost_ucr(gpu_s: float, price_ucr_per_gpu_s: int) -> int:
    """What `gpu_s` costs at a price, rounded up; exact on the signed float, so every node agrees."""
    return math.ceil(Fraction(gpu_s) * price_ucr_per_gpu_s)


def job_status(state: State, job_id: bytes) -> str:
    info = state.jobs.get(job_id)
    return UNKNOWN if info is None else info.status


def open_jobs(state: State, platform_class: str) -> list[bytes]:
    """Ids of the class's jobs that still take offers, in arrival order."""
    return [jid for jid, info in state.jobs.items() if info.status == "open" and info.job.platform_class == platform_class]


def spot_checked(secret: bytes, job_id: bytes, per_mille: int) -> bool:
    """The same pick on every node, from the payer's secret and the job: nothing the executor signs."""
    digest = hashlib.sha256(SPOT_CHECK_DOMAIN + secret + job_id).digest()
    return int.from_bytes(digest[:8], "big") * 1000 < per_mille * 2**64


def check_secret(job: Job, secret: bytes) -> bool:
    return job.check_hash is not None and hashlib.sha256(secret).digest() == job.check_hash


def picked(state: State, job_id: bytes) -> bool | None:
    """Whether the job is picked for a spot check; None while its secret is unrevealed (or it has none)."""
    info = state.jobs.get(job_id)
    if info is None or info.revealed is None:
        return None
    return spot_checked(info.revealed, job_id, state.spec.spot_check_per_mille)


def settle_amount(state: State, job_id: bytes, measured_gpu_s: float | None = None) -> tuple[int, int]:
    """(to the executor, back to the payer) if the job were settled "paid" now; (0, escrow) without a
    receipt. `measured_gpu_s`: a spot check's own time, which caps the receipt's (see BILLING_SLACK)."""
    info = state.jobs.get(job_id)
    if info is None or info.payment is None:
        return 0, 0
    escrow = state.escrows[info.payment]
    if info.receipt is None:
        return 0, escrow.amount
    offer = state.offers[escrow.offer]
    billed = Fraction(state.receipts[info.receipt].gpu_s)
    if measured_gpu_s is not None:
        billed = min(billed, Fraction(measured_gpu_s) * BILLING_SLACK)
    paid = min(escrow.amount, math.ceil(billed * offer.price_ucr_per_gpu_s))
    return paid, escrow.amount - paid


# -- job and offer


def check_job(state: State, time_ms: int, job: Job) -> str:
    if job.platform_class not in state.spec.platform_classes:
        return f"platform class {job.platform_class!r} is not one of the swarm's"
    if job.expires_ms <= time_ms:
        return "the job expires before it was published"
    return ""


def apply_job(state: State, entry_id: bytes, author: bytes, time_ms: int, job: Job) -> None:
    state.jobs[entry_id] = JobInfo(author, time_ms, job)


def apply_offer(state: State, entry_id: bytes, author: bytes, time_ms: int, offer: Offer) -> bool:
    """Records an offer for a known job; False (nothing recorded) for any other."""
    info = state.jobs.get(offer.job)
    if info is None or author == info.author:
        return False
    state.offers[entry_id] = OfferInfo(author, time_ms, offer.job, offer.price_ucr_per_gpu_s, offer.expires_ms)
    info.offers.append(entry_id)
    return True


# -- escrow payment (a Transfer with job and offer); credits.check_transfer checks the spends


def check_escrow(state: State, payer: bytes, transfer: Transfer) -> str:
    if transfer.job is None or transfer.offer is None:
        return "an escrow payment names a job and an offer"
    info = state.jobs.get(transfer.job)
    if info is None:
        return "the payment names no valid job"
    if info.author != payer:
        return "only the job's author pays for it"
    if info.status == "cancelled":
        return "the job was cancelled"
    if info.payment is not None:
        return "the job already has a payment"
    offer = state.offers.get(transfer.offer)
    if offer is None or offer.job != transfer.job:
        return "the payment names no offer for this job"
    if offer.price_ucr_per_gpu_s > info.job.price_ucr_per_gpu_s:
        return "the offer's price is above the job's"
    if transfer.to != offer.author:
        return "an escrow payment goes to the offer's author"
    want = info.job.max_gpu_s * offer.price_ucr_per_gpu_s
    if transfer.amount != want:
        return f"an escrow payment holds max_gpu_s times the offer's price, {want} ucr"
    return ""


def apply_escrow(state: State, entry_id: bytes, payer: bytes, transfer: Transfer) -> None:
    """Records the hold; credits.apply_transfer has already taken the amount off the payer."""
    assert transfer.job is not None and transfer.offer is not None  # check_escrow passed
    state.escrows[entry_id] = EscrowInfo(payer, transfer.to, transfer.job, transfer.offer, transfer.amount)
    state.held[payer] = state.held.get(payer, 0) + transfer.amount
    info = state.jobs[transfer.job]
    info.payment = entry_id
    info.status = "accepted"


# -- receipt


def check_receipt(state: State, author: bytes, receipt: Receipt) -> str:
    info = state.jobs.get(receipt.job)
    if info is None:
        return "the receipt names no valid job"
    escrow = state.escrows.get(receipt.payment)
    if escrow is None or escrow.job != receipt.job:
        return "the receipt names no escrow payment for this job"
    if author != escrow.executor:
        return "only the payment's executor signs its receipt"
    if receipt.offer != escrow.offer:
        return "the receipt names another offer than its payment"
    if info.settle is not None:
        return "the job is already settled"
    if info.receipt is not None:
        return "the job already has a receipt"
    if receipt.gpu_s > info.job.max_gpu_s:
        return f"gpu_s {receipt.gpu_s} is over the job's max_gpu_s {info.job.max_gpu_s}"
    return ""


def apply_receipt(state: State, entry_id: bytes, author: bytes, receipt: Receipt) -> None:
    state.receipts[entry_id] = ReceiptInfo(author, receipt.job, receipt.payment, receipt.status, receipt.gpu_s)
    info = state.jobs[receipt.job]
    info.receipt = entry_id
    info.status = "ran"


# -- settle


def check_settle(state: State, author: bytes, time_ms: int, settle: Settle) -> str:
    info = state.jobs.get(settle.job)
    if info is None:
        return "the settle names no valid job"
    if settle.reveal is not None and not check_secret(info.job, settle.reveal):
        return "the revealed secret does not hash to the job's check_hash"
    if settle.outcome == "reveal":  # valid before or after a verifier's settle: no race with it
        return _check_reveal(state, author, info, settle)
    if info.settle is not None:
        return "the job is already settled"
    if settle.outcome == "cancelled":
        if author != info.author:
            return "only the job's author cancels it"
        if settle.payment is not None or settle.receipt is not None or settle.amount != 0:
            return "a cancel names no payment or receipt and moves nothing"
        if info.payment is not None:
            return "the job has a payment: it can no longer be cancelled"
        return ""
    if info.payment is None or settle.payment != info.payment:
        return "the settle must name the job's escrow payment"
    escrow = state.escrows[info.payment]
    # a verifier that is a party to the job does not judge it
    verifier = credits.trusted(state, author, info.job.platform_class) and author not in (escrow.payer, escrow.executor)
    if settle.gpu_s is not None and not verifier:
        return "only a verifier's spot check states its measured gpu_s"
    if settle.outcome == "paid":
        if author != info.author and not verifier:
            return "only the payer or a trusted verifier of the class settles paid"
        if info.receipt is None or settle.receipt != info.receipt:
            return "a paid settle names the job's receipt"
        if not verifier and info.job.check_hash is not None:
            secret = settle.reveal if info.revealed is None else info.revealed
            if secret is None or not check_secret(info.job, secret):
                return "the payer pays a job with a check_hash only with its revealed secret"
            if spot_checked(secret, settle.job, state.spec.spot_check_per_mille):
                return "the job is picked for a spot check: a trusted verifier settles it"
        want, _ = settle_amount(state, settle.job, settle.gpu_s)
        if settle.amount != want:
            return f"a paid settle releases {want} ucr to the executor"
        return ""
    if settle.amount != 0:  # refunded
        return "a refund releases nothing to the executor"
    if settle.receipt is not None:
        if not verifier:
            return "only a trusted verifier of the class refunds a job that has a receipt"
        if settle.receipt != info.receipt:
            return "the refund names another receipt than the job's"
        return ""
    if author != info.author:
        return "only the payer refunds a job without a receipt"
    if info.receipt is not None:
        return "the job has a receipt: it is settled by it"
    if time_ms <= info.job.expires_ms:
        return "the job has not expired yet"
    return ""


def _check_reveal(state: State, author: bytes, info: JobInfo, settle: Settle) -> str:
    if author != info.author:
        return "only the payer reveals its job's secret"
    if info.job.check_hash is None or info.revealed is not None:
        return "the job has no unrevealed check secret"
    if info.receipt is None or settle.receipt != info.receipt or settle.payment != info.payment:
        return "the secret is revealed only after the receipt, naming it and its payment"
    if settle.amount != 0 or settle.gpu_s is not None:
        return "a reveal moves nothing"
    if settle.reveal is None or not check_secret(info.job, settle.reveal):
        return "the revealed secret does not hash to the job's check_hash"
    return ""


def apply_settle(state: State, entry_id: bytes, settle: Settle) -> None:
    info = state.jobs[settle.job]
    if settle.reveal is not None and info.revealed is None:  # check_settle checked it against check_hash
        info.revealed = settle.reveal  # checked: a reveal, or a paid settle that carried the secret
    if settle.outcome == "reveal":
        return
    info.settle = entry_id
    if settle.outcome == "cancelled":
        info.status = "cancelled"
        return
    assert info.payment is not None  # check_settle passed
    escrow = state.escrows[info.payment]
    escrow.settle = entry_id
    to_executor, refund = (settle.amount, escrow.amount - settle.amount)
    held = state.held[escrow.payer] - escrow.amount
    if held:
        state.held[escrow.payer] = held
    else:
        del state.held[escrow.payer]
    if to_executor:
        state.outputs[(entry_id, escrow.executor)] = to_executor
        credits.credit(state, escrow.executor, to_executor)
    if refund:
        state.outputs[(entry_id, escrow.payer)] = refund
        credits.credit(state, escrow.payer, refund)
    rep = state.reputation.setdefault(escrow.executor, Reputation())
    if settle.outcome == "paid":
        info.status = "settled"
        rep.paid += 1
        if info.receipt is not None:
            rep.gpu_ms += math.ceil(Fraction(state.receipts[info.receipt].gpu_s) * 1000)
    else:
        info.status = "refunded"
        rep.refunded += 1
