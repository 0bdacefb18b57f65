"""The fold's state and its derived tables as plain data: no rules, no IO.

ledger/fold.py advances a `State` entry by entry; ledger/credits.py and ledger/market.py hold the
rules that read and change it. They all import this module and it imports none of them, so the
package has no import circle.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ledger.bodies import Job
from ledger.spec import SwarmSpec

@dataclass(slots=True)
class JobInfo:
    author: bytes                 # the payer
    time_ms: int
    job: Job
    status: str = "open"          # one of JOB_STATUSES
    offers: list[bytes] = field(default_factory=list)  # offer ids in arrival order
    payment: bytes | None = None  # the escrow transfer that accepted an offer
    receipt: bytes | None = None  # the executor's valid receipt
    settle: bytes | None = None   # the one valid settle: the cancel, or the winner among rivals
    settle_key: tuple[int, int, bytes] | None = None  # the winner's market.settle_key; None for a cancel
    revealed: bytes | None = None  # the payer's check secret, once in a payer's settle naming the receipt
    # (author, "paid" or "refunded") of settles that were valid on their own: each author's first is its only one
    words: set[tuple[bytes, str]] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class OfferInfo:
    author: bytes                 # the executor
    time_ms: int
    job: bytes
    price_ucr_per_gpu_s: int
    expires_ms: int


@dataclass(slots=True)
class EscrowInfo:
    payer: bytes
    executor: bytes
    job: bytes
    offer: bytes
    amount: int                   # ucr held
    settle: bytes | None = None   # set once released


@dataclass(frozen=True, slots=True)
class ReceiptInfo:
    author: bytes
    job: bytes
    payment: bytes
    status: str
    gpu_s: float


@dataclass(slots=True)
class Reputation:
    paid: int = 0
    refunded: int = 0
    gpu_ms: int = 0  # GPU-milliseconds of paid jobs, rounded up: an integer sum, so any arrival order agrees

    @property
    def gpu_s(self) -> float:
        return self.gpu_ms / 1000


@dataclass(frozen=True, slots=True)
class RecordRow:
    """One step on a platform class's path to SOTA."""

    platform_class: str
    n: int             # 1, 2, ... within the class
    claim: bytes       # entry id of the claim
    commit: bytes
    author: bytes
    value: float       # median of the agreeing verifications; for a paired record, the record before it minus its gain
    prev: float | None  # the best before it; None for the class's first verified claim
    # A paired record's statistics (ledger/evidence.py): estimated gain over `prev`, its 95% interval
    # and the paired replays (training seeds) behind it. Derived from the same decision as `value`,
    # so they take no part in comparing rows (the records table on disk holds the seven fields above).
    gain: float | None = field(default=None, compare=False)
    low: float | None = field(default=None, compare=False)
    high: float | None = field(default=None, compare=False)
    seeds: int = field(default=0, compare=False)


@dataclass(slots=True)
class Changes:
    """Derived rows to upsert after some applies; `replace_all` means: drop the tables first."""

    balances: dict[bytes, int] = field(default_factory=dict)
    frozen: dict[bytes, int] = field(default_factory=dict)
    records: list[RecordRow] = field(default_factory=list)
    verdicts: dict[bytes, str] = field(default_factory=dict)  # entry id -> "" (valid) or the reason
    replace_all: bool = False
    seals: dict[bytes, bytes] = field(default_factory=dict)   # claim id -> its seal's entry id


@dataclass(frozen=True, slots=True)
class Tables:
    """The derived tables as plain values: two folds agree iff their Tables are equal."""

    balances: dict[bytes, int]
    frozen: dict[bytes, int]
    records: list[RecordRow]
    verdicts: dict[bytes, str]
    seals: dict[bytes, bytes] = field(default_factory=dict)  # claim id -> its seal (ledger/assign.py)


@dataclass(frozen=True, slots=True)
class ClaimInfo:
    author: bytes
    seq: int
    time_ms: int
    commit: bytes
    platform_class: str
    claimed: float | None
    parent: bytes | None = None  # the parent commit; None for a baseline run


