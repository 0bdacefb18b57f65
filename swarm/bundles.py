"""Thin git bundles of experiments: make one for a peer, check and apply one from a peer.

Knows nothing about the network: bundles arrive and leave as bytes; `swarm/peer` moves them.

Theory of operation. A claim names a commit C whose parent P every receiver already holds, so
`make_bundle(repo, C, have=[P])` sends only what P lacks: C, the trees on the way to train.py,
and train.py's new blob as a delta against P's (a thin pack, as `git bundle create C ^P`
writes). `apply_bundle` treats the bytes as hostile. In order, before anything is written:
the size; the header; every prerequisite present here; every ref at the claimed commit; the
pack, inflated under limits and its deltas resolved, thin ones against objects here, every
object id recomputed from its content; then each new commit against its parent: one parent,
only allowed paths changed, each a regular non-executable file, nothing deleted, every object
the bundle carries reachable that way. Only then are the objects stored, blobs and trees
first, so a crash never leaves a commit whose tree is missing.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from swarm import gitrepo
from swarm.errors import BundleRejected, RepositoryError, UnknownObject
from swarm.gitobjects import (
    BLOB, COMMIT, MODE_FILE, TREE, CommitInfo, RawObject, TreeEntry, parse_commit, parse_tree,
)
from swarm.gitrepo import Repository
from swarm.packfile import (
    MAX_PREREQUISITES, PackLimits, parse_bundle_header, parse_pack, resolve_pack, write_bundle,
    write_pack,
)

MAX_BUNDLE_BYTES = 1 << 20  # a train.py change is kilobytes; a full history fits too
MAX_BUNDLE_OBJECTS = 4096
MAX_INFLATED_BYTES = 16 << 20  # everything a bundle inflates to, deltas resolved
MAX_TREE_DEPTH = 32  # directories below the root; bounds the checker's recursion
MAX_BUNDLE_COMMITS = 10_000  # make_bundle refuses histories longer than any receiver accepts
BUNDLE_REF = b"HEAD"  # the one ref our bundles carry; `git fetch b.bundle HEAD` reads it


def bundle_hash(data: bytes) -> bytes:
    """The 32-byte SHA-256 a claim names its bundle by; bundles are pulled by this hash."""
    return hashlib.sha256(data).digest()


# -- making


async def make_bundle(repo: Repository, commit: bytes, have: Sequence[bytes]) -> bytes:
    """A bundle of `commit` holding only what a receiver that has the `have` commits lacks.

    The `have` commits met on the way back from `commit` become the prerequisites; `have`
    entries this repository does not know are ignored. Raises UnknownObject if `commit` or its
    history is missing here. Deterministic: the same objects and arguments give the same bytes.
    """
    if len(have) > MAX_PREREQUISITES:  # a receiver refuses more prerequisites than this
        raise ValueError(f"at most {MAX_PREREQUISITES} `have` commits, got {len(have)}")
    haves = set(have)
    commits: list[RawObject] = []  # to send, newest first
    infos: dict[bytes, CommitInfo] = {}
    prerequisites: list[bytes] = []
    frontier, visited = [commit], set()
    while frontier:
        frontier = [c for c in frontier if c not in visited]
        visited.update(frontier)
        found = await gitrepo.read_objects(repo, frontier)
        next_frontier: list[bytes] = []
        for oid in frontier:
            obj = found.get(oid)
            if obj is None or obj.kind != COMMIT:
                raise UnknownObject(f"no commit {oid.hex()} in the repository")
            infos[oid] = parse_commit(obj.data)
            if oid in haves:
                prerequisites.append(oid)
                continue
            commits.append(obj)
            next_frontier += infos[oid].parents
        if len(commits) > MAX_BUNDLE_COMMITS:
            raise RepositoryError(f"{commit.hex()} is more than {MAX_BUNDLE_COMMITS} commits "
                                  "from any `have`")
        frontier = next_frontier
    # Oldest first, so every delta's base precedes it: `git index-pack --fix-thin` resolves a
    # delta twice, and fails, if its in-pack base comes later and is also in the repository.
    items: list[tuple[RawObject, RawObject | None]] = []
    sent: set[bytes] = set()
    for obj in reversed(commits):
        info = infos[obj.oid]
        parent_tree = infos[info.parents[0]].tree if info.parents else None
        await _collect_tree(repo, info.tree, parent_tree, items, sent)
        parent = (await gitrepo.read_objects(repo, info.parents[:1])) if info.parents else {}
        items.append((obj, parent.get(info.parents[0]) if info.parents else None))
    pack = await asyncio.to_thread(write_pack, items)
    return write_bundle(prerequisites, [(BUNDLE_REF, commit)], pack)


async def _collect_tree(repo: Repository, new: bytes, old: bytes | None,
                        items: list[tuple[RawObject, RawObject | None]], sent: set[bytes]) -> None:
    # Walks only where the new tree differs from the old; what is equal the receiver has.
    if new == old or new in sent:
        return
    found = await gitrepo.read_objects(repo, [new] if old is None else [new, old])
    if new not in found:
        raise UnknownObject(f"no tree {new.hex()} in the repository")
    old_obj = found.get(old) if old is not None else None
    sent.add(new)
    items.append((found[new], old_obj))
    old_entries = {e.name: e for e in parse_tree(old_obj.data)} if old_obj else {}
    for entry in parse_tree(found[new].data):
        before = old_entries.get(entry.name)
        if before is not None and before.oid == entry.oid:
            continue
        if entry.is_tree:
            await _collect_tree(repo, entry.oid, before.oid if before and before.is_tree else None,
                                items, sent)
        elif entry.oid not in sent:
            sent.add(entry.oid)
            wanted = [entry.oid] if before is None or before.is_tree else [entry.oid, before.oid]
            blobs = await gitrepo.read_objects(repo, wanted)
            if entry.oid not in blobs:
                raise UnknownObject(f"no blob {entry.oid.hex()} in the repository")
            base = blobs.get(before.oid) if before is not None else None
            items.append((blobs[entry.oid], base))


# -- applying


async def apply_bundle(repo: Repository, data: bytes, *, expect_commit: bytes,
                       allowed_paths: frozenset[str], max_bytes: int = MAX_BUNDLE_BYTES,
                       max_objects: int = MAX_BUNDLE_OBJECTS,
                       max_inflated_bytes: int = MAX_INFLATED_BYTES) -> None:
    """Checks a peer's bundle of `expect_commit` and stores its objects; BundleRejected if not.

    Nothing enters the repository unless every check passes (see the module's docstring).
    """
    if len(expect_commit) != 20:
        raise ValueError(f"expect_commit must be 20 bytes, got {len(expect_commit)}")
    if len(data) > max_bytes:
        raise BundleRejected(f"bundle of {len(data)} bytes is over the limit of {max_bytes}")
    header = parse_bundle_header(data)
    for name, oid in header.refs:
        if oid != expect_commit:
            raise BundleRejected(f"bundle ref {name.decode()} is {oid.hex()}, "
                                 f"the claim names {expect_commit.hex()}")
    for prerequisite in header.prerequisites:
        if not await gitrepo.has_commit(repo, prerequisite):
            raise BundleRejected(f"bundle needs commit {prerequisite.hex()}, which is not here")
    limits = PackLimits(max_objects, max_inflated_bytes, max_inflated_bytes)
    pack = data[header.pack_offset:]
    entries = await asyncio.to_thread(parse_pack, pack, limits)
    resolution = await asyncio.to_thread(resolve_pack, entries, {}, limits)
    if resolution.missing_bases:  # a thin pack: its deltas' bases should be here
        here = await gitrepo.read_objects(repo, resolution.missing_bases)
        resolution = await asyncio.to_thread(resolve_pack, entries, here, limits)
        if resolution.missing_bases:
            missing = ", ".join(sorted(oid.hex() for oid in resolution.missing_bases)[:3])
            raise BundleRejected(f"bundle's deltas need objects that are not here: {missing}")
    if len(resolution.objects) != len(entries):
        raise BundleRejected("bundle has deltas that resolve to nothing")
    check = _Check(repo, {o.oid: o for o in resolution.objects},
                   frozenset(p.encode() for p in allowed_paths))
    await check.history(expect_commit)
    order = {BLOB: 0, TREE: 1, COMMIT: 2}
    await gitrepo.add_objects(repo, sorted(resolution.objects, key=lambda o: order[o.kind]))


@dataclass
class _Check:
    """The walk from the claimed commit through everything the bundle brings."""

    repo: Repository
    carried: dict[bytes, RawObject]  # what the bundle brings, by id
    allowed: frozenset[bytes]
    reached: set[bytes] = field(default_factory=set)

    async def history(self, commit: bytes) -> None:
        if commit not in self.carried:
            if await gitrepo.has_commit(self.repo, commit):
                if self.carried:
                    raise BundleRejected(f"bundle carries {len(self.carried)} objects for a "
                                         "commit that is already here")
                return
            raise BundleRejected(f"bundle does not contain commit {commit.hex()}")
        pending = [commit]
        while pending:
            oid = pending.pop()
            if oid in self.reached:
                continue
            info = self._commit(oid)
            self.reached.add(oid)
            if len(info.parents) != 1:
                raise BundleRejected(f"commit {oid.hex()} has {len(info.parents)} parents, "
                                     "an experiment has exactly one")
            parent = info.parents[0]
            if parent in self.carried:
                pending.append(parent)
                parent_tree = self._commit(parent).tree
            else:
                here = (await gitrepo.read_objects(self.repo, [parent])).get(parent)
                if here is None or here.kind != COMMIT:
                    raise BundleRejected(f"parent {parent.hex()} of {oid.hex()} is not here")
                parent_tree = parse_commit(here.data).tree
            await self._tree(info.tree, parent_tree, b"", 0)
        stray = set(self.carried) - self.reached
        if stray:
            raise BundleRejected(f"bundle carries {len(stray)} objects that the claimed commit "
                                 f"does not use, e.g. {min(stray).hex()}")

    def _commit(self, oid: bytes) -> CommitInfo:
        obj = self.carried[oid]
        if obj.kind != COMMIT:
            raise BundleRejected(f"{oid.hex()} should be a commit, the bundle has another kind")
        return parse_commit(obj.data)

    async def _entries(self, oid: bytes) -> tuple[TreeEntry, ...]:
        obj = self.carried.get(oid)
        if obj is None:
            obj = (await gitrepo.read_objects(self.repo, [oid])).get(oid)
            if obj is None:
                raise BundleRejected(f"tree {oid.hex()} is neither in the bundle nor here")
        else:
            self.reached.add(oid)
        if obj.kind != TREE:
            raise BundleRejected(f"{oid.hex()} should be a tree")
        return parse_tree(obj.data)

    async def _tree(self, new: bytes, old: bytes | None, prefix: bytes, depth: int) -> None:
        if depth > MAX_TREE_DEPTH:
            raise BundleRejected(f"tree deeper than {MAX_TREE_DEPTH} directories")
        if new == old:
            return  # unchanged: the parent's, checked when the parent came
        new_entries = await self._entries(new)
        old_entries = {e.name: e for e in await self._entries(old)} if old is not None else {}
        for name in old_entries.keys() - {e.name for e in new_entries}:
            raise BundleRejected(f"commit deletes {(prefix + name).decode('utf-8', 'replace')}")
        for entry in new_entries:
            path = prefix + entry.name
            shown = path.decode("utf-8", "replace")
            before = old_entries.get(entry.name)
            if before is not None and (before.mode, before.oid) == (entry.mode, entry.oid):
                continue
            if before is not None and before.is_tree != entry.is_tree:
                raise BundleRejected(f"commit turns {shown} from a file into a directory or back")
            if entry.is_tree:
                await self._tree(entry.oid, before.oid if before else None, path + b"/", depth + 1)
                continue
            if path not in self.allowed:
                raise BundleRejected(f"commit changes {shown}, outside the allowed paths")
            if entry.mode != MODE_FILE:
                raise BundleRejected(f"{shown} has mode {entry.mode:o}; only 100644 files may change")
            await self._blob(entry.oid, shown)

    async def _blob(self, oid: bytes, shown: str) -> None:
        obj = self.carried.get(oid)
        if obj is not None:
            if obj.kind != BLOB:
                raise BundleRejected(f"{shown} should be a blob, the bundle has another kind")
            self.reached.add(oid)
            return
        here = (await gitrepo.read_objects(self.repo, [oid])).get(oid)
        if here is None or here.kind != BLOB:
            raise BundleRejected(f"{shown}'s content {oid.hex()} is neither in the bundle nor here")
