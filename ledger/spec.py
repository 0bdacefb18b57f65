"""The swarm spec (genesis): a signed document whose hash is the swarm id.

It pins what every node must agree on before any entry means anything: the harness and data,
the metric and its direction, the baseline, the platform classes, who may mint (trusted
verifiers and quorum) and the credit policy. Nodes refuse entries of any other swarm.
"""
from __future__ import annotations

import hashlib
import typing
from dataclasses import dataclass, field
from typing import ClassVar

from ledger import codec
from ledger.bodies import COMMIT_BYTES, HASH_BYTES, KEY_BYTES, MAX_ROUND_INDEX, Body
from ledger.errors import InvalidEntry, InvalidSignature, InvalidSpec
from ledger.keys import SIGNATURE_BYTES, Identity, verify_signature

DOMAIN = b"autoswarm/spec/v1\x00"
MAX_SPEC_BYTES = 16 * 1024
_HEADER_BYTES = KEY_BYTES + SIGNATURE_BYTES
DEFAULT_ASSIGNED = 3  # keys whose replays count for a claim (ledger/assign.py)


@dataclass(frozen=True, slots=True)
class SwarmSpec(Body):
    kind: ClassVar[str] = "spec"
    name: str
    creator: bytes
    created_ms: int
    harness_hash: bytes
    dataset_hash: bytes
    tokenizer_hash: bytes
    time_budget_s: int
    metric: str
    direction: str                 # "min": lower is better
    baseline_commit: bytes
    allowed_files: list[str]       # the only paths a claim's commit may change
    platform_classes: list[str]
    verifiers: list[bytes]         # trusted verifier keys; the creator may admit more
    quorum: int                    # agreeing trusted verifications that make a claim verified
    noise_bpb: dict[str, float]    # per class: tolerance between verifiers and record margin
    record_ucr_per_bpb: int        # credits minted per 1.0 of val_bpb improvement, shared by the quorum
    verify_ucr: int                # credits a verifier mints for one verification run
    # Earned trust (ledger/facts.py); optional, older specs decode with these defaults.
    trust_replays: int = 5         # agreeing replays beside the anchors' that make a key trusted; 0: never
    # per class: how far a replay may be from the anchors' decided value and still agree; default noise_bpb
    trust_tolerance_bpb: dict[str, float] = field(default_factory=dict)
    # Market (ledger/market.py): the share of jobs with a check_hash that a verifier must settle
    spot_check_per_mille: int = 100
    # Sealed assignment (ledger/assign.py): the trusted keys whose replays count for a claim; 0: every one
    assigned: int = DEFAULT_ASSIGNED
    # per class: the most steps a claim may report; more cannot fit the time budget there, so such a
    # claim is refused before anyone replays it (ledger/plausible.py). A missing class: no limit.
    max_steps: dict[str, int] = field(default_factory=dict)
    # Paired evidence (ledger/evidence.py): the most paired replays (training seeds) one claim gets
    # before its sequential test must decide, and the false-discovery level of records: LORD++ over
    # every paired test of a class in the fold's decision order keeps the expected share of records
    # that are no real gain at most this.
    max_rounds: int = 6
    record_fdr: float = 0.01
    # degrees of freedom the class's paired-noise estimate needs before a test may end as a win or
    # make a record (a small demo swarm may lower it; the estimate then rests more on the spec's noise)
    noise_dof: int = 16

    def __post_init__(self) -> None:
        self._text("name", self.name, 128)
        self._bytes("creator", self.creator, KEY_BYTES)
        for name in ("harness_hash", "dataset_hash", "tokenizer_hash"):
            self._bytes(name, getattr(self, name), HASH_BYTES)
        self._bytes("baseline_commit", self.baseline_commit, COMMIT_BYTES)
        if not 1 <= self.time_budget_s <= 24 * 3600:
            raise InvalidEntry("spec: time_budget_s must be 1 s to 24 h")
        if self.metric != "val_bpb" or self.direction != "min":
            raise InvalidEntry("spec: only the metric val_bpb, lower is better, is supported")
        if not self.allowed_files or any(not f or f.startswith("/") or ".." in f.split("/") for f in self.allowed_files):
            raise InvalidEntry("spec: allowed_files must be relative paths inside the repository")
        if not self.platform_classes:
            raise InvalidEntry("spec: at least one platform class")
        for name in self.platform_classes:
            self._name("platform class", name)
        if set(self.noise_bpb) != set(self.platform_classes):
            raise InvalidEntry("spec: noise_bpb must give one value per platform class")
        if any(v < 0 for v in self.noise_bpb.values()):
            raise InvalidEntry("spec: noise_bpb values must not be negative")
        for key in self.verifiers:
            self._bytes("verifier", key, KEY_BYTES)
        if len(set(self.verifiers)) != len(self.verifiers):
            raise InvalidEntry("spec: a verifier is listed twice")
        if not 1 <= self.quorum <= max(1, len(self.verifiers)):
            raise InvalidEntry("spec: quorum must be between 1 and the number of verifiers")
        self._nonneg("record_ucr_per_bpb", self.record_ucr_per_bpb)
        self._nonneg("verify_ucr", self.verify_ucr)
        self._nonneg("trust_replays", self.trust_replays)
        self._nonneg("assigned", self.assigned)
        if 0 < self.assigned < self.quorum:
            raise InvalidEntry("spec: assigned must be 0 (every trusted key) or at least the quorum")
        if not 0 <= self.spot_check_per_mille <= 1000:
            raise InvalidEntry("spec: spot_check_per_mille must be 0 to 1000")
        if not set(self.trust_tolerance_bpb) <= set(self.platform_classes):
            raise InvalidEntry("spec: trust_tolerance_bpb names a class the spec does not have")
        if any(v < 0 for v in self.trust_tolerance_bpb.values()):
            raise InvalidEntry("spec: trust_tolerance_bpb values must not be negative")
        if not set(self.max_steps) <= set(self.platform_classes):
            raise InvalidEntry("spec: max_steps names a class the spec does not have")
        if any(v < 1 for v in self.max_steps.values()):
            raise InvalidEntry("spec: max_steps values must be at least 1")
        if not 1 <= self.max_rounds <= MAX_ROUND_INDEX + 1:
            raise InvalidEntry(f"spec: max_rounds must be 1 to {MAX_ROUND_INDEX + 1}")
        self._nonneg("noise_dof", self.noise_dof)
        if not 0.0 < self.record_fdr < 1.0:
            raise InvalidEntry("spec: record_fdr must be between 0 and 1")


