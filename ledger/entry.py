"""Entries: the signed unit of the ledger, and their one wire form.

    wire    = author (32) || signature (64) || payload
    payload = canonical msgpack [VERSION, swarm, author, seq, prev, kind, body, time_ms]
    id      = sha256(payload)
    signed  = DOMAIN || payload

The author comes first on the wire so the signature is checked over the bytes exactly as
received before anything is decoded. The payload carries swarm id and kind, and the domain tag
separates entries from every other thing a node signs (specs, handshakes, checkpoints), so no
signature can be replayed as another kind, in another swarm or as another protocol message.
The id covers the payload, not the signature: one content has one id whatever its signature.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ledger import codec
from ledger.bodies import BODY_TYPES, HASH_BYTES, KEY_BYTES, Body, Fraud
from ledger.errors import InvalidEntry
from ledger.keys import SIGNATURE_BYTES, Identity, verify_signature

VERSION = 1
DOMAIN = b"autoswarm/entry/v1\x00"
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_FRAUD_PAYLOAD_BYTES = 4 * MAX_PAYLOAD_BYTES  # carries two entries; a fork of frauds still fits
MAX_WIRE_BYTES = KEY_BYTES + SIGNATURE_BYTES + MAX_FRAUD_PAYLOAD_BYTES
_HEADER_BYTES = KEY_BYTES + SIGNATURE_BYTES
MAX_SEQ = (1 << 63) - 1


def entry_hash(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


@dataclass(frozen=True, slots=True)
class Entry:
    swarm: bytes
    author: bytes
    seq: int
    prev: bytes | None  # id of the author's entry at seq - 1; None exactly at seq 1
    body: Body
    time_ms: int
    wire: bytes         # the signed bytes as sent and stored
    id: bytes

    @property
    def kind(self) -> str:
        return self.body.kind

    @property
    def payload(self) -> bytes:
        return self.wire[_HEADER_BYTES:]

    @property
    def signature(self) -> bytes:
        return self.wire[KEY_BYTES:_HEADER_BYTES]

    def deps(self) -> tuple[bytes, ...]:
        """Entry ids that must be in the ledger before this one: feed predecessor, then body refs."""
        return ((self.prev,) if self.prev is not None else ()) + self.body.refs()


def _check_header(swarm: Any, author: Any, seq: Any, prev: Any, time_ms: Any) -> None:
    if type(swarm) is not bytes or len(swarm) != HASH_BYTES:
        raise InvalidEntry("swarm must be 32 bytes")
    if type(author) is not bytes or len(author) != KEY_BYTES:
        raise InvalidEntry("author must be 32 bytes")
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise InvalidEntry(f"seq must be a positive integer, got {seq!r}")
    if seq == 1:
        if prev is not None:
            raise InvalidEntry("the first entry of a feed has no prev")
    elif type(prev) is not bytes or len(prev) != HASH_BYTES:
        raise InvalidEntry("prev must be the 32-byte id of the previous entry")
    if type(time_ms) is not int or not 0 <= time_ms < (1 << 53):
        raise InvalidEntry("time_ms must be a non-negative integer")


def sign_entry(
    identity: Identity, *, swarm: bytes, seq: int, prev: bytes | None, body: Body, time_ms: int
) -> Entry:
    author = identity.public_key
    _check_header(swarm, author, seq, prev, time_ms)
    payload = codec.encode([VERSION, swarm, author, seq, prev, body.kind, body.to_map(), time_ms])
    limit = MAX_FRAUD_PAYLOAD_BYTES if isinstance(body, Fraud) else MAX_PAYLOAD_BYTES
    if len(payload) > limit:
        raise InvalidEntry(f"{body.kind} payload of {len(payload)} bytes exceeds {limit}")
    wire = author + identity.sign(DOMAIN + payload) + payload
    return Entry(swarm, author, seq, prev, body, time_ms, wire, entry_hash(payload))


def check_signature(wire: bytes) -> None:
    """Raises InvalidEntry/InvalidSignature unless the wire bytes carry a valid signature."""
    if type(wire) is not bytes:
        raise InvalidEntry(f"expected bytes, got {type(wire).__name__}")
    if not _HEADER_BYTES < len(wire) <= MAX_WIRE_BYTES:
        raise InvalidEntry(f"an entry is {_HEADER_BYTES + 1} to {MAX_WIRE_BYTES} bytes, got {len(wire)}")
    verify_signature(wire[:KEY_BYTES], wire[KEY_BYTES:_HEADER_BYTES], DOMAIN + wire[_HEADER_BYTES:])


def decode_entry(wire: bytes, *, swarm: bytes | None = None, signature_checked: bool = False) -> Entry:
    """Verifies (unless a caller already did, e.g. in a worker pool), then decodes and validates.

    With `swarm` given, an entry of any other swarm is refused.
    """
    if not signature_checked:
        check_signature(wire)
    elif type(wire) is not bytes or not _HEADER_BYTES < len(wire) <= MAX_WIRE_BYTES:
        raise InvalidEntry("entry size out of range")
    payload = wire[_HEADER_BYTES:]
    fields = codec.decode(payload, max_bytes=MAX_FRAUD_PAYLOAD_BYTES)
    if type(fields) is not list or len(fields) != 8:
        raise InvalidEntry("payload must be an array of 8 fields")
    version, e_swarm, author, seq, prev, kind, body_map, time_ms = fields
    if version != VERSION or type(version) is not int:
        raise InvalidEntry(f"unknown entry version {version!r}")
    _check_header(e_swarm, author, seq, prev, time_ms)
    if author != wire[:KEY_BYTES]:
        raise InvalidEntry("payload author differs from the signing key")
    if swarm is not None and e_swarm != swarm:
        raise InvalidEntry("entry belongs to another swarm")
    if type(kind) is not str or kind not in BODY_TYPES:
        raise InvalidEntry(f"unknown kind {kind!r}")
    if kind != "fraud" and len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidEntry(f"{kind} payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    body = BODY_TYPES[kind].from_map(body_map)
    return Entry(e_swarm, author, seq, prev, body, time_ms, wire, entry_hash(payload))
