"""Typed, self-validating bodies: one frozen dataclass per entry kind.

A body travels as a msgpack map whose keys are exactly the dataclass's field names; the decoding
and the checks every body shares are ledger/bodybase.py. Amounts are integer micro-credits (ucr);
1 credit = 1_000_000 ucr.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ledger.bodybase import (CLAIM_STATUSES, COMMIT_BYTES, HASH_BYTES, JOB_TYPES, KEY_BYTES, MAX_LIST, MAX_SHORT_TEXT,
                             MAX_TEXT, MINT_REASONS, SETTLE_OUTCOMES, UCR_PER_CREDIT, Body, _fail)

__all__ = ["CLAIM_STATUSES", "COMMIT_BYTES", "HASH_BYTES", "JOB_TYPES", "KEY_BYTES", "MAX_LIST", "MAX_SHORT_TEXT",
           "MAX_TEXT", "MINT_REASONS", "SETTLE_OUTCOMES", "UCR_PER_CREDIT", "Body"]


@dataclass(frozen=True, slots=True)
class Profile(Body):
    kind: ClassVar[str] = "profile"
    platform_class: str  # e.g. "h100-80g", "cpu-tiny"
    gpu: str
    gpu_memory_mb: int
    driver: str
    torch: str
    cpu: str

    def __post_init__(self) -> None:
        self._name("platform_class", self.platform_class)
        for name in ("gpu", "driver", "torch", "cpu"):
            self._text(name, getattr(self, name), MAX_SHORT_TEXT)
        self._nonneg("gpu_memory_mb", self.gpu_memory_mb)


@dataclass(frozen=True, slots=True)
class Claim(Body):
    """An experiment's result as its author measured it; failures and discards included."""

    kind: ClassVar[str] = "claim"
    commit: bytes            # git commit of the candidate
    parent: bytes | None     # None only for the swarm's baseline
    platform_class: str
    status: str
    val_bpb: float | None    # None unless the run finished
    num_steps: int
    planned_steps: int       # the schedule's horizon: a replay of num_steps with it repeats the run
    seed: int
    training_s: float
    wall_s: float
    peak_vram_mb: float
    loss_curve: list[float]
    diff_summary: str
    message: str
    bundle: bytes | None     # sha256 of the git bundle that carries the commit

    def __post_init__(self) -> None:
        self._bytes("commit", self.commit, COMMIT_BYTES)
        self._bytes("parent", self.parent, COMMIT_BYTES)
        self._bytes("bundle", self.bundle, HASH_BYTES)
        self._name("platform_class", self.platform_class)
        if self.status not in CLAIM_STATUSES:
            _fail(type(self), f"status {self.status!r} not one of {sorted(CLAIM_STATUSES)}")
        if (self.status == "ok") != (self.val_bpb is not None):
            _fail(type(self), "val_bpb is given exactly when status is ok")
        if self.val_bpb is not None and self.val_bpb <= 0:
            _fail(type(self), "val_bpb must be positive")
        for name in ("num_steps", "planned_steps", "seed", "training_s", "wall_s", "peak_vram_mb"):
            self._nonneg(name, getattr(self, name))
        self._text("message", self.message, 1024)


MAX_ROUND_INDEX = 255  # paired replays one verifier may publish of one claim: far above any spec's bound