@dataclass(frozen=True, slots=True)
class SignedSpec:
    spec: SwarmSpec
    wire: bytes  # creator || signature || payload

    @property
    def swarm_id(self) -> bytes:
        return hashlib.sha256(self.wire[_HEADER_BYTES:]).digest()


def sign_spec(identity: Identity, spec: SwarmSpec) -> SignedSpec:
    if spec.creator != identity.public_key:
        raise InvalidSpec("the spec's creator must be the signing identity")
    payload = codec.encode(spec.to_map())
    if len(payload) > MAX_SPEC_BYTES:
        raise InvalidSpec(f"spec of {len(payload)} bytes exceeds {MAX_SPEC_BYTES}")
    return SignedSpec(spec, spec.creator + identity.sign(DOMAIN + payload) + payload)


def decode_spec(wire: bytes) -> SignedSpec:
    if type(wire) is not bytes or not _HEADER_BYTES < len(wire) <= _HEADER_BYTES + MAX_SPEC_BYTES:
        raise InvalidSpec("spec size out of range")
    payload = wire[_HEADER_BYTES:]
    try:
        verify_signature(wire[:KEY_BYTES], wire[KEY_BYTES:_HEADER_BYTES], DOMAIN + payload)
        decoded = SwarmSpec.from_map(codec.decode(payload, max_bytes=MAX_SPEC_BYTES))
    except InvalidSignature:
        raise InvalidSpec("spec signature does not verify") from None
    except InvalidEntry as exc:
        raise InvalidSpec(str(exc)) from None
    spec = typing.cast(SwarmSpec, decoded)
    if spec.creator != wire[:KEY_BYTES]:
        raise InvalidSpec("spec creator differs from the signing key")
    return SignedSpec(spec, wire)
