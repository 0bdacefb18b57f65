"""Signed checkpoints of a ledger file, and the proofs a node hands to buyers.

A checkpoint says "the first `count` rows of my ledger of swarm S have Merkle root R", signed by
the node, as a certificate-transparency log's signed tree head does. With it anyone can check,
in O(log n) hashes and without the file, that an entry is in those rows (an inclusion proof) and
that a later checkpoint extends an earlier one (a consistency proof): a node that showed one
history and then another is caught by two of its own signatures.

Knows nothing about peers: checkpoints and proofs arrive as bytes and leave as bytes. The Merkle
tree itself is `ledger/merkle.py`; this module reads the ledger file (read-only, stdlib sqlite3,
blocking: run it in a thread on an event loop).

    leaf       = the row's wire, exactly as stored (author || signature || payload)
    wire       = node (32 B) || Ed25519 signature (64 B) || payload
    payload    = canonical msgpack [1, swarm, node, count, root, time_ms]
    signed     = b"autoswarm/checkpoint/v1\\0" || payload
    proof      = canonical msgpack [1, "inclusion", index, size, leaf, [hash, ...]]
               | canonical msgpack [1, "consistency", old_size, new_size, [hash, ...]]
    text form  = "<label> <hex>\\n", label autoswarm-checkpoint or autoswarm-proof

Why the wire and not the entry id as the leaf: the id hashes the payload only, so a row whose
signature was swapped (Ed25519 signers can make several valid ones) would keep its leaf. The wire
binds every stored byte of the row, and an inclusion proof then carries the entry itself, which
the buyer checks too (signature, swarm) — one file answers "is this signed entry in that log".
"""
from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger import codec, merkle
from ledger.audit import open_readonly, read_spec
from ledger.bodies import HASH_BYTES, KEY_BYTES
from ledger.entry import MAX_WIRE_BYTES, Entry, decode_entry
from ledger.errors import InvalidEntry, InvalidSignature, LedgerError, StoreError, Tampered
from ledger.keys import SIGNATURE_BYTES, Identity, node_id_text, verify_signature
from ledger.merkle import MAX_PROOF_HASHES, MAX_TREE_SIZE, InvalidProof

DOMAIN = b"autoswarm/checkpoint/v1\x00"
VERSION = 1
MAX_CHECKPOINT_PAYLOAD_BYTES = 256   # the payload is about 120 bytes
MAX_PROOF_BYTES = MAX_WIRE_BYTES + MAX_PROOF_HASHES * (HASH_BYTES + 2) + 64
CHECKPOINT_LABEL = "autoswarm-checkpoint"
PROOF_LABEL = "autoswarm-proof"
MAX_TEXT_BYTES = 2 * MAX_PROOF_BYTES + 64  # a text file of either kind, read at most this far
READ_CHUNK_ROWS = 4096
_HEADER_BYTES = KEY_BYTES + SIGNATURE_BYTES


class InvalidCheckpoint(LedgerError):
    """A checkpoint that does not decode, verify or match the ledger it names."""


# -- the checkpoint


@dataclass(frozen=True, slots=True)
class Checkpoint:
    swarm: bytes    # swarm id
    node: bytes     # the signer's public key
    count: int      # entries: the first `count` rows of the node's ledger
    root: bytes     # Merkle root (RFC 6962) of those rows' wires
    time_ms: int    # when the node signed it, by its clock

    def __post_init__(self) -> None:
        for name, value, size in (("swarm", self.swarm, HASH_BYTES), ("node", self.node, KEY_BYTES),
                                  ("root", self.root, HASH_BYTES)):
            if type(value) is not bytes or len(value) != size:
                raise InvalidCheckpoint(f"checkpoint {name} must be {size} bytes")
        if type(self.count) is not int or not 0 <= self.count <= MAX_TREE_SIZE:
            raise InvalidCheckpoint(f"checkpoint count must be 0 to 2^62, got {self.count!r}")
        if type(self.time_ms) is not int or not 0 <= self.time_ms < 1 << 63:
            raise InvalidCheckpoint(f"checkpoint time_ms out of range: {self.time_ms!r}")
        if self.count == 0 and self.root != merkle.EMPTY_ROOT:
            raise InvalidCheckpoint("a checkpoint of no entries has the empty tree's root")

    def payload(self) -> bytes:
        return codec.encode([VERSION, self.swarm, self.node, self.count, self.root, self.time_ms])


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    wire: bytes  # node || signature || payload, as signed and as received

    def describe(self) -> str:
        cp = self.checkpoint
        try:
            when = datetime.datetime.fromtimestamp(cp.time_ms / 1000, datetime.UTC).isoformat(timespec="seconds")
        except (OverflowError, ValueError, OSError):  # a signed but absurd clock still gets described
            when = f"time_ms {cp.time_ms}"
        return f"{cp.count} entries, root {cp.root.hex()[:16]}..., signed by {node_id_text(cp.node)[:12]} at {when}"


