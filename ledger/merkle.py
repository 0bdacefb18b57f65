"""Merkle trees over a ledger's rows: tree heads, inclusion proofs and consistency proofs.

Pure: no SQLite, no clock, no keys. Leaves arrive as bytes (the ledger uses each row's wire, see
`ledger/checkpoint.py`) and hashes leave as bytes.

Theory of operation. The tree is the one of RFC 6962 section 2.1 (kept in RFC 9162 section 2.1),
written here from its definitions:

    MTH({})      = SHA-256()                        the empty tree
    MTH({d0})    = SHA-256(0x00 || d0)              a leaf
    MTH(D[n])    = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   k: the largest power of two < n

The 0x00 / 0x01 prefixes keep a leaf from ever being read as an inner node. Every left subtree is
perfect (2^j leaves, starting at a multiple of 2^j); only the right edge of the tree is ragged. So:

- A `Frontier` holds the roots of the perfect subtrees that the binary digits of n name, largest
  first (the "peaks"): appending a leaf merges equal-sized peaks like a binary counter carries, and
  folding the peaks right to left gives MTH(D[n]). One pass, O(log n) memory, and a node can keep one
  running beside its ledger.
- A `Tree` keeps every perfect subtree's hash, level by level (about 2n hashes in all), so that
  any MTH(D[a:b]) the proofs need costs O(log n) hashes, and a proof O(log^2 n) at worst.
- A proof's shape (which side each sibling sits on) follows from (index, size) or (m, n) alone, by
  the same recursion as PATH and SUBPROOF in RFC 6962 2.1.1 and 2.1.2. The verifiers walk that
  recursion top-down to get the shape, then hash bottom-up; a proof of the wrong length is refused
  before any hashing.

A proof on its own does not bind the tree size: the same path can verify for two sizes whose
shapes coincide. The size is bound by the signed checkpoint that names both the size and the
root; the checkpoint module checks that a proof's size is its checkpoint's.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ledger.errors import LedgerError

HASH_BYTES = 32
MAX_TREE_SIZE = 1 << 62          # leaves; far beyond any ledger, and keeps every proof <= 62 hashes
MAX_PROOF_HASHES = 64            # an inclusion proof has at most ceil(log2 n) hashes, a consistency one +1
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"


class InvalidProof(LedgerError):
    """A Merkle proof that does not lead to the root it claims, or has the wrong shape."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(_LEAF + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2): the size of the left subtree."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_size(n: int, what: str, *, low: int = 0) -> None:
    if type(n) is not int or not low <= n <= MAX_TREE_SIZE:
        raise InvalidProof(f"{what} must be an integer from {low} to 2^62, got {n!r}")


def _check_hash(value: bytes, what: str) -> None:
    if type(value) is not bytes or len(value) != HASH_BYTES:
        raise InvalidProof(f"{what} must be {HASH_BYTES} bytes")


# -- tree heads in one pass


@dataclass(frozen=True, slots=True)
class Frontier:
    """The peaks of a tree of `size` leaves: one perfect-subtree root per set bit of size, largest first."""

    size: int = 0
    peaks: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        _check_size(self.size, "frontier size")
        if len(self.peaks) != self.size.bit_count():
            raise InvalidProof(f"a frontier of {self.size} leaves has {self.size.bit_count()} peaks, got {len(self.peaks)}")
        for peak in self.peaks:
            _check_hash(peak, "a peak")

    def root(self) -> bytes:
        if not self.peaks:
            return EMPTY_ROOT
        # The largest power of two below n is the largest peak, so MTH folds the peaks from the right.
        acc = self.peaks[-1]
        for peak in reversed(self.peaks[:-1]):
            acc = node_hash(peak, acc)
        return acc


def extend(frontier: Frontier, leaves: Iterable[bytes]) -> Frontier:
    """The frontier after appending `leaves` (raw leaf bytes, hashed here)."""
    size = frontier.size
    # stack of (height, hash), largest first: peak i of the frontier has height = its bit of size
    stack = [(h, peak) for h, peak in zip(_set_bits_desc(size), frontier.peaks)]
    sha256, leaf_prefix, node_prefix = hashlib.sha256, _LEAF, _NODE  # locals: this loop runs per row
    for leaf in leaves:
        height, acc = 0, sha256(leaf_prefix + leaf).digest()
        # a binary counter's carry: two perfect trees of equal height merge into one of height+1
        while stack and stack[-1][0] == height:
            acc = sha256(node_prefix + stack.pop()[1] + acc).digest()
            height += 1
        stack.append((height, acc))
        size += 1
    return Frontier(size, tuple(peak for _, peak in stack))