@dataclass(frozen=True, slots=True)
class Verify(Body):
    """A verifier's own re-run of a claim; its number, not the claimant's, is canonical."""

    kind: ClassVar[str] = "verify"
    claim: bytes             # entry id of the claim
    commit: bytes
    platform_class: str
    status: str
    val_bpb: float | None
    num_steps: int
    seed: int
    training_s: float
    # sha256 commitment to the replay's evaluation outputs (trainer/outputs.py): makes a disagreement
    # between two verifies provable from the entries (ledger/outputs.py). None: a failed replay, or
    # a verify signed before the field existed.
    outputs: bytes | None = None
    # Paired evidence (issue 13): the replay trains with the seed ledger/assign.py's
    # `replay_train_seed` draws for (claim, verifier, round_index), which the claimant could not
    # know when it signed, and `parent_val_bpb` is the claim's parent trained on that same seed and
    # scored on the same rows. None: an unpaired replay (a verify signed before the fields existed).
    round_index: int = 0
    parent_val_bpb: float | None = None

    def __post_init__(self) -> None:
        self._bytes("claim", self.claim, HASH_BYTES)
        self._bytes("commit", self.commit, COMMIT_BYTES)
        self._bytes("outputs", self.outputs, HASH_BYTES)
        self._name("platform_class", self.platform_class)
        if self.status not in CLAIM_STATUSES:
            _fail(type(self), f"status {self.status!r} not one of {sorted(CLAIM_STATUSES)}")
        if (self.status == "ok") != (self.val_bpb is not None):
            _fail(type(self), "val_bpb is given exactly when status is ok")
        if self.outputs is not None and self.status != "ok":
            _fail(type(self), "only an ok replay commits to its outputs")
        self._nonneg("num_steps", self.num_steps)
        self._nonneg("training_s", self.training_s)
        self._nonneg("round_index", self.round_index)
        if self.round_index > MAX_ROUND_INDEX:
            _fail(type(self), f"round_index {self.round_index} over {MAX_ROUND_INDEX}")
        if self.parent_val_bpb is not None and self.status != "ok":
            _fail(type(self), "only an ok replay carries its parent's paired value")

    def refs(self) -> tuple[bytes, ...]:
        return (self.claim,)


@dataclass(frozen=True, slots=True)
class Mint(Body):
    """New credits, minted only by a trusted verifier for a reason the swarm's policy allows.

    record: `subject` is the claim, `quorum` the verify entries that agree on it, `value` their
    median, `prev_best` the best value this verifier had minted for in the class before (None
    for the first), `to` the claim's author. verification: `subject` is the minter's own verify
    entry and `to` the minter.
    """

    kind: ClassVar[str] = "mint"
    reason: str
    subject: bytes
    quorum: list[bytes]
    to: bytes
    amount: int
    value: float | None
    prev_best: float | None

    def __post_init__(self) -> None:
        if self.reason not in MINT_REASONS:
            _fail(type(self), f"reason {self.reason!r} not one of {sorted(MINT_REASONS)}")
        self._bytes("subject", self.subject, HASH_BYTES)
        self._bytes("to", self.to, KEY_BYTES)
        for ref in self.quorum:
            self._bytes("quorum item", ref, HASH_BYTES)
        if len(set(self.quorum)) != len(self.quorum):
            _fail(type(self), "quorum lists an entry twice")
        self._nonneg("amount", self.amount)
        if self.reason == "verification" and (self.quorum or self.value is not None or self.prev_best is not None):
            _fail(type(self), "a verification mint carries no quorum, value or prev_best")
        if self.reason == "record" and self.value is None:
            _fail(type(self), "a record mint carries the measured value")

    def refs(self) -> tuple[bytes, ...]:
        return (self.subject, *self.quorum)


@dataclass(frozen=True, slots=True)
class Transfer(Body):
    """Pays `amount` to `to` from the payer's outputs in `spends`; the rest is change to the payer.

    With `job` and `offer` both set it is an escrow payment accepting `offer` for `job`: the
    amount is held until a Settle releases it (see ledger/market.py). `job` alone is a memo link.
    """

    kind: ClassVar[str] = "transfer"
    to: bytes
    amount: int
    spends: list[bytes]      # entry ids whose outputs to the payer this transfer consumes
    memo: str
    job: bytes | None
    offer: bytes | None      # set (with job): an escrow payment accepting this offer

    def __post_init__(self) -> None:
        self._bytes("to", self.to, KEY_BYTES)
        self._bytes("job", self.job, HASH_BYTES)
        self._bytes("offer", self.offer, HASH_BYTES)
        if self.offer is not None and self.job is None:
            _fail(type(self), "an offer is accepted only for a job")
        if self.amount <= 0:
            _fail(type(self), "amount must be positive")
        if not 1 <= len(self.spends) <= 64:
            _fail(type(self), "spends names 1 to 64 entries")
        if len(set(self.spends)) != len(self.spends):
            _fail(type(self), "spends names an entry twice")
        for ref in self.spends:
            self._bytes("spends item", ref, HASH_BYTES)
        self._text("memo", self.memo, MAX_SHORT_TEXT)

    def refs(self) -> tuple[bytes, ...]:
        links = tuple(ref for ref in (self.job, self.offer) if ref is not None)
        return (*self.spends, *links)