def sign_checkpoint(identity: Identity, checkpoint: Checkpoint) -> SignedCheckpoint:
    if checkpoint.node != identity.public_key:
        raise InvalidCheckpoint("the checkpoint's node must be the signing identity")
    payload = checkpoint.payload()
    return SignedCheckpoint(checkpoint, checkpoint.node + identity.sign(DOMAIN + payload) + payload)


def decode_checkpoint(wire: bytes, *, swarm: bytes | None = None) -> SignedCheckpoint:
    """Verifies the signature over the bytes as received, then decodes; `swarm`: the one expected."""
    if type(wire) is not bytes or not _HEADER_BYTES < len(wire) <= _HEADER_BYTES + MAX_CHECKPOINT_PAYLOAD_BYTES:
        raise InvalidCheckpoint("checkpoint size out of range")
    node, payload = wire[:KEY_BYTES], wire[_HEADER_BYTES:]
    try:
        verify_signature(node, wire[KEY_BYTES:_HEADER_BYTES], DOMAIN + payload)
    except InvalidSignature:
        raise InvalidCheckpoint("checkpoint signature does not verify") from None
    try:
        fields = codec.decode(payload, max_bytes=MAX_CHECKPOINT_PAYLOAD_BYTES)
    except InvalidEntry as exc:
        raise InvalidCheckpoint(f"checkpoint payload: {exc}") from None
    if type(fields) is not list or len(fields) != 6 or fields[0] != VERSION or type(fields[0]) is not int:
        raise InvalidCheckpoint("checkpoint payload is not [1, swarm, node, count, root, time_ms]")
    checkpoint = Checkpoint(*fields[1:])
    if checkpoint.node != node:
        raise InvalidCheckpoint("checkpoint node differs from the signing key")
    if swarm is not None and checkpoint.swarm != swarm:
        raise InvalidCheckpoint(f"checkpoint is of swarm {checkpoint.swarm.hex()[:16]}..., not {swarm.hex()[:16]}...")
    return SignedCheckpoint(checkpoint, wire)


# -- proofs


@dataclass(frozen=True, slots=True)
class InclusionProof:
    index: int                # the entry's row - 1
    size: int                 # the tree's leaves: a checkpoint's count
    wire: bytes               # the leaf: the entry's wire
    path: tuple[bytes, ...]   # RFC 6962 PATH, leaf to root

    def __post_init__(self) -> None:
        _check_counts(("index", self.index), ("size", self.size))
        if not self.index < self.size:
            raise InvalidProof(f"inclusion proof index {self.index} is outside {self.size} entries")
        if type(self.wire) is not bytes or not _HEADER_BYTES < len(self.wire) <= MAX_WIRE_BYTES:
            raise InvalidProof("inclusion proof does not hold an entry's wire")
        _check_path(self.path)

    def encode(self) -> bytes:
        return codec.encode([VERSION, "inclusion", self.index, self.size, self.wire, list(self.path)])


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    old_size: int
    new_size: int
    path: tuple[bytes, ...]   # RFC 6962 PROOF(old_size, D[new_size])

    def __post_init__(self) -> None:
        _check_counts(("old size", self.old_size), ("new size", self.new_size))
        if self.old_size > self.new_size:
            raise InvalidProof(f"consistency proof from {self.old_size} down to {self.new_size} entries")
        _check_path(self.path)

    def encode(self) -> bytes:
        return codec.encode([VERSION, "consistency", self.old_size, self.new_size, list(self.path)])


Proof = InclusionProof | ConsistencyProof


def _check_counts(*named: tuple[str, Any]) -> None:
    for name, value in named:
        if type(value) is not int or not 0 <= value <= MAX_TREE_SIZE:
            raise InvalidProof(f"proof {name} must be an integer from 0 to 2^62, got {value!r}")


def _check_path(path: Any) -> None:
    if type(path) is not tuple or len(path) > MAX_PROOF_HASHES:
        raise InvalidProof(f"a proof holds at most {MAX_PROOF_HASHES} hashes")
    for value in path:
        if type(value) is not bytes or len(value) != HASH_BYTES:
            raise InvalidProof(f"a proof's hashes are {HASH_BYTES} bytes each")


