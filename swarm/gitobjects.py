"""Git objects as bytes: ids, and strict parsers for the trees and commits a bundle carries.

Pure: no repository, no dulwich, no IO. The parsers see bytes from peers, so every malformed
input raises `BundleRejected` with a reason; none of them trusts a length or an offset it has
not checked. They are stricter than git itself where git only warns (`git fsck`): a tree whose
entries are unsorted, duplicated, or named `.`, `..` or `.git` is refused outright.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from swarm.errors import BundleRejected

OID_BYTES = 20  # SHA-1; bundles in the sha256 object format are refused at the header

# Pack type numbers, shared with packfile.py. Tags (4) are never needed for an experiment.
COMMIT = 1
TREE = 2
BLOB = 3
KIND_NAMES = {COMMIT: b"commit", TREE: b"tree", BLOB: b"blob"}

# Tree entry modes git writes today. Old git wrote 100664 and zero-padded modes; `git fsck`
# warns about those, we refuse them, since no swarm tool writes them.
MODE_TREE = 0o40000
MODE_FILE = 0o100644
MODE_EXECUTABLE = 0o100755
MODE_SYMLINK = 0o120000
MODE_SUBMODULE = 0o160000
_MODES = {b"40000": MODE_TREE, b"100644": MODE_FILE, b"100755": MODE_EXECUTABLE,
          b"120000": MODE_SYMLINK, b"160000": MODE_SUBMODULE}

MAX_TREE_ENTRIES = 10_000
_HEADER_KEY = re.compile(rb"[a-z0-9][a-z0-9-]{0,63}")
_HEX_OID = re.compile(rb"[0-9a-f]{40}")


def object_id(kind: int, data: bytes) -> bytes:
    """The 20-byte id git gives an object: SHA-1 over `<kind> <size>\\0<content>`."""
    header = KIND_NAMES[kind] + b" " + str(len(data)).encode() + b"\0"
    return hashlib.sha1(header + data).digest()


def parse_hex_oid(text: bytes, what: str) -> bytes:
    if _HEX_OID.fullmatch(text) is None:
        raise BundleRejected(f"{what}: not a 40-digit lowercase hex object id: {text[:48]!r}")
    return bytes.fromhex(text.decode("ascii"))


@dataclass(frozen=True, slots=True)
class RawObject:
    """One whole git object (never a delta) and the id its content hashes to."""

    kind: int  # COMMIT, TREE or BLOB
    data: bytes
    oid: bytes

    def __post_init__(self) -> None:
        if self.kind not in KIND_NAMES:
            raise BundleRejected(f"object kind {self.kind} is not a commit, tree or blob")
        if len(self.oid) != OID_BYTES:
            raise BundleRejected(f"object id must be {OID_BYTES} bytes, got {len(self.oid)}")

    @classmethod
    def of(cls, kind: int, data: bytes) -> RawObject:
        if kind not in KIND_NAMES:
            raise BundleRejected(f"object kind {kind} is not a commit, tree or blob")
        return cls(kind, data, object_id(kind, data))


@dataclass(frozen=True, slots=True)
class TreeEntry:
    mode: int
    name: bytes
    oid: bytes

    def __post_init__(self) -> None:
        if self.mode not in _MODES.values():
            raise BundleRejected(f"tree entry {self.name!r}: unknown mode {self.mode:o}")
        check_entry_name(self.name)
        if len(self.oid) != OID_BYTES:
            raise BundleRejected(f"tree entry {self.name!r}: id must be {OID_BYTES} bytes")

    @property
    def is_tree(self) -> bool:
        return self.mode == MODE_TREE


def check_entry_name(name: bytes) -> None:
    # `..` and `/` would let a checkout write outside its folder; `.git` would plant hooks.
    if not name or b"/" in name or b"\0" in name:
        raise BundleRejected(f"tree entry name {name!r} is empty or contains '/' or NUL")
    if name in (b".", b"..") or name.lower() == b".git":
        raise BundleRejected(f"tree entry name {name!r} is not allowed")


def _sort_key(entry: TreeEntry) -> bytes:
    # Git orders a tree as if every subtree's name ended in '/'.
    return entry.name + b"/" if entry.is_tree else entry.name


def parse_tree(data: bytes) -> tuple[TreeEntry, ...]:
    """The entries of a tree object, refusing anything `git fsck` would flag."""
    entries: list[TreeEntry] = []
    pos = 0
    while pos < len(data):
        if len(entries) >= MAX_TREE_ENTRIES:
            raise BundleRejected(f"tree has more than {MAX_TREE_ENTRIES} entries")
        space = data.find(b" ", pos, pos + 7)
        if space < 0:
            raise BundleRejected(f"tree entry at byte {pos}: no mode")
        mode = _MODES.get(data[pos:space])
        if mode is None:
            raise BundleRejected(f"tree entry at byte {pos}: bad mode {data[pos:space]!r}")
        nul = data.find(b"\0", space + 1)
        if nul < 0 or nul + 1 + OID_BYTES > len(data):
            raise BundleRejected(f"tree entry at byte {pos}: truncated")
        entries.append(TreeEntry(mode, data[space + 1:nul], data[nul + 1:nul + 1 + OID_BYTES]))
        pos = nul + 1 + OID_BYTES
    keys = [_sort_key(e) for e in entries]
    if any(a >= b for a, b in zip(keys, keys[1:])):
        raise BundleRejected("tree entries are unsorted or duplicated")
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise BundleRejected("tree has two entries with one name")
    return tuple(entries)


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """The fields of a commit the bundle checks need; the rest is kept as opaque bytes."""

    tree: bytes
    parents: tuple[bytes, ...]


def parse_commit(data: bytes) -> CommitInfo:
    """Tree and parents of a commit, after checking the header's shape strictly."""
    end = data.find(b"\n\n")
    head = data if end < 0 else data[:end]
    if b"\0" in head:
        raise BundleRejected("commit header contains NUL")
    lines = head.split(b"\n")
    tree: bytes | None = None
    parents: list[bytes] = []
    seen: set[bytes] = set()
    for number, line in enumerate(lines):
        if line.startswith(b" ") and number > 0:
            continue  # continuation of a multi-line header such as gpgsig
        key, sep, value = line.partition(b" ")
        if not sep or _HEADER_KEY.fullmatch(key) is None:
            raise BundleRejected(f"commit header line {number + 1} is malformed: {line[:40]!r}")
        if key == b"tree":
            if number != 0:
                raise BundleRejected("commit: 'tree' must be the first header line")
            tree = parse_hex_oid(value, "commit tree")
        elif key == b"parent":
            if seen - {b"tree", b"parent"}:
                raise BundleRejected("commit: 'parent' lines must follow 'tree'")
            parents.append(parse_hex_oid(value, "commit parent"))
        elif key in (b"author", b"committer") and key in seen:
            raise BundleRejected(f"commit has two {key.decode()} lines")
        seen.add(key)
    if tree is None or b"author" not in seen or b"committer" not in seen:
        raise BundleRejected("commit lacks tree, author or committer")
    return CommitInfo(tree, tuple(parents))