@dataclass(frozen=True, slots=True)
class Job(Body):
    kind: ClassVar[str] = "job"
    job_type: str            # what the executor may run, e.g. "train"
    commit: bytes
    bundle: bytes | None
    args: list[str]
    platform_class: str
    max_gpu_s: int
    price_ucr_per_gpu_s: int
    expires_ms: int
    # sha256 of a secret the payer reveals only after the receipt: it picks the spot check
    # (ledger/market.py), so the executor cannot know or steer whether its run is replayed
    check_hash: bytes | None = None

    def __post_init__(self) -> None:
        self._bytes("check_hash", self.check_hash, HASH_BYTES)
        self._name("job_type", self.job_type)
        if self.job_type not in JOB_TYPES:
            _fail(type(self), f"job_type {self.job_type!r} not one of {sorted(JOB_TYPES)}")
        self._bytes("commit", self.commit, COMMIT_BYTES)
        self._bytes("bundle", self.bundle, HASH_BYTES)
        self._name("platform_class", self.platform_class)
        if len(self.args) > 32 or any(len(a) > MAX_SHORT_TEXT for a in self.args):
            _fail(type(self), f"at most 32 args of {MAX_SHORT_TEXT} characters")
        if self.max_gpu_s <= 0:
            _fail(type(self), "max_gpu_s must be positive")
        if self.price_ucr_per_gpu_s < 1:
            _fail(type(self), "price_ucr_per_gpu_s must be at least 1")
        self._nonneg("expires_ms", self.expires_ms)


@dataclass(frozen=True, slots=True)
class Offer(Body):
    kind: ClassVar[str] = "offer"
    job: bytes
    price_ucr_per_gpu_s: int
    expires_ms: int

    def __post_init__(self) -> None:
        self._bytes("job", self.job, HASH_BYTES)
        self._nonneg("price_ucr_per_gpu_s", self.price_ucr_per_gpu_s)
        self._nonneg("expires_ms", self.expires_ms)

    def refs(self) -> tuple[bytes, ...]:
        return (self.job,)


@dataclass(frozen=True, slots=True)
class Receipt(Body):
    """The executor's signed account of a job it ran for the escrow payment `payment`."""

    kind: ClassVar[str] = "receipt"
    job: bytes
    offer: bytes
    payment: bytes           # entry id of the escrow transfer
    status: str
    gpu_s: float
    metrics: dict[str, float]
    artifacts: list[bytes]   # sha256 of small outputs, fetched by hash
    log_tail: str

    def __post_init__(self) -> None:
        self._bytes("job", self.job, HASH_BYTES)
        self._bytes("offer", self.offer, HASH_BYTES)
        self._bytes("payment", self.payment, HASH_BYTES)
        if self.status not in CLAIM_STATUSES:
            _fail(type(self), f"status {self.status!r} not one of {sorted(CLAIM_STATUSES)}")
        self._nonneg("gpu_s", self.gpu_s)
        for ref in self.artifacts:
            self._bytes("artifacts item", ref, HASH_BYTES)
        self._text("log_tail", self.log_tail, 4096)

    def refs(self) -> tuple[bytes, ...]:
        return (self.job, self.offer, self.payment)


