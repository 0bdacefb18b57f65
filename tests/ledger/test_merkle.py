"""ledger/merkle.py against known answers, a naive reference written from RFC 6962's definitions,
and properties: every proof verifies, any changed bit fails, proofs are logarithmic."""
from __future__ import annotations

import hashlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.merkle import Frontier, InvalidProof, Tree


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# -- a naive reference: RFC 6962 2.1 recursion over lists, nothing shared with the module


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return sha(b"")
    if len(d) == 1:
        return sha(b"\x00" + d[0])
    k = 1
    while k * 2 < len(d):
        k *= 2
    return sha(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], whole: bool) -> list[bytes]:
    if m == len(d):
        return [] if whole else [ref_mth(d)]
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m <= k:
        return ref_subproof(m, d[:k], whole) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def leaves_of(n: int, salt: bytes = b"") -> list[bytes]:
    # distinct leaves: with repeated leaves another index may honestly hold the same leaf
    return [salt + b"leaf-%d" % i for i in range(n)]


def flip(value: bytes, bit: int) -> bytes:
    raw = bytearray(value)
    raw[bit // 8] ^= 1 << (bit % 8)
    return bytes(raw)


# -- known answers


# The 8 leaves of RFC 6962's reference test data (certificate-transparency's merkle tree tests),
# and the root of every prefix.
RFC_LEAVES = [bytes.fromhex(h) for h in
              ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
RFC_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.mark.parametrize("n", range(9))
def test_roots_match_rfc_6962_test_data(n: int) -> None:
    tree = Tree.build(RFC_LEAVES)
    assert tree.root(n).hex() == RFC_ROOTS[n]
    assert merkle.tree_head(RFC_LEAVES[:n]) == (n, bytes.fromhex(RFC_ROOTS[n]))


def test_a_three_leaf_tree_by_hand() -> None:
    a, b, c = (sha(b"\x00" + x) for x in (b"a", b"b", b"c"))
    ab = sha(b"\x01" + a + b)
    root = sha(b"\x01" + ab + c)
    tree = Tree.build([b"a", b"b", b"c"])
    assert tree.root() == root
    assert tree.root(2) == ab and tree.root(1) == a
    assert tree.inclusion_proof(0) == [b, c]
    assert tree.inclusion_proof(1) == [a, c]
    assert tree.inclusion_proof(2) == [ab]
    assert tree.consistency_proof(1) == [b, c]  # a is the old root itself; b, then c lead up
    assert tree.consistency_proof(2) == [c]
    merkle.verify_inclusion(b"b", 1, 3, [a, c], root)
    merkle.verify_consistency(2, 3, [c], ab, root)
    merkle.verify_consistency(1, 3, [b, c], a, root)


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    # a two-leaf tree's root is not the leaf hash of the two children concatenated
    a, b = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    assert merkle.node_hash(a, b) != merkle.leaf_hash(a + b)
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(a + b, 0, 1, [], merkle.node_hash(a, b))


def test_consistency_proofs_of_the_rfc_tree_match_the_reference() -> None:
    tree = Tree.build(RFC_LEAVES)
    for n in range(1, 9):
        for m in range(1, n):
            assert tree.consistency_proof(m, n) == ref_subproof(m, RFC_LEAVES[:n], True)


# -- properties against the reference


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=70))
def test_frontier_tree_and_reference_agree(leaves: list[bytes]) -> None:
    tree = Tree.build(leaves)
    frontier = Frontier()
    for n, leaf in enumerate(leaves):
        assert frontier.root() == ref_mth(leaves[:n]) == tree.root(n)
        frontier = merkle.extend(frontier, [leaf])
    assert merkle.tree_head(leaves) == (len(leaves), ref_mth(leaves))
    assert merkle.extend(Frontier(), leaves) == frontier


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 70), st.data())
def test_every_inclusion_proof_verifies(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, data.draw(st.binary(max_size=4)))
    tree = Tree.build(leaves)
    size = data.draw(st.integers(1, n))
    root = tree.root(size)
    for i in range(size):
        path = tree.inclusion_proof(i, size)
        assert path == ref_path(i, leaves[:size])
        merkle.verify_inclusion(leaves[i], i, size, path, root)
        assert len(path) <= math.ceil(math.log2(size))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 70), st.data())
def test_every_consistency_proof_verifies(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, data.draw(st.binary(max_size=4)))
    tree = Tree.build(leaves)
    for m in range(n + 1):
        path = tree.consistency_proof(m, n)
        if 0 < m < n:
            assert path == ref_subproof(m, leaves, True)
            assert len(path) <= math.ceil(math.log2(n)) + 1
        merkle.verify_consistency(m, n, path, tree.root(m), tree.root(n))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 64), st.data())