def decode_proof(data: bytes) -> Proof:
    try:
        fields = codec.decode(data, max_bytes=MAX_PROOF_BYTES)
    except InvalidEntry as exc:
        raise InvalidProof(f"proof does not decode: {exc}") from None
    if type(fields) is not list or len(fields) < 2 or fields[0] != VERSION or type(fields[0]) is not int:
        raise InvalidProof("not a proof of version 1")
    kind, rest = fields[1], fields[2:]
    if kind == "inclusion" and len(rest) == 4 and type(rest[3]) is list:
        return InclusionProof(rest[0], rest[1], rest[2], tuple(rest[3]))
    if kind == "consistency" and len(rest) == 3 and type(rest[2]) is list:
        return ConsistencyProof(rest[0], rest[1], tuple(rest[2]))
    raise InvalidProof(f"not an inclusion or consistency proof ({kind!r})")


def verify_inclusion(signed: SignedCheckpoint, proof: InclusionProof) -> Entry:
    """The proven entry, signature checked, when `proof` puts it in the checkpoint's rows."""
    cp = signed.checkpoint
    if proof.size != cp.count:
        raise InvalidProof(f"inclusion proof is for {proof.size} entries, the checkpoint has {cp.count}")
    merkle.verify_inclusion(proof.wire, proof.index, proof.size, proof.path, cp.root)
    try:
        return decode_entry(proof.wire, swarm=cp.swarm)
    except InvalidEntry as exc:
        raise InvalidProof(f"the proven leaf is not a valid entry of the swarm: {exc}") from None


def verify_consistency(old: SignedCheckpoint, new: SignedCheckpoint, proof: ConsistencyProof) -> None:
    """Raises InvalidProof unless `new`'s rows extend `old`'s, both checkpoints of one node and swarm."""
    a, b = old.checkpoint, new.checkpoint
    if a.swarm != b.swarm:
        raise InvalidProof("the two checkpoints are of different swarms")
    if a.node != b.node:
        raise InvalidProof("the two checkpoints are signed by different nodes (row orders differ between nodes)")
    if (proof.old_size, proof.new_size) != (a.count, b.count):
        raise InvalidProof(f"consistency proof is from {proof.old_size} to {proof.new_size} entries, "
                           f"the checkpoints have {a.count} and {b.count}")
    merkle.verify_consistency(a.count, b.count, proof.path, a.root, b.root)


def check_proofs(checkpoints: Sequence[SignedCheckpoint], proofs: Sequence[Proof]) -> list[str]:
    """Verifies each proof against the checkpoints whose counts it names; one line per proof."""
    by_count: dict[int, SignedCheckpoint] = {}
    for signed in checkpoints:
        held = by_count.setdefault(signed.checkpoint.count, signed)
        if held.checkpoint.root != signed.checkpoint.root and held.checkpoint.node == signed.checkpoint.node:
            # the equivocation checkpoints exist to catch: one node, one size, two histories
            raise InvalidCheckpoint(f"two checkpoints of {signed.checkpoint.count} entries by one node "
                                    "name different roots")
    lines = []
    for proof in proofs:
        if isinstance(proof, InclusionProof):
            signed = _named(by_count, proof.size, "inclusion proof")
            entry = verify_inclusion(signed, proof)
            lines.append(f"entry {entry.id.hex()} ({entry.kind} by {node_id_text(entry.author)[:12]}) "
                         f"is row {proof.index + 1} of {proof.size}")
        else:
            old = _named(by_count, proof.old_size, "consistency proof")
            new = _named(by_count, proof.new_size, "consistency proof")
            verify_consistency(old, new, proof)
            lines.append(f"the checkpoint of {proof.new_size} entries extends the one of {proof.old_size}")
    return lines


def _named(by_count: dict[int, SignedCheckpoint], count: int, what: str) -> SignedCheckpoint:
    if count not in by_count:
        raise InvalidProof(f"{what} names a checkpoint of {count} entries; none was given")
    return by_count[count]


# -- text form


def to_text(label: str, data: bytes) -> str:
    return f"{label} {data.hex()}\n"


def from_text(text: str, label: str) -> bytes:
    words = text.split()
    if len(words) != 2 or words[0] != label:
        raise (InvalidCheckpoint if label == CHECKPOINT_LABEL else InvalidProof)(
            f"not a file of the form '{label} <hex>'")
    try:
        return bytes.fromhex(words[1])
    except ValueError:
        raise (InvalidCheckpoint if label == CHECKPOINT_LABEL else InvalidProof)(f"{label}: not hex") from None


def read_text(path: Path) -> str:
    """A checkpoint or proof file, refused past MAX_TEXT_BYTES (OSError when it cannot be read)."""
    with open(path, "rb") as f:
        data = f.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise InvalidProof(f"{path}: larger than {MAX_TEXT_BYTES} bytes")
    return data.decode("ascii", errors="replace")