@dataclass(frozen=True, slots=True)
class Settle(Body):
    """Closes a job: pays the executor for what it used, refunds the payer, or cancels the job.

    `amount` is what the executor gets (0 unless paid); the rest of the escrow goes back to the
    payer. Who may settle which way is ledger/market.py's to judge. Outcome `reveal` closes
    nothing: the payer publishes its job's check secret after the receipt. A verifier's spot
    check states the GPU-seconds its own replay took in `gpu_s`, which caps what it releases.
    """

    kind: ClassVar[str] = "settle"
    job: bytes
    payment: bytes | None    # the job's escrow transfer; None only for cancelled
    receipt: bytes | None    # the job's receipt; None for cancelled and for a refund after expiry
    outcome: str
    amount: int
    reason: str
    reveal: bytes | None = None   # the secret whose sha256 is the job's check_hash
    gpu_s: float | None = None    # a spot check's own measured GPU-seconds

    def __post_init__(self) -> None:
        self._bytes("job", self.job, HASH_BYTES)
        self._bytes("payment", self.payment, HASH_BYTES)
        self._bytes("receipt", self.receipt, HASH_BYTES)
        self._bytes("reveal", self.reveal, HASH_BYTES)
        if self.gpu_s is not None:
            self._nonneg("gpu_s", self.gpu_s)
        if self.outcome not in SETTLE_OUTCOMES:
            _fail(type(self), f"outcome {self.outcome!r} not one of {sorted(SETTLE_OUTCOMES)}")
        self._nonneg("amount", self.amount)
        if self.receipt is not None and self.payment is None:
            _fail(type(self), "a receipt is settled only with its payment")
        self._text("reason", self.reason, 1024)

    def refs(self) -> tuple[bytes, ...]:
        return (self.job, *(ref for ref in (self.payment, self.receipt) if ref is not None))


@dataclass(frozen=True, slots=True)
class Post(Body):
    kind: ClassVar[str] = "post"
    channel: str
    text: str
    reply_to: bytes | None

    def __post_init__(self) -> None:
        self._name("channel", self.channel)
        self._bytes("reply_to", self.reply_to, HASH_BYTES)


@dataclass(frozen=True, slots=True)
class Hypothesis(Body):
    kind: ClassVar[str] = "hypothesis"
    text: str
    tags: list[str]

    def __post_init__(self) -> None:
        for tag in self.tags:
            self._name("tag", tag)


@dataclass(frozen=True, slots=True)
class Insight(Body):
    kind: ClassVar[str] = "insight"
    text: str
    sources: list[bytes]     # entry ids it draws on; not dependencies, they may never arrive

    def __post_init__(self) -> None:
        for ref in self.sources:
            self._bytes("sources item", ref, HASH_BYTES)


@dataclass(frozen=True, slots=True)
class Fraud(Body):
    """Two signed entries of one author at one seq: a fork proof that anyone can check alone."""

    kind: ClassVar[str] = "fraud"
    first: bytes   # wire bytes of one entry
    second: bytes  # wire bytes of the other

    def __post_init__(self) -> None:
        if self.first == self.second:
            _fail(type(self), "the two entries are the same bytes")


@dataclass(frozen=True, slots=True)
class Admit(Body):
    """The swarm's creator admits a new trusted verifier for some platform classes."""

    kind: ClassVar[str] = "admit"
    verifier: bytes
    platform_classes: list[str]

    def __post_init__(self) -> None:
        self._bytes("verifier", self.verifier, KEY_BYTES)
        for name in self.platform_classes:
            self._name("platform class", name)


MAX_SEAL_CLAIMS = 256


@dataclass(frozen=True, slots=True)
class Seal(Body):
    """An anchor fixes which verifiers count for these claims (ledger/assign.py): the claim's seal
    is the smallest id among valid seals that list it, a value its author could not know when it
    signed. Only an anchor's seal counts; anyone else's is judged invalid."""

    kind: ClassVar[str] = "seal"
    claims: list[bytes]      # claim entry ids, 1 to MAX_SEAL_CLAIMS, no duplicates

    def __post_init__(self) -> None:
        if not 1 <= len(self.claims) <= MAX_SEAL_CLAIMS:
            _fail(type(self), f"claims names 1 to {MAX_SEAL_CLAIMS} entries")
        if len(set(self.claims)) != len(self.claims):
            _fail(type(self), "claims names an entry twice")
        for ref in self.claims:
            self._bytes("claims item", ref, HASH_BYTES)

    def refs(self) -> tuple[bytes, ...]:
        return tuple(self.claims)


BODY_TYPES: dict[str, type[Body]] = {
    cls.kind: cls
    for cls in (
        Profile, Claim, Verify, Mint, Transfer, Job, Offer, Receipt, Settle, Post, Hypothesis, Insight, Fraud, Admit,
        Seal,
    )
}
KINDS = frozenset(BODY_TYPES)