def _set_bits_desc(n: int) -> list[int]:
    return [bit for bit in range(n.bit_length() - 1, -1, -1) if n >> bit & 1]


def tree_head(leaves: Iterable[bytes]) -> tuple[int, bytes]:
    """(n, MTH(D[n])) of the leaves, in one pass and O(log n) memory."""
    frontier = extend(Frontier(), leaves)
    return frontier.size, frontier.root()


# -- a whole tree, for proofs


@dataclass(frozen=True, slots=True)
class Tree:
    """Every perfect subtree's hash: levels[j] holds, 32 bytes each, the roots of leaves
    [i * 2^j, (i + 1) * 2^j) for every complete i. Answers for any prefix size <= `size`."""

    size: int
    levels: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_size(self.size, "tree size")
        if len(self.levels) != max(1, self.size.bit_length()):
            raise InvalidProof("a tree's levels do not match its size")
        for j, level in enumerate(self.levels):
            if len(level) != HASH_BYTES * (self.size >> j):
                raise InvalidProof(f"tree level {j} has the wrong length")

    @classmethod
    def build(cls, leaves: Iterable[bytes]) -> Tree:
        sha256, leaf_prefix, node_prefix = hashlib.sha256, _LEAF, _NODE
        level = b"".join(sha256(leaf_prefix + leaf).digest() for leaf in leaves)
        levels = [level]
        while len(level) >= 2 * HASH_BYTES:
            level = b"".join(
                sha256(node_prefix + level[i:i + 2 * HASH_BYTES]).digest()
                for i in range(0, len(level) - HASH_BYTES, 2 * HASH_BYTES)
            )
            levels.append(level)
        return cls(len(levels[0]) // HASH_BYTES, tuple(levels))

    def _perfect(self, height: int, index: int) -> bytes:
        at = index * HASH_BYTES
        return self.levels[height][at:at + HASH_BYTES]

    def subtree_root(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a node of the tree: start is a multiple of the power of two >= end - start."""
        width = end - start
        if width & (width - 1) == 0:  # perfect, and aligned in every node of an RFC 6962 tree
            height = width.bit_length() - 1
            return self._perfect(height, start >> height)
        k = split(width)
        return node_hash(self._perfect(k.bit_length() - 1, start // k), self.subtree_root(start + k, end))

    def root(self, n: int | None = None) -> bytes:
        n = self.size if n is None else n
        self._check_prefix(n)
        return EMPTY_ROOT if n == 0 else self.subtree_root(0, n)

    def _check_prefix(self, n: int) -> None:
        if type(n) is not int or not 0 <= n <= self.size:
            raise InvalidProof(f"tree size must be 0 to {self.size}, got {n!r}")

    def inclusion_proof(self, index: int, n: int | None = None) -> list[bytes]:
        """PATH(index, D[n]): sibling hashes from the leaf up to the root."""
        n = self.size if n is None else n
        self._check_prefix(n)
        if type(index) is not int or not 0 <= index < n:
            raise InvalidProof(f"leaf index must be 0 to {n - 1}, got {index!r}")
        # the sibling of each node on the way down; listed bottom-up, as in the RFC
        return [self.subtree_root(mid, end) if went_left else self.subtree_root(start, mid)
                for start, mid, end, went_left in reversed(_walk(index + 1, n, to_leaf=True))]

    def consistency_proof(self, m: int, n: int | None = None) -> list[bytes]:
        """PROOF(m, D[n]): what takes MTH(D[m]) to MTH(D[n]). Empty when m is 0 or m == n."""
        n = self.size if n is None else n
        self._check_prefix(n)
        if type(m) is not int or not 0 <= m <= n:
            raise InvalidProof(f"old size must be 0 to {n}, got {m!r}")
        if m == 0 or m == n:
            return []
        steps = _walk(m, n, to_leaf=False)
        path = [self.subtree_root(mid, end) if went_left else self.subtree_root(start, mid)
                for start, mid, end, went_left in steps]
        start, end = _stop(steps, n)
        if start > 0:  # some step went right: the node where we stopped is not the old root itself
            path.append(self.subtree_root(start, end))
        path.reverse()
        return path


# -- the shape of a proof, shared by the prover and the verifiers


Step = tuple[int, int, int, bool]  # a node [start, end) split at mid, and whether the walk went left


def _walk(m: int, n: int, *, to_leaf: bool) -> list[Step]:
    """Top-down from the root of n leaves (1 <= m <= n); a step goes left when leaves [0, m) do
    not reach past the split.

    With m = index + 1 and to_leaf, this is PATH's recursion: it ends at the leaf. With m = the
    old size, it is SUBPROOF's: it ends at the first node [start, m), made of old leaves only.
    """
    steps: list[Step] = []
    start, end = 0, n
    while (end - start > 1) if to_leaf else (end != m):
        mid = start + split(end - start)
        went_left = m <= mid
        steps.append((start, mid, end, went_left))
        start, end = (start, mid) if went_left else (mid, end)
    return steps


def _stop(steps: list[Step], n: int) -> tuple[int, int]:
    """The node [start, end) where a walk stopped."""
    if not steps:
        return 0, n
    start, mid, end, went_left = steps[-1]
    return (start, mid) if went_left else (mid, end)


# -- verifiers


def verify_inclusion(leaf: bytes, index: int, n: int, path: Sequence[bytes], root: bytes) -> None:
    """Raises InvalidProof unless `path` proves `leaf` (raw bytes) is leaf `index` of the tree of n with `root`."""
    verify_inclusion_hash(leaf_hash(leaf), index, n, path, root)


def verify_inclusion_hash(leaf_digest: bytes, index: int, n: int, path: Sequence[bytes], root: bytes) -> None:
    """As `verify_inclusion`, given the leaf's hash."""
    _check_size(n, "tree size", low=1)
    if type(index) is not int or not 0 <= index < n:
        raise InvalidProof(f"leaf index {index!r} is outside a tree of {n} leaves")
    _check_hash(root, "root")
    _check_hash(leaf_digest, "leaf hash")
    steps = _walk(index + 1, n, to_leaf=True)
    if len(path) != len(steps):
        raise InvalidProof(f"an inclusion proof for leaf {index} of {n} has {len(steps)} hashes, got {len(path)}")
    acc = leaf_digest
    for sibling, (_, _, _, went_left) in zip(path, reversed(steps)):
        _check_hash(sibling, "a proof hash")
        acc = node_hash(acc, sibling) if went_left else node_hash(sibling, acc)
    if acc != root:
        raise InvalidProof(f"inclusion proof for leaf {index} of {n} does not lead to the root")


def verify_consistency(m: int, n: int, path: Sequence[bytes], old_root: bytes, new_root: bytes) -> None:
    """Raises InvalidProof unless `path` proves the tree of m leaves with `old_root` is a prefix
    of the tree of n leaves with `new_root`."""
    _check_size(n, "new size")
    _check_size(m, "old size")
    if m > n:
        raise InvalidProof(f"old size {m} is larger than new size {n}")
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    if m == 0 or m == n:
        # RFC 6962: both are the empty proof. Any tree extends the empty one, whose root is fixed.
        if path:
            raise InvalidProof(f"a consistency proof from {m} to {n} is empty, got {len(path)} hashes")
        if m == 0 and old_root != EMPTY_ROOT:
            raise InvalidProof("the old root is not the root of the empty tree")
        if m == n and old_root != new_root:
            raise InvalidProof(f"two different roots for one size {n}")
        return
    steps = _walk(m, n, to_leaf=False)
    whole = _stop(steps, n)[0] == 0  # no step went right: the node where the walk stopped is the old tree
    want = len(steps) + (0 if whole else 1)
    if len(path) != want:
        raise InvalidProof(f"a consistency proof from {m} to {n} has {want} hashes, got {len(path)}")
    for value in path:
        _check_hash(value, "a proof hash")
    # Bottom-up: the node where the recursion stopped is a subtree of both trees. `whole` means
    # the old tree is that node, so its hash is old_root itself; otherwise the proof carries it.
    rest = iter(path)
    old = new = old_root if whole else next(rest)
    for (_, _, _, went_left), sibling in zip(reversed(steps), rest):
        if went_left:
            new = node_hash(new, sibling)       # the sibling holds only new leaves
        else:
            old = node_hash(sibling, old)       # the sibling is left of m: in both trees
            new = node_hash(sibling, new)
    if old != old_root:
        raise InvalidProof(f"consistency proof from {m} to {n} does not lead to the old root")
    if new != new_root:
        raise InvalidProof(f"consistency proof from {m} to {n} does not lead to the new root")