@dataclass(frozen=True, slots=True)
class VerifyInfo:
    author: bytes
    claim: bytes
    platform_class: str
    value: float | None  # None: the re-run failed
    commit: bytes = b""
    seq: int = 0
    time_ms: int = 0
    round_index: int = 0
    parent_value: float | None = None  # the parent's val_bpb on the same seed; None: an unpaired replay

    @property
    def paired(self) -> bool:
        return self.parent_value is not None and self.value is not None


@dataclass(frozen=True, slots=True)
class Decision:
    """What a claim's quorum of trusted replays decided (ledger/facts.py), or its paired test
    (ledger/evidence.py)."""

    status: str                  # "verified" or "refuted"
    value: float                 # the agreeing replays' median; a paired test: the candidate's mean
    quorum: tuple[bytes, ...]    # verify ids of the agreeing replays that decided it (paired: rounds 0..n-1)
    key: tuple[int, bytes]       # (time, verify id) of the replay that completed it: the record order


@dataclass(frozen=True, slots=True)
class PairedTest:
    """A claim's paired evidence where its sequential test stopped (ledger/evidence.py)."""

    diffs: tuple[float, ...]   # parent - candidate, rounds 0..n-1 in round order (> 0: a gain)
    sd_bpb: float              # the class's paired-difference sd estimate at the stop
    dof: int                   # the degrees of freedom behind it (the spec's seed included)
    outcome: str               # "win", "loss", "exhausted" or "refuted"


@dataclass(slots=True)
class Welford:
    """Running count, mean and sum of squared deviations (Welford's update)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> float:
        """Adds x; returns how much m2 grew."""
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        grew = delta * (x - self.mean)
        self.m2 += grew
        return grew


@dataclass(slots=True)
class Stream:
    """A class's counted paired replays walked in canonical order (ledger/evidence.py)."""

    last: tuple[tuple[int, bytes], bytes] | None = None  # the last (order key, verify id) walked
    rounds: dict[bytes, dict[int, tuple[tuple[int, bytes], bytes]]] = field(default_factory=dict)
    consumed: dict[bytes, int] = field(default_factory=dict)      # claim -> rounds read in round order
    diffs: dict[bytes, Welford] = field(default_factory=dict)     # claim -> paired differences
    values: dict[bytes, Welford] = field(default_factory=dict)    # claim -> candidate values
    diff_list: dict[bytes, list[float]] = field(default_factory=dict)
    ss_diff: float = 0.0
    dof_diff: int = 0
    ss_value: float = 0.0
    dof_value: int = 0
    tests: dict[bytes, PairedTest] = field(default_factory=dict)  # claims whose test stopped
    waiting: set[bytes] = field(default_factory=set)  # claims at max rounds before the noise estimate came of age
    judged: set[bytes] = field(default_factory=set)   # claims decided since the fold last looked (ledger/facts.py)
    decisions: dict[bytes, Decision] = field(default_factory=dict)


