"""The store: one SQLite file of signed entries, each row chained to the one before it.

Knows nothing about peers or networking: entries come in as `Entry` objects or wire bytes and
leave as wire bytes. The file layout is `ledger/schema.py`; the write path is `ledger/writer.py`.

- Writes. `append`, `append_wires` and `publish` hand entries to the one writer task, which
  places them (feed order, pending area, forks) and acknowledges each only after the
  transaction holding it committed; many waiting appends share one transaction and one fsync
  (group commit). `append_wires` checks signatures on every core before decoding.
- Reads. `heads()`, `head()` and `count()` show committed rows (kept in memory); `get` and
  `wires_after` use a second, read-only connection, which never sees an uncommitted row.
  `state` (the fold) may run ahead of the disk by the one transaction in flight.
- Opening reads every row once: row numbers, ids, chain links and feeds are checked and the
  fold is rebuilt; signatures are not checked again (`python -m ledger audit` does that).
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Generator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from ledger import fold, schema
from ledger.bodies import KEY_BYTES, Body
from ledger.entry import Entry, decode_entry, entry_hash, sign_entry
from ledger.errors import InvalidEntry, LedgerError, StoreError, Tampered
from ledger.feed import Head, feed_order
from ledger.keys import SIGNATURE_BYTES, Identity
from ledger.pending import (MAX_PENDING_AGE_S, MAX_PENDING_BYTES, MAX_PENDING_ENTRIES, MAX_PENDING_PER_AUTHOR,
                            Pending)
from ledger.sigcheck import SignaturePool
from ledger.spec import SignedSpec, decode_spec
from ledger.writer import Outcome, Status, Writer, rejected

__all__ = ["Ledger", "Outcome", "Status", "MAX_PENDING_BYTES", "MAX_PENDING_ENTRIES", "MAX_PENDING_PER_AUTHOR"]

APPEND_TIMEOUT_S = 60.0       # from submitting an append to its acknowledgement
CLOSE_TIMEOUT_S = 30.0        # for the writer to finish what was queued before close
MAX_WIRES_AFTER = 10_000      # entries one wires_after call returns at most
BUSY_TIMEOUT_S = 5.0          # SQLite waits this long for a lock another process holds
WRITER_CACHE_KIB = 32 * 1024  # page cache of the writer: the id and feed indexes stay in memory

_HEADER_BYTES = KEY_BYTES + SIGNATURE_BYTES  # author and signature before an entry's payload
_DUPLICATE = Outcome(Status.DUPLICATE, "already held")

_log = logging.getLogger(__name__)


class _Opening:
    """`await Ledger.open(...)` or `async with Ledger.open(...) as ledger`."""

    def __init__(self, path: Path, spec: SignedSpec | None, pending: Pending) -> None:
        self._path, self._spec, self._pending = path, spec, pending
        self._ledger: Ledger | None = None

    def __await__(self) -> Generator[Any, None, Ledger]:
        return Ledger._open(self._path, self._spec, self._pending).__await__()

    async def __aenter__(self) -> Ledger:
        self._ledger = await Ledger._open(self._path, self._spec, self._pending)
        return self._ledger

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ledger is not None:
            await self._ledger.aclose()


class Ledger:
    """An open ledger file. Build it with `Ledger.open(path, spec)`; close with `aclose()`."""

    def __init__(
        self, path: Path, signed: SignedSpec, db: aiosqlite.Connection, reader: aiosqlite.Connection,
        loaded: schema.Loaded, pending: Pending,
    ) -> None:
        self._path, self._signed, self._swarm_id = path, signed, signed.swarm_id
        self._db, self._reader = db, reader
        self._writer = Writer(path, signed, db, loaded, pending)
        self._reserved: dict[bytes, Head] = {}  # own entries signed and queued, not yet committed
        self._publish_lock = asyncio.Lock()
        self._wires_turn: asyncio.Event | None = None  # append_wires batches enqueue in call order
        self._sig_pool: SignaturePool | None = None
        self._closed = False

    # -- lifetime

    @classmethod
    def open(
        cls, path: str | Path, spec: SignedSpec | None = None, *,
        max_pending_entries: int = MAX_PENDING_ENTRIES, max_pending_per_author: int = MAX_PENDING_PER_AUTHOR,
        max_pending_bytes: int = MAX_PENDING_BYTES, max_pending_age_s: float = MAX_PENDING_AGE_S,
    ) -> _Opening:
        """Opens the file at `path`, creating it (which needs `spec`) if it does not exist."""
        pending = Pending(
            max_entries=max_pending_entries, max_per_author=max_pending_per_author, max_bytes=max_pending_bytes,
            max_age_s=max_pending_age_s,
        )
        return _Opening(Path(path), spec, pending)

    @classmethod
    async def _open(cls, path: Path, spec: SignedSpec | None, pending: Pending) -> Ledger:
        if path.is_dir():
            raise StoreError(f"{path}: is a directory, not an autoswarm ledger")
        if not path.exists() and spec is None:
            raise StoreError(f"{path}: no such ledger; creating one needs the swarm spec")
        db: aiosqlite.Connection | None = None
        reader: aiosqlite.Connection | None = None
        try:
            db = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
            await db.execute("PRAGMA synchronous=FULL")  # with WAL: durable at each COMMIT
            await db.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            signed = await _create_or_check(db, path, spec)
            mode = await db.execute_fetchall("PRAGMA journal_mode=WAL")
            if [tuple(r) for r in mode] != [("wal",)]:
                raise StoreError(f"{path}: cannot switch to WAL mode (got {list(mode)})")
            loaded = await asyncio.to_thread(schema.load, path, signed)
            reader = await aiosqlite.connect(schema.read_only_uri(path), uri=True)
            return cls(path, signed, db, reader, loaded, pending)
        except sqlite3.OperationalError as exc:  # cannot open, locked, I/O: the file may be fine
            await _close_quietly(db, reader)
            raise StoreError(f"{path}: {exc}") from None
        except sqlite3.Error as exc:  # "file is not a database" and friends
            await _close_quietly(db, reader)
            raise StoreError(f"{path}: not an autoswarm ledger ({exc})") from None
        except BaseException:
            await _close_quietly(db, reader)
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._writer.stop(CLOSE_TIMEOUT_S)  # after everything queued before close
        finally:
            if self._sig_pool is not None:
                await asyncio.to_thread(self._sig_pool.close)
            await _close_quietly(self._db, self._reader)

    async def __aenter__(self) -> Ledger:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- reading

    @property
    def spec(self) -> SignedSpec:
        return self._signed

    @property
    def swarm_id(self) -> bytes:
        return self._swarm_id

    @property
    def state(self) -> fold.State:
        """The fold's state; may include the one transaction in flight (see the module doc)."""
        return self._writer.state

    @property
    def pending_count(self) -> int:
        return len(self._writer.pending)

    @property
    def pending_dropped(self) -> int:
        """Waiting entries that turned out never appendable (broken chain, frozen author); logged."""
        return self._writer.pending_dropped

    async def head(self, author: bytes) -> Head | None:
        return self._writer.heads.get(author)

    async def heads(self) -> dict[bytes, int]:
        """Author -> highest committed seq: what anti-entropy compares."""
        return {author: head.seq for author, head in self._writer.heads.items()}

    async def count(self) -> int:
        return self._writer.rows

    async def get(self, entry_id: bytes) -> Entry | None:
        rows = await self._read("SELECT wire FROM entries WHERE id = ?", (entry_id,))
        return self._decode_stored(rows[0][0]) if rows else None

    async def wires_after(self, author: bytes, seq: int, limit: int) -> list[bytes]:
        """The author's entries after `seq`, in seq order, at most `limit` (capped at MAX_WIRES_AFTER)."""
        limit = max(0, min(limit, MAX_WIRES_AFTER))
        rows = await self._read(
            "SELECT wire FROM entries WHERE author = ? AND seq > ? ORDER BY seq LIMIT ?", (author, seq, limit)
        )
        return [bytes(r[0]) for r in rows]

    async def entries_since(self, row: int, kinds: Sequence[str], limit: int) -> list[tuple[int, Entry]]:
        """Committed entries of the given kinds after file row `row`, in row order, at most `limit`
        (capped at MAX_WIRES_AFTER): how an index (posts, a feed page) keeps up with the file."""
        limit = max(0, min(limit, MAX_WIRES_AFTER))
        marks = ",".join("?" * len(kinds))
        rows = await self._read(
            f"SELECT row, wire FROM entries WHERE row > ? AND kind IN ({marks}) ORDER BY row LIMIT ?",
            (row, *kinds, limit),
        ) if kinds else []
        return [(int(r[0]), self._decode_stored(bytes(r[1]))) for r in rows]

    async def _read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        self._check_open()
        try:
            return list(await self._reader.execute_fetchall(sql, args))
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: read failed: {exc}") from None

    def _decode_stored(self, wire: bytes) -> Entry:
        try:
            return decode_entry(wire, swarm=self._swarm_id, signature_checked=True)
        except InvalidEntry as exc:
            raise Tampered(f"{self._path}: a stored entry no longer decodes: {exc}") from None

    # -- writing

    async def append(self, entry: Entry) -> Outcome:
        """Appends one entry (already verified: it is an Entry); returns once it is durable or not taken."""
        return (await self._outcomes(await self._submit([entry])))[0]

    async def append_wires(self, wires: Sequence[bytes]) -> list[Outcome]:
        """Appends a peer's batch: one outcome per wire, in the order given.

        Signatures are checked on every core; each author's entries are put in seq order while
        the order across authors (usually the sender's row order) is kept. Concurrent calls
        reach the writer in the order they were made, so a peer may pipeline its batches.
        """
        self._check_open()
        previous, mine = self._wires_turn, asyncio.Event()
        self._wires_turn = mine
        try:
            outcomes: list[Outcome | None] = [None] * len(wires)
            fresh: list[int] = []
            held = self._writer.ids
            for i, wire in enumerate(wires):
                # an id we hold needs no signature check: the id covers the payload, whatever signs it
                if type(wire) is bytes and len(wire) > _HEADER_BYTES and entry_hash(wire[_HEADER_BYTES:]) in held:
                    outcomes[i] = _DUPLICATE
                else:
                    fresh.append(i)
            good: list[tuple[int, Entry]] = []
            for i, bad in zip(fresh, await self._check_signatures([wires[i] for i in fresh])):
                if bad is not None:
                    outcomes[i] = rejected(bad)
                    continue
                try:
                    good.append((i, decode_entry(wires[i], swarm=self._swarm_id, signature_checked=True)))
                except InvalidEntry as exc:
                    outcomes[i] = rejected(str(exc))
            good = feed_order(good)
            if previous is not None:
                async with asyncio.timeout(APPEND_TIMEOUT_S):
                    await previous.wait()
            future = await self._submit([entry for _, entry in good]) if good else None
        finally:
            mine.set()
        if future is not None:
            for (i, _), outcome in zip(good, await self._outcomes(future)):
                outcomes[i] = outcome
        return [o if o is not None else rejected("not placed") for o in outcomes]

    async def _check_signatures(self, wires: list[bytes]) -> list[str | None]:
        if self._sig_pool is None:
            self._sig_pool = SignaturePool()
        try:
            return await self._sig_pool.acheck(wires)
        except Exception as exc:  # a worker died (BrokenProcessPool): start afresh next time
            pool, self._sig_pool = self._sig_pool, None
            await asyncio.to_thread(pool.close)
            raise StoreError(f"signature check failed: {exc!r}") from None

    async def publish(self, identity: Identity, body: Body, *, time_ms: int) -> Entry:
        """Signs the node's own next entry and appends it; returns it once durable."""
        author = identity.public_key
        async with self._publish_lock:
            # seq and prev follow the last own entry queued, committed or not, so concurrent
            # publishers never take one seq twice (which would be a fork of our own feed)
            committed, queued = self._writer.heads.get(author), self._reserved.get(author)
            head = queued if queued is not None and (committed is None or queued.seq > committed.seq) else committed
            entry = sign_entry(
                identity, swarm=self._swarm_id, seq=(head.seq if head else 0) + 1,
                prev=head.id if head else None, body=body, time_ms=time_ms,
            )
            future = await self._submit([entry])
            self._reserved[author] = Head(entry.seq, entry.id)
        try:
            outcome = (await self._outcomes(future))[0]
        except BaseException:
            self._reserved.pop(author, None)
            raise
        if outcome.status is not Status.APPENDED:
            self._reserved.pop(author, None)
            raise StoreError(f"own entry at seq {entry.seq} was not appended: {outcome.status.value}, {outcome.reason}")
        return entry

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self._path}: the ledger is closed")
        if self._writer.failed is not None:
            raise self._writer.failed

    async def _submit(self, entries: list[Entry]) -> asyncio.Future[list[Outcome]]:
        self._check_open()
        return await self._writer.submit(entries, APPEND_TIMEOUT_S)

    async def _outcomes(self, future: asyncio.Future[list[Outcome]]) -> list[Outcome]:
        try:
            async with asyncio.timeout(APPEND_TIMEOUT_S):
                return await future
        except TimeoutError:
            raise StoreError(f"{self._path}: no acknowledgement within {APPEND_TIMEOUT_S} s") from None


