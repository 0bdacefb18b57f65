"""A node's git repository of experiments: the one module that calls dulwich.

Every function here is `async` and runs dulwich in a worker thread (`asyncio.to_thread`), so a
slow disk never blocks the event loop. dulwich and OS exceptions are translated into
`RepositoryError`/`UnknownObject` here and never escape. Writes go through one lock per
repository: dulwich's object store is not written from two threads at once.

Knows nothing about peers or bundles; `bundles.py` decides what may enter, this module only
reads and writes objects. Object ids cross this boundary as 20-byte `bytes`.
"""
from __future__ import annotations

import asyncio
import difflib
import re
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from dulwich.diff_tree import tree_changes
from dulwich.errors import ChecksumMismatch, NotGitRepository, ObjectFormatException
from dulwich.objects import Blob, Commit, ObjectID, RawObjectID, ShaFile, Tree
from dulwich.repo import Repo

from swarm.errors import BundleRejected, RepositoryError, UnknownObject
from swarm.gitobjects import BLOB, COMMIT, MODE_FILE, MODE_TREE, TREE, RawObject

WRITE_LOCK_TIMEOUT_S = 30.0  # a write waits this long for the one before it
MAX_DIFF_BYTES = 64 * 1024  # a diff is for people and agents to read, not a transport
MAX_DIFF_INPUT_BYTES = 1 << 20  # difflib is quadratic at worst; bigger files get a summary
_AUTHOR = re.compile(r"[^<>\n]+ <[^<>\n]*>")  # what `git fsck` accepts as an ident
_T = TypeVar("_T")


async def _in_thread(what: str, fn: Callable[..., _T], *args: object) -> _T:
    """Runs `fn` in a worker thread; disk and dulwich failures come back as RepositoryError."""
    try:
        return await asyncio.to_thread(fn, *args)
    except OSError as exc:
        raise RepositoryError(f"{what}: {exc}") from None
    except (ObjectFormatException, ChecksumMismatch, AssertionError) as exc:
        # Only our own stored objects reach dulwich's parsers here: the repository is damaged.
        raise RepositoryError(f"{what}: corrupt object: {exc!r}") from None