def load_checkpoint(path: Path, *, swarm: bytes | None = None) -> SignedCheckpoint:
    return decode_checkpoint(from_text(read_text(path), CHECKPOINT_LABEL), swarm=swarm)


def load_proof(path: Path) -> Proof:
    return decode_proof(from_text(read_text(path), PROOF_LABEL))


# -- the ledger file (blocking IO)


@dataclass(frozen=True, slots=True)
class FileHead:
    swarm: bytes
    rows: int       # in the file now
    count: int      # leaves of the tree: the first `count` rows
    root: bytes


def _wires(conn: sqlite3.Connection, path: Path, count: int) -> Iterator[bytes]:
    cursor = conn.execute("SELECT row, wire FROM entries ORDER BY row LIMIT ?", (count,))
    expected = 1
    while chunk := cursor.fetchmany(READ_CHUNK_ROWS):
        for row, wire in chunk:
            if row != expected or type(wire) is not bytes:
                raise Tampered(f"{path}: row {expected} is missing or its wire is not bytes "
                               "(`python -m ledger audit` says more)")
            expected += 1
            yield wire


def _open(path: Path, count: int | None) -> tuple[sqlite3.Connection, bytes, int, int]:
    conn = open_readonly(path)
    try:
        conn.execute("BEGIN")  # one snapshot for the count and the rows, even while a node appends
        swarm = read_spec(conn, path).swarm_id
        rows = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    except BaseException:
        conn.close()
        raise
    if count is None:
        count = rows
    if type(count) is not int or not 0 <= count <= rows:
        conn.close()
        raise InvalidCheckpoint(f"{path}: holds {rows} rows, not {count}")
    return conn, swarm, rows, count


def file_head(path: Path, count: int | None = None) -> FileHead:
    """The Merkle root of the first `count` rows (default: all), streamed: O(log n) memory."""
    conn, swarm, rows, count = _open(path, count)
    try:
        size, root = merkle.tree_head(_wires(conn, path, count))
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot be read: {exc}") from None
    finally:
        conn.close()
    return FileHead(swarm, rows, size, root)


def make_checkpoint(path: Path, identity: Identity, *, time_ms: int, count: int | None = None) -> SignedCheckpoint:
    head = file_head(path, count)
    return sign_checkpoint(identity, Checkpoint(head.swarm, identity.public_key, head.count, head.root, time_ms))


def check_file(path: Path, signed: SignedCheckpoint) -> FileHead:
    """Raises InvalidCheckpoint unless the file's first `count` rows have the checkpoint's root."""
    cp = signed.checkpoint
    conn, swarm, rows, _ = _open(path, 0)
    conn.close()
    if cp.swarm != swarm:
        raise InvalidCheckpoint(f"checkpoint is of swarm {cp.swarm.hex()[:16]}..., the file of {swarm.hex()[:16]}...")
    if cp.count > rows:
        raise InvalidCheckpoint(f"checkpoint names {cp.count} entries, the file holds {rows}")
    head = file_head(path, cp.count)
    if head.root != cp.root:
        raise InvalidCheckpoint(f"the file's first {cp.count} rows do not have the checkpoint's root "
                                f"({head.root.hex()[:16]}... instead of {cp.root.hex()[:16]}...)")
    return head


def _tree(path: Path, count: int | None) -> tuple[sqlite3.Connection, merkle.Tree]:
    conn, _, _, count = _open(path, count)
    try:
        return conn, merkle.Tree.build(_wires(conn, path, count))
    except BaseException:
        conn.close()
        raise


def prove_entry(path: Path, entry_id: bytes, size: int | None = None) -> InclusionProof:
    """Inclusion proof of the entry with `entry_id` among the first `size` rows (default: all)."""
    conn, tree = _tree(path, size)
    try:
        found = conn.execute("SELECT row, wire FROM entries WHERE id = ?", (entry_id,)).fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot be read: {exc}") from None
    finally:
        conn.close()
    if found is None:
        raise InvalidProof(f"{path}: holds no entry {entry_id.hex()}")
    row, wire = found
    if row > tree.size:
        raise InvalidProof(f"entry {entry_id.hex()[:16]}... is row {row}, after the first {tree.size}")
    return InclusionProof(row - 1, tree.size, wire, tuple(tree.inclusion_proof(row - 1)))


def prove_consistency(path: Path, old_size: int, new_size: int | None = None) -> ConsistencyProof:
    conn, tree = _tree(path, new_size)
    conn.close()
    if not 0 <= old_size <= tree.size:
        raise InvalidProof(f"old size {old_size} is outside 0 to {tree.size}")
    return ConsistencyProof(old_size, tree.size, tuple(tree.consistency_proof(old_size)))
