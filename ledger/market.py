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
check and settle. A payer's settle that names the job's receipt and carries the right secret
reveals it whatever becomes of that settle (the secret is public from then on).

One truth on every node: who wins a job is a function of the set of entries, never of their
arrival order. Settles of one job by different authors, and a receipt against the payer's refund
after expiry, meet in any order, so a settle is judged in two steps. First on its own: its job,
payment, receipt, author, amount, secret and expiry, all of which reference entries that precede
it (or, for trust, the fold's facts). Then against its rivals, by a fixed precedence:
- a valid receipt beats the payer's refund after expiry, whichever came first: a payer cannot
  take back the escrow of a job that ran while its receipt was in flight;
- among the closing settles of a job that are valid on their own, the one with the smallest
  `settle_key` wins: a trusted verifier's refund (its check failed: the payer keeps its money),
  then a verifier's paid settle (its own measured time), then the payer's paid settle, then the
  payer's refund after expiry; within one of these, the smaller amount to the executor, then the
  smaller entry id. Every other one gets the verdict BEATEN. An author's first paid settle of a
  job that is valid on its own is its only paid one, and its first refund its only refund (its
  feed orders them: ALREADY_SAID), so a job has at most two rivals per trusted verifier and two
  of its payer's, and the payer's refund after expiry never meets another.
When a settle (or a receipt) arrives that beats a settle the fold already applied, the fold notes
the loser in `state.displaced` and asks for a rebuild; `fold.rebuild` folds again with the losers
known (`state.losers`) until no entry beats an applied one, so it ends where a fold that met the
winner first would (one more pass per round of losers; a loser only ever stays one). Outputs of
a settle that lost are gone on every node, and a transfer that spent them is invalid on every
node: settle outputs are final only once no rival can come, so a payee that needs certainty
waits for the verifiers' checks.
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
# verdicts of a settle that is valid on its own but loses to a rival (see the module doc)
BEATEN = "another settle of the job takes precedence (ledger/market.py: settle_key)"
RECEIPT_BEATS_REFUND = "the job has a receipt: it is settled by it"
ALREADY_SAID = "this key already settled the job this way: its first such settle is its word"


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
    if info.receipt is not None:  # an earlier one in the executor's own feed: the same on every node
        return "the job already has a receipt"
    if receipt.gpu_s > info.job.max_gpu_s:
        return f"gpu_s {receipt.gpu_s} is over the job's max_gpu_s {info.job.max_gpu_s}"
    # no test against the job's settle: a receipt beats the payer's refund after expiry (module doc)
    return ""


def apply_receipt(state: State, entry_id: bytes, author: bytes, receipt: Receipt) -> None:
    info = state.jobs[receipt.job]
    if info.settle is not None:
        # only the payer's refund after expiry closes a paid job without a receipt; this receipt,
        # which came after it, beats it: fold again with the refund known to lose. The receipt is
        # kept, so that the settles naming it still meet their rivals in this pass
        _displace(state, info, RECEIPT_BEATS_REFUND)
    state.receipts[entry_id] = ReceiptInfo(author, receipt.job, receipt.payment, receipt.status, receipt.gpu_s)
    info.receipt = entry_id
    info.status = "ran"


# -- settle


def settle_key(payer: bytes, author: bytes, entry_id: bytes, settle: Settle) -> tuple[int, int, bytes]:
    """The precedence of a closing settle that is valid on its own: the smallest key of a job's wins.

    Ranks: 0 a verifier's refund (a failed check), 1 a verifier's paid settle, 2 the payer's paid
    settle, 3 the payer's refund after expiry (it never meets 0-2: they need a receipt, it needs
    none). Then the smaller amount to the executor, so a rival cannot raise the bill, then the id.
    """
    if settle.outcome == "refunded":
        rank = 0 if settle.receipt is not None else 3
    else:
        rank = 2 if author == payer else 1
    return rank, settle.amount, entry_id


def note_settle(state: State, author: bytes, settle: Settle, verdict: str) -> None:
    """What a settle leaves whatever its verdict: a payer's secret, published after the receipt
    (naming it), is public from then on, so the pick is too; and an author's first paid (or
    refunded) settle of a job that is valid on its own is its only one, so one key cannot make
    every node rebuild again and again by settling one job for ever smaller amounts."""
    info = state.jobs.get(settle.job)
    if info is None:
        return
    if settle.outcome in ("paid", "refunded") and verdict in ("", BEATEN, RECEIPT_BEATS_REFUND):
        info.words.add((author, settle.outcome))
    if (settle.reveal is None or info.revealed is not None or author != info.author
            or info.receipt is None or settle.receipt != info.receipt or settle.payment != info.payment):
        return
    if check_secret(info.job, settle.reveal):
        info.revealed = settle.reveal


def check_settle(state: State, entry_id: bytes, author: bytes, time_ms: int, settle: Settle) -> str:
    """"" if the settle counts, else why not: first on its own, then against its job's rivals."""
    info = state.jobs.get(settle.job)
    if info is None:
        return "the settle names no valid job"
    if settle.reveal is not None and not check_secret(info.job, settle.reveal):
        return "the revealed secret does not hash to the job's check_hash"
    if settle.outcome == "reveal":  # moves nothing: valid before or after any settle, no rival
        return _check_reveal(info, author, settle)
    if settle.outcome == "cancelled":
        return _check_cancel(info, author, settle)
    reason = _check_close(state, info, author, time_ms, settle)
    if reason:
        return reason
    if (author, settle.outcome) in info.words:  # an earlier settle in its own feed: the same on every node
        return ALREADY_SAID
    # Rivals last, so that a settle invalid on its own gets its own reason in every order.
    if settle.receipt is None and info.receipt is not None:
        return RECEIPT_BEATS_REFUND
    lost = state.losers.get(entry_id)
    if lost:  # an earlier pass of this rebuild saw an entry beat it
        return lost
    if info.settle_key is not None and info.settle_key < settle_key(info.author, author, entry_id, settle):
        return BEATEN
    return ""


def _check_cancel(info: JobInfo, author: bytes, settle: Settle) -> str:
    if author != info.author:
        return "only the job's author cancels it"
    if settle.payment is not None or settle.receipt is not None or settle.amount != 0:
        return "a cancel names no payment or receipt and moves nothing"
    if info.payment is not None:  # tested before the next: a closing settle implies a payment
        return "the job has a payment: it can no longer be cancelled"
    if info.settle is not None:  # an earlier cancel in the payer's own feed
        return "the job is already cancelled"
    return ""


def _check_close(state: State, info: JobInfo, author: bytes, time_ms: int, settle: Settle) -> str:
    """A paid or refunded settle on its own: everything it reads references entries before it."""
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
    if time_ms <= info.job.expires_ms:
        return "the job has not expired yet"
    return ""  # whether a receipt beats it is the rivals' test (check_settle)


def _check_reveal(info: JobInfo, author: bytes, settle: Settle) -> str:
    # no test of an earlier reveal: revealing twice moves nothing, and the verdict stays order-free
    if author != info.author:
        return "only the payer reveals its job's secret"
    if info.job.check_hash is None:
        return "the job has no check secret"
    if info.receipt is None or settle.receipt != info.receipt or settle.payment != info.payment:
        return "the secret is revealed only after the receipt, naming it and its payment"
    if settle.amount != 0 or settle.gpu_s is not None:
        return "a reveal moves nothing"
    if settle.reveal is None or not check_secret(info.job, settle.reveal):
        return "the revealed secret does not hash to the job's check_hash"
    return ""


def apply_settle(state: State, entry_id: bytes, author: bytes, settle: Settle) -> None:
    """Applies a settle check_settle passed; the secret it may carry is note_settle's."""
    if settle.outcome == "reveal":
        return
    info = state.jobs[settle.job]
    if info.settle is not None:
        # check_settle passed, so this one beats the settle applied before it: fold again. It
        # stands in as the best so far, so that the rivals after it in this pass meet it (one
        # rebuild finds every loser of the job); the money moves in the rebuild
        _displace(state, info, BEATEN)
        info.settle, info.settle_key = entry_id, settle_key(info.author, author, entry_id, settle)
        return
    info.settle = entry_id
    if settle.outcome == "cancelled":
        info.status = "cancelled"
        return
    info.settle_key = settle_key(info.author, author, entry_id, settle)
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


def _displace(state: State, info: JobInfo, reason: str) -> None:
    """The job's applied settle loses to an entry that came after it: the state from here on is
    not the set's, so the fold rebuilds, and the rebuild judges the loser with `reason` up front."""
    if info.settle is None or info.settle_key is None:  # never: only a closing settle has rivals
        return  # (and only a closing settle reads `losers`, so a rebuild always ends)
    state.displaced[info.settle] = RECEIPT_BEATS_REFUND if info.settle_key[0] == 3 else reason
    state.needs_rebuild = True


def losers_of(state: State) -> dict[bytes, str]:
    """What a fold pass that displaced a settle learnt, for the next (see the module doc): the
    settles displaced, and those it judged beaten by a rival, which stay beaten in every later
    pass that finds them valid on their own (their rival is then valid on its own too)."""
    found = {eid: reason for eid, reason in state.verdicts.items() if reason in (BEATEN, RECEIPT_BEATS_REFUND)}
    found.update(state.displaced)
    return found