class _Opening:
    """`await Repository.open(path)` or `async with Repository.open(path) as repo`."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._repo: Repository | None = None

    def __await__(self) -> Generator[Any, None, Repository]:
        return Repository._open(self._path).__await__()

    async def __aenter__(self) -> Repository:
        self._repo = await Repository._open(self._path)
        return self._repo

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._repo is not None:
            await self._repo.aclose()


class Repository:
    """An open git repository. Build it with `Repository.open(path)`; close with `aclose()`."""

    def __init__(self, path: Path, repo: Repo) -> None:
        self.path = path
        self._repo = repo
        self._write_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def open(cls, path: str | Path) -> _Opening:
        """Opens the repository at `path`, creating a bare one if there is none."""
        return _Opening(Path(path))

    @classmethod
    async def _open(cls, path: Path) -> Repository:
        return cls(path, await _in_thread(str(path), _open_or_init, path))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await _in_thread(str(self.path), self._repo.close)

    def _live(self) -> Repo:
        if self._closed:
            raise RepositoryError(f"{self.path}: repository is closed")
        return self._repo


def _open_or_init(path: Path) -> Repo:
    try:
        if not path.exists() or (path.is_dir() and not any(path.iterdir())):
            path.mkdir(parents=True, exist_ok=True)
            return Repo.init_bare(str(path))
        return Repo(str(path))
    except NotGitRepository:
        raise RepositoryError(f"{path}: exists and is not a git repository") from None
    except OSError as exc:
        raise RepositoryError(f"{path}: {exc}") from None


def _get(repo: Repo, oid: bytes) -> RawObject | None:
    try:
        kind, data = repo.object_store.get_raw(RawObjectID(oid))
    except KeyError:
        return None
    except OSError as exc:
        raise RepositoryError(f"reading {oid.hex()}: {exc}") from None
    if kind not in (COMMIT, TREE, BLOB):
        return None  # a tag: never part of an experiment
    return RawObject(kind, data, oid)


def _require(repo: Repo, oid: bytes, kind: int) -> RawObject:
    obj = _get(repo, oid)
    if obj is None or obj.kind != kind:
        what = {COMMIT: "commit", TREE: "tree", BLOB: "blob"}[kind]
        raise UnknownObject(f"no {what} {oid.hex()} in the repository")
    return obj


def _check_oid(oid: bytes) -> None:
    if len(oid) != 20:
        raise ValueError(f"object ids are 20 bytes, got {len(oid)}")


# -- reading


async def has_commit(repo: Repository, commit: bytes) -> bool:
    _check_oid(commit)
    obj = await _in_thread("has_commit", _get, repo._live(), commit)
    return obj is not None and obj.kind == COMMIT


async def has_object(repo: Repository, oid: bytes) -> bool:
    _check_oid(oid)
    return await _in_thread("has_object", _get, repo._live(), oid) is not None


async def read_objects(repo: Repository, oids: Collection[bytes]) -> dict[bytes, RawObject]:
    """The commits, trees and blobs among `oids` that the repository holds; absent ones are left out."""
    for oid in oids:
        _check_oid(oid)
    live = repo._live()

    def read() -> dict[bytes, RawObject]:
        found = {oid: _get(live, oid) for oid in oids}
        return {oid: obj for oid, obj in found.items() if obj is not None}

    return await _in_thread("read_objects", read)


def _file_at(repo: Repo, commit: bytes, path: str) -> bytes | None:
    tree = _tree_of(repo, commit)
    parts = path.split("/")
    for depth, part in enumerate(parts):
        entry = {e.path: e for e in Tree.from_string(tree.data).iteritems()}.get(part.encode())
        if entry is None:
            return None
        oid = bytes.fromhex(entry.sha.decode())
        if depth == len(parts) - 1:
            return _require(repo, oid, BLOB).data if entry.mode != MODE_TREE else None
        if entry.mode != MODE_TREE:
            return None
        tree = _require(repo, oid, TREE)
    return None


def _tree_of(repo: Repo, commit: bytes) -> RawObject:
    parsed = Commit.from_string(_require(repo, commit, COMMIT).data)
    return _require(repo, bytes.fromhex(parsed.tree.decode()), TREE)


@dataclass(frozen=True, slots=True)
class CommitInfo:
    parents: tuple[bytes, ...]
    author: str
    time_s: int
    message: str


async def commit_info(repo: Repository, commit: bytes) -> CommitInfo:
    """A stored commit's parents, author, time and message (UnknownObject if not here)."""
    _check_oid(commit)
    live = repo._live()

    def run() -> CommitInfo:
        parsed = Commit.from_string(_require(live, commit, COMMIT).data)
        return CommitInfo(tuple(bytes.fromhex(p.decode()) for p in parsed.parents),
                          parsed.author.decode("utf-8", "replace"), int(parsed.author_time),
                          parsed.message.decode("utf-8", "replace"))

    return await _in_thread("commit_info", run)


async def read_file(repo: Repository, commit: bytes, path: str) -> bytes:
    _check_oid(commit)
    data = await _in_thread("read_file", _file_at, repo._live(), commit, path)
    if data is None:
        raise UnknownObject(f"commit {commit.hex()} has no file {path!r}")
    return data


async def diff(repo: Repository, a: bytes, b: bytes, path: str = "train.py", *,
               max_bytes: int = MAX_DIFF_BYTES) -> str:
    """Unified diff of `path` from commit `a` to commit `b`, cut at `max_bytes` characters."""
    _check_oid(a)
    _check_oid(b)
    live = repo._live()

    def run() -> str:
        old, new = _file_at(live, a, path) or b"", _file_at(live, b, path) or b""
        if max(len(old), len(new)) > MAX_DIFF_INPUT_BYTES:
            return f"{path}: {len(old)} -> {len(new)} bytes (too large to diff)\n"
        lines = difflib.unified_diff(
            old.decode("utf-8", "replace").splitlines(keepends=True),
            new.decode("utf-8", "replace").splitlines(keepends=True),
            fromfile=f"a/{path}", tofile=f"b/{path}",
        )
        text, size = [], 0
        for line in lines:
            line = line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
            size += len(line)
            if size > max_bytes:
                text.append(f"... diff cut at {max_bytes} characters\n")
                break
            text.append(line)
        return "".join(text)

    return await _in_thread("diff", run)


async def changed_paths(repo: Repository, parent: bytes | None, commit: bytes) -> set[str]:
    """Paths whose content or mode differs between the two commits (all paths when no parent)."""
    _check_oid(commit)
    live = repo._live()

    def run() -> set[str]:
        new = ObjectID(_tree_of(live, commit).oid.hex().encode())
        old = None if parent is None else ObjectID(_tree_of(live, parent).oid.hex().encode())
        paths: set[str] = set()
        try:
            for change in tree_changes(live.object_store, old, new):
                for side in (change.old, change.new):
                    if side is not None and side.path is not None:
                        paths.add(side.path.decode("utf-8", "replace"))
        except KeyError as exc:
            raise UnknownObject(f"tree object missing: {exc}") from None
        return paths

    return await _in_thread("changed_paths", run)