def test_any_flipped_bit_of_an_inclusion_proof_fails(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(4 * n + 4)
    tree = Tree.build(leaves)
    i = data.draw(st.integers(0, n - 1))
    path, root = tree.inclusion_proof(i, n), tree.root(n)
    target = data.draw(st.sampled_from(["path", "root", "leaf", "index", "size"]))
    if target == "path":
        at = data.draw(st.integers(0, len(path) - 1))
        path = [*path[:at], flip(path[at], data.draw(st.integers(0, 255))), *path[at + 1:]]
        args = (leaves[i], i, n, path, root)
    elif target == "root":
        args = (leaves[i], i, n, path, flip(root, data.draw(st.integers(0, 255))))
    elif target == "leaf":
        args = (flip(leaves[i], data.draw(st.integers(0, 8 * len(leaves[i]) - 1))), i, n, path, root)
    elif target == "index":
        bad = i ^ (1 << data.draw(st.integers(0, 62)))
        args = (leaves[i], bad, n, path, root)
    else:
        # a proof alone does not bind the size (see the module's docstring): the signed checkpoint
        # does, so a changed size is checked against the root that size really has
        bad = n ^ (1 << data.draw(st.integers(0, n.bit_length())))
        args = (leaves[i], i, bad, path, tree.root(bad) if 0 < bad <= tree.size else root)
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(*args)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 64), st.data())
def test_any_flipped_bit_of_a_consistency_proof_fails(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(4 * n + 4)
    tree = Tree.build(leaves)
    m = data.draw(st.integers(1, n - 1))
    path, old, new = tree.consistency_proof(m, n), tree.root(m), tree.root(n)
    target = data.draw(st.sampled_from(["path", "old", "new", "m", "n", "drop", "extra"]))
    if target == "path":
        at = data.draw(st.integers(0, len(path) - 1))
        path = [*path[:at], flip(path[at], data.draw(st.integers(0, 255))), *path[at + 1:]]
    elif target == "old":
        old = flip(old, data.draw(st.integers(0, 255)))
    elif target == "new":
        new = flip(new, data.draw(st.integers(0, 255)))
    elif target == "m":
        m ^= 1 << data.draw(st.integers(0, n.bit_length()))
        old = tree.root(m) if 0 <= m <= tree.size else old
    elif target == "n":
        n ^= 1 << data.draw(st.integers(0, n.bit_length()))
        new = tree.root(n) if 0 <= n <= tree.size else new
    elif target == "drop":
        path = path[:-1]
    else:
        path = [*path, sha(b"extra")]
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(m, n, path, old, new)


def test_a_proof_from_another_tree_fails() -> None:
    one, other = Tree.build(leaves_of(10)), Tree.build(leaves_of(10, b"x"))
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(4, 10, one.consistency_proof(4), one.root(4), other.root())
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(leaves_of(10)[3], 3, 10, one.inclusion_proof(3), other.root())


# -- shapes and bounds


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 1000, 1 << 20, (1 << 20) + 1])
def test_proof_lengths_are_logarithmic(n: int) -> None:
    depth = (n - 1).bit_length()
    assert len(merkle._walk(1, n, to_leaf=True)) == depth  # the first leaf is always deepest
    for m in (1, n // 2 or 1, n - 1 or 1, n):
        assert len(merkle._walk(m, n, to_leaf=True)) <= depth
        assert len(merkle._walk(m, n, to_leaf=False)) <= depth


def test_bad_arguments_are_typed_errors() -> None:
    tree = Tree.build(leaves_of(5))
    for call in (
        lambda: tree.inclusion_proof(5),
        lambda: tree.inclusion_proof(-1),
        lambda: tree.inclusion_proof(0, 6),
        lambda: tree.consistency_proof(6),
        lambda: tree.root(6),
        lambda: merkle.verify_inclusion(b"x", 0, 0, [], merkle.EMPTY_ROOT),
        lambda: merkle.verify_inclusion(b"x", 0, 1, [], b"short"),
        lambda: merkle.verify_inclusion(b"x", 0, 2, [b"short"], merkle.EMPTY_ROOT),
        lambda: merkle.verify_inclusion(b"x", True, 2, [bytes(32)], merkle.EMPTY_ROOT),
        lambda: merkle.verify_consistency(3, 2, [], merkle.EMPTY_ROOT, merkle.EMPTY_ROOT),
        lambda: merkle.verify_consistency(0, 2, [], bytes(32), merkle.EMPTY_ROOT),
        lambda: merkle.verify_consistency(2, 2, [], bytes(32), merkle.EMPTY_ROOT),
        lambda: merkle.verify_consistency(2, 2, [bytes(32)], bytes(32), bytes(32)),
        lambda: merkle.verify_consistency(1, 1 << 63, [], bytes(32), bytes(32)),
        lambda: Frontier(3, (bytes(32),)),
        lambda: Frontier(1, (b"short",)),
        lambda: Tree(2, (bytes(64),)),
    ):
        with pytest.raises(InvalidProof):
            call()


def test_empty_and_equal_sizes() -> None:
    tree = Tree.build(leaves_of(4))
    assert tree.consistency_proof(0) == [] and tree.consistency_proof(4) == []
    merkle.verify_consistency(0, 4, [], merkle.EMPTY_ROOT, tree.root())
    merkle.verify_consistency(4, 4, [], tree.root(), tree.root())
    merkle.verify_consistency(0, 0, [], merkle.EMPTY_ROOT, merkle.EMPTY_ROOT)
    assert Tree.build([]).root() == merkle.EMPTY_ROOT == Frontier().root()
