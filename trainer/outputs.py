"""A commitment to what an evaluation produced: one 32-byte digest over its per-batch outputs.

Theory of operation. The evaluation scores batches of validation rows in a fixed order (the eval
seed picks them). For each batch it keeps three integers, a `BatchOutput`: the summed loss in
units of NATS_QUANTUM (-sum log p over the targets that count, rounded), the UTF-8 bytes of those
targets and their number. The leaves, in batch order, are the leaves of a Merkle tree of the
RFC 6962 shape (written here from its definition, as ledger/merkle.py does: the trainer imports
nothing from the project):

    leaf  = SHA-256(0x00 || nats_q || bytes || tokens)        three big-endian int64
    node  = SHA-256(0x01 || left || right)                    left: the largest power of two < n
    digest = SHA-256(DOMAIN || eval_seed || n || quantum || root)

Why these choices:
- The digest binds the eval seed and the batch count, so a verifier cannot say afterwards that it
  scored other rows; two digests are comparable leaf by leaf only when their eval seeds match.
- Integers, not floats: a leaf's bytes must not depend on how a machine prints a float. The
  quantum is a power of two, so `round(nats / quantum)` of a float64 is the same on every machine.
- A Merkle root rather than one running hash: a later referee can ask each side to open only the
  batches where they differ (a proof is log2(n) hashes) and recompute one batch, not the whole
  evaluation. The cost is one SHA-256 per batch and per inner node: microseconds for the hundreds
  of batches a GPU evaluation has.

Two replays of one commit with one eval seed on one machine produce bit-identical outputs, so
their digests are equal. Across machines float noise may move a leaf by a quantum or more: equal
digests are then likely but not promised, which is why a disagreement (ledger/outputs.py) also
needs the values apart beyond the class's tolerance.

Knows nothing of models or processes: integers in, bytes out.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from trainer.errors import TrainerError

DOMAIN = b"autoswarm/eval-outputs/v1\x00"
NATS_QUANTUM_BITS = 10
NATS_QUANTUM = 2.0 ** -NATS_QUANTUM_BITS  # nats: ~0.001, far below one token's loss, exact in binary
DIGEST_BYTES = 32
_INT64 = (-(1 << 63), (1 << 63) - 1)


class OutputsError(TrainerError, ValueError):
    """Outputs that cannot be committed to, or a proof that does not fit its digest."""


@dataclass(frozen=True, slots=True)
class BatchOutput:
    """One evaluation batch's outputs, as integers."""

    nats_q: int        # summed -log p of the counted targets, in units of NATS_QUANTUM
    target_bytes: int  # UTF-8 bytes of the counted targets
    target_tokens: int

    def __post_init__(self) -> None:
        for name in ("nats_q", "target_bytes", "target_tokens"):
            value = getattr(self, name)
            if not _INT64[0] <= value <= _INT64[1] or (name != "nats_q" and value < 0):
                raise OutputsError(f"{name} out of range: {value}")

    @classmethod
    def of(cls, nats: float, target_bytes: int, target_tokens: int) -> BatchOutput:
        return cls(quantize(nats), target_bytes, target_tokens)

    @property
    def nats(self) -> float:
        return self.nats_q * NATS_QUANTUM

    def leaf(self) -> bytes:
        return struct.pack(">qqq", self.nats_q, self.target_bytes, self.target_tokens)


def quantize(nats: float) -> int:
    if nats != nats or nats in (float("inf"), float("-inf")):
        raise OutputsError(f"cannot commit to a non-finite loss ({nats})")
    return round(nats / NATS_QUANTUM)  # a power-of-two quantum: the division is exact


def _leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two below n (n >= 2): the size of the left subtree."""
    return 1 << ((n - 1).bit_length() - 1)


def _root(hashes: Sequence[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return _node_hash(_root(hashes[:k]), _root(hashes[k:]))


def merkle_root(outputs: Sequence[BatchOutput]) -> bytes:
    if not outputs:
        raise OutputsError("an evaluation without batches has nothing to commit to")
    return _root([_leaf_hash(o.leaf()) for o in outputs])


def seal(eval_seed: int, batches: int, root: bytes) -> bytes:
    """The digest of a tree `root` over `batches` leaves scored with `eval_seed`."""
    if not 0 <= eval_seed < 1 << 64 or batches < 1 or len(root) != DIGEST_BYTES:
        raise OutputsError(f"bad commitment inputs: eval_seed {eval_seed}, {batches} batches, "
                           f"{len(root)}-byte root")
    return hashlib.sha256(DOMAIN + struct.pack(">QQB", eval_seed, batches, NATS_QUANTUM_BITS) + root).digest()


def digest(eval_seed: int, outputs: Sequence[BatchOutput]) -> bytes:
    """The 32-byte commitment a verify entry carries (Verify.outputs)."""
    return seal(eval_seed, len(outputs), merkle_root(outputs))


def prove(outputs: Sequence[BatchOutput], index: int) -> list[bytes]:
    """The sibling hashes, bottom first, that tie batch `index` to merkle_root(outputs)."""
    if not 0 <= index < len(outputs):
        raise OutputsError(f"batch {index} is not one of {len(outputs)}")
    hashes = [_leaf_hash(o.leaf()) for o in outputs]
    path: list[bytes] = []
    lo, hi = 0, len(hashes)
    while hi - lo > 1:  # top-down, then reversed: each level's sibling is the other half
        k = lo + _split(hi - lo)
        if index < k:
            path.append(_root(hashes[k:hi]))
            hi = k
        else:
            path.append(_root(hashes[lo:k]))
            lo = k
    return path[::-1]


def check_proof(commitment: bytes, eval_seed: int, batches: int, index: int, output: BatchOutput,
                path: Sequence[bytes]) -> None:
    """Raises OutputsError unless `output` is batch `index` of the evaluation `commitment` names."""
    if not 0 <= index < batches:
        raise OutputsError(f"batch {index} is not one of {batches}")
    sides: list[bool] = []  # True: the sibling is on the right
    lo, hi = 0, batches
    while hi - lo > 1:
        k = lo + _split(hi - lo)
        sides.append(index < k)
        lo, hi = (lo, k) if index < k else (k, hi)
    if len(path) != len(sides):
        raise OutputsError(f"a proof for batch {index} of {batches} has {len(sides)} hashes, got {len(path)}")
    h = _leaf_hash(output.leaf())
    for sibling, right in zip(path, reversed(sides)):
        h = _node_hash(h, sibling) if right else _node_hash(sibling, h)
    if seal(eval_seed, batches, h) != commitment:
        raise OutputsError(f"batch {index} does not match the commitment")