# -- writing


async def commit_file(repo: Repository, parent: bytes | None, files: Mapping[str, bytes],
                      message: str, author: str, time_s: int) -> bytes:
    """Records an experiment: `parent`'s tree with `files` (path -> content) written over it.

    Returns the new commit's 20-byte id. `author` is a git ident, `Name <email>`; the time is
    UTC seconds since the epoch and is passed in, so the same inputs give the same commit id.
    """
    if _AUTHOR.fullmatch(author) is None:
        raise ValueError(f"author must look like 'Name <email>', got {author!r}")
    if not files:
        raise ValueError("a commit needs at least one file")
    for path in files:
        parts = path.split("/")
        if any(p in ("", ".", "..") or p.lower() == ".git" for p in parts):
            raise ValueError(f"bad path {path!r}")
    if parent is not None:
        _check_oid(parent)
    live = repo._live()

    def run() -> bytes:
        store = live.object_store
        base = None if parent is None else _tree_of(live, parent).oid
        tree_oid = _write_tree(live, base, {tuple(p.split("/")): c for p, c in files.items()})
        commit = Commit()
        commit.tree = ObjectID(tree_oid.hex().encode())
        commit.parents = [] if parent is None else [ObjectID(parent.hex().encode())]
        commit.author = commit.committer = author.encode()
        commit.author_time = commit.commit_time = time_s
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = message.encode()
        store.add_object(commit)
        return bytes.fromhex(commit.id.decode())

    async with _writing(repo):
        return await _in_thread(f"{repo.path}: writing a commit", run)


def _write_tree(repo: Repo, base: bytes | None, files: dict[tuple[str, ...], bytes]) -> bytes:
    # Rewrites only the subtrees on the way to a changed file; the rest keep their ids.
    tree = Tree() if base is None else Tree.from_string(_require(repo, base, TREE).data)
    children: dict[str, dict[tuple[str, ...], bytes]] = {}
    for parts, content in files.items():
        if len(parts) == 1:
            blob = Blob.from_string(content)
            repo.object_store.add_object(blob)
            tree.add(parts[0].encode(), MODE_FILE, blob.id)
        else:
            children.setdefault(parts[0], {})[parts[1:]] = content
    for name, below in children.items():
        existing = {e.path: e for e in tree.iteritems()}.get(name.encode())
        if existing is not None and existing.mode != MODE_TREE:
            raise RepositoryError(f"{name!r} is a file, cannot hold {sorted(below)}")
        sub = None if existing is None else bytes.fromhex(existing.sha.decode())
        tree.add(name.encode(), MODE_TREE, ObjectID(_write_tree(repo, sub, below).hex().encode()))
    repo.object_store.add_object(tree)
    return bytes.fromhex(tree.id.decode())


async def add_objects(repo: Repository, objects: Sequence[RawObject]) -> None:
    """Stores checked objects, in the order given (blobs and trees before the commits naming them).

    Each object is parsed and `check()`ed by dulwich first, all before the first write; one that
    does not parse raises `BundleRejected` and nothing is written.
    """
    live = repo._live()

    def run() -> None:
        parsed: list[ShaFile] = []
        for obj in objects:
            try:
                shafile = ShaFile.from_raw_string(obj.kind, obj.data)
                shafile.check()
            except Exception as exc:  # dulwich raises AssertionError and friends on bad input
                raise BundleRejected(f"object {obj.oid.hex()} is not valid git: {exc!r}") from None
            if shafile.id != obj.oid.hex().encode():
                raise BundleRejected(f"object {obj.oid.hex()} hashes to {shafile.id.decode()}")
            parsed.append(shafile)
        for shafile in parsed:
            live.object_store.add_object(shafile)

    async with _writing(repo):
        await _in_thread(f"{repo.path}: writing objects", run)


class _writing:
    """Holds the repository's write lock, waiting at most WRITE_LOCK_TIMEOUT_S for it."""

    def __init__(self, repo: Repository) -> None:
        self._lock = repo._write_lock

    async def __aenter__(self) -> None:
        try:
            async with asyncio.timeout(WRITE_LOCK_TIMEOUT_S):
                await self._lock.acquire()
        except TimeoutError:
            raise RepositoryError(f"repository busy for {WRITE_LOCK_TIMEOUT_S} s") from None

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._lock.release()