async def _create_or_check(db: aiosqlite.Connection, path: Path, spec: SignedSpec | None) -> SignedSpec:
    """Writes schema and meta into a file with no tables; else checks format and spec."""
    names = {r[0] for r in await db.execute_fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not names:
        if spec is None:
            raise StoreError(f"{path}: not an autoswarm ledger (no tables); creating one needs the swarm spec")
        await db.execute("BEGIN IMMEDIATE")
        for statement in schema.SCHEMA:
            await db.execute(statement)
        first_rows = [("format", schema.FORMAT), ("spec", spec.wire)]
        await db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", first_rows)
        await db.execute("COMMIT")
        return spec
    if not {"meta", "entries"} <= names:
        raise StoreError(f"{path}: not an autoswarm ledger (no meta and entries tables)")
    rows = await db.execute_fetchall("SELECT key, value FROM meta WHERE key IN ('format', 'spec')")
    meta: dict[str, Any] = {r[0]: r[1] for r in rows}
    if meta.get("format") != schema.FORMAT:
        raise StoreError(f"{path}: not an autoswarm ledger (format {meta.get('format')!r})")
    try:
        stored = decode_spec(meta.get("spec"))  # type: ignore[arg-type]  # decode_spec checks the type
    except LedgerError as exc:
        raise Tampered(f"{path}: the stored swarm spec is invalid: {exc}") from None
    if spec is not None and spec.wire != stored.wire:
        raise StoreError(
            f"{path}: holds swarm {stored.swarm_id.hex()[:16]}, not the given swarm {spec.swarm_id.hex()[:16]}"
        )
    if "seals" not in names:
        # a file from before seals existed holds no seal entry, so the empty table is its true value
        await db.execute(schema.SEALS_TABLE)  # autocommit: the connection has no isolation level
    return stored


async def _close_quietly(*connections: aiosqlite.Connection | None) -> None:
    for conn in connections:
        if conn is not None:
            try:
                await conn.close()
            except sqlite3.Error as exc:
                _log.warning("closing a ledger connection failed: %r", exc)