@dataclass(slots=True)
class State:
    spec: SwarmSpec
    swarm_id: bytes
    # trusted verifiers per class, anchored or earned (ledger/facts.py); spec verifiers: every class
    verifiers: dict[bytes, frozenset[str]]
    anchors: dict[bytes, frozenset[str]]  # spec verifiers and admitted keys: trusted by hand
    claims: dict[bytes, ClaimInfo] = field(default_factory=dict)
    verifies: dict[bytes, VerifyInfo] = field(default_factory=dict)
    verifies_of: dict[bytes, list[bytes]] = field(default_factory=dict)  # claim id -> each key's first ok replay
    verified_by: dict[bytes, set[bytes]] = field(default_factory=dict)   # key -> claims it replayed
    replayed_ok: set[tuple[bytes, bytes]] = field(default_factory=set)  # (key, claim): has a counted replay
    anchor_decisions: dict[bytes, Decision] = field(default_factory=dict)  # by anchors' replays alone
    votes: dict[tuple[bytes, bytes], int] = field(default_factory=dict)  # (key, claim) -> +1 agrees, -1 not
    vote_counts: dict[tuple[bytes, str], tuple[int, int]] = field(default_factory=dict)  # (key, class) -> totals
    decisions: dict[bytes, Decision] = field(default_factory=dict)       # by all trusted replays
    # class -> its verified claims as (decision key, claim id), sorted: the order records are walked in
    verified_order: dict[str, list[tuple[tuple[int, bytes], bytes]]] = field(default_factory=dict)
    # claim id -> trusted verifier -> measured value: the replays its decision read (all, while open)
    measured: dict[bytes, dict[bytes, float]] = field(default_factory=dict)
    verified: dict[bytes, float] = field(default_factory=dict)  # claim id -> agreed median
    # claim id -> agreed median that differs from the claimed value by more than the noise: the
    # claim's numbers do not reproduce, so it is never verified, never a record, never paid
    refuted: dict[bytes, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)         # class -> best verified value
    records: list[RecordRow] = field(default_factory=list)  # every class's, in decision order
    record_of: dict[bytes, RecordRow] = field(default_factory=dict)  # claim id -> its record row
    # credit rules (see ledger/credits.py)
    outputs: dict[tuple[bytes, bytes], int] = field(default_factory=dict)  # (entry, owner) -> unspent ucr
    spent: set[tuple[bytes, bytes]] = field(default_factory=set)
    balances: dict[bytes, int] = field(default_factory=dict)
    minted: set[tuple[bytes, bytes]] = field(default_factory=set)          # (verifier, subject)
    fees: set[tuple[bytes, bytes]] = field(default_factory=set)            # (verifier, claim) paid a fee
    # (verifier, class) -> value of its last record mint; kept for readers, no rule uses it any more
    verifier_best: dict[tuple[bytes, str], float] = field(default_factory=dict)
    total_minted_ucr: int = 0
    # market rules (see ledger/market.py)
    jobs: dict[bytes, JobInfo] = field(default_factory=dict)
    offers: dict[bytes, OfferInfo] = field(default_factory=dict)
    escrows: dict[bytes, EscrowInfo] = field(default_factory=dict)  # escrow transfer id -> hold
    receipts: dict[bytes, ReceiptInfo] = field(default_factory=dict)
    held: dict[bytes, int] = field(default_factory=dict)                   # payer -> ucr in open escrows
    reputation: dict[bytes, Reputation] = field(default_factory=dict)  # executor -> record
    # settle id -> verdict, for settles an entry beat after the fold had applied them: the fold
    # then rebuilds, and the rebuild folds again with them in `losers` (ledger/market.py)
    displaced: dict[bytes, str] = field(default_factory=dict)
    losers: dict[bytes, str] = field(default_factory=dict)
    frozen: dict[bytes, int] = field(default_factory=dict)                 # author -> forked seq
    verdicts: dict[bytes, str] = field(default_factory=dict)
    effect_seq: dict[bytes, int] = field(default_factory=dict)  # author -> last seq that changed state or got a verdict
    # facts that judged entries read: when one of them moves afterwards, the fold rebuilds
    mint_claims: dict[bytes, set[bytes]] = field(default_factory=dict)  # claim -> authors of its record mints
    judged_authors: set[bytes] = field(default_factory=set)   # authors of judged mints and settles
    # sealed assignment (ledger/assign.py)
    seals: dict[bytes, bytes] = field(default_factory=dict)   # claim id -> smallest valid seal id naming it
    # author -> (seal id, claims) of seals it published before it was an anchor: they count once it is one
    waiting_seals: dict[bytes, list[tuple[bytes, tuple[bytes, ...]]]] = field(default_factory=dict)
    assigned: dict[bytes, list[tuple[bytes, bytes]]] = field(default_factory=dict)  # claim -> sorted (rank, key)
    assigned_to: dict[bytes, set[bytes]] = field(default_factory=dict)  # key -> claims it is assigned to
    sealed_in: dict[str, set[bytes]] = field(default_factory=dict)      # class -> its sealed claims
    fee_claims: dict[bytes, set[bytes]] = field(default_factory=dict)   # claim -> authors of its fee mints
    # paired evidence (ledger/evidence.py)
    paired_of: dict[bytes, list[bytes]] = field(default_factory=dict)   # claim -> its ok paired verifies
    paired_in: dict[str, set[bytes]] = field(default_factory=dict)      # class -> claims with paired verifies
    streams: dict[str, Stream] = field(default_factory=dict)            # class -> its walked paired replays
    # class -> (tests so far, indexes of the tests that made records): the false-discovery walk
    lord: dict[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)
    needs_rebuild: bool = False
    changes: Changes = field(default_factory=Changes)
