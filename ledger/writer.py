"""The writer: the one task that owns the one writer connection, and where entries are placed.

Knows nothing about peers, signatures or the public API (`ledger/store.py`); it takes decoded
entries and answers each with an `Outcome` once its transaction committed.

Group commit: requests wait on a bounded queue; the task takes every request waiting (up to
MAX_BATCH_ENTRIES entries), places all their entries, writes them and the fold's derived-table
changes in ONE transaction, and resolves the futures only after COMMIT returned. With WAL and
synchronous=FULL a returned COMMIT is on disk, so one fsync serves everyone who was waiting.

Placing an entry (`_classify`): other swarm, frozen author, duplicate, fork against a held or a
waiting entry, then `feed.place`. An entry whose dependencies (feed predecessor and body
references) are not all held waits in the pending area and is retried, transitively, in the
transaction that appends the last one it waited for.

Memory: heads, held ids, row count and chain tip change on a per-transaction overlay (`_Batch`)
merged only after COMMIT, so readers see committed rows. The fold state advances in place (its
changes go into the same transaction), so it may run ahead of the disk by the one transaction in
flight; if that transaction fails, every waiter gets the error and memory is reloaded from the
file: nothing is acknowledged that is not on disk.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ledger import fold, schema
from ledger.bodies import Fraud
from ledger.entry import Entry, decode_entry
from ledger.errors import InvalidEntry, LedgerError, StoreError, Tampered
from ledger.feed import Head, Place, make_fraud, place
from ledger.pending import Pending
from ledger.spec import SignedSpec

MAX_QUEUED_REQUESTS = 1024    # append requests waiting for the writer; more wait to enqueue
MAX_BATCH_ENTRIES = 8192      # entries per transaction (bounds one transaction's time and memory)

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


def _transaction(conn: sqlite3.Connection, writes: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """One whole write transaction, run in the writer connection's own thread."""
    conn.execute("BEGIN IMMEDIATE")
    for sql, rows in writes:
        conn.executemany(sql, rows)
    conn.execute("COMMIT")  # on error the transaction stays open: Writer._recover rolls it back


async def _in_db_thread(db: aiosqlite.Connection, fn: Callable[..., _T], *args: Any) -> _T:
    """Runs fn(sqlite3 connection, *args) in aiosqlite's thread for `db`: one thread round trip for
    a whole transaction, where a statement per call costs one each (about six per transaction;
    with many ledgers in one process, as in the swarm benchmark, those hand-offs and the GIL
    switches behind them were a large share of the CPU per entry). aiosqlite has no public call
    for this; `_execute` is what its every public method goes through."""
    conn: Any = db
    return await conn._execute(lambda: fn(conn._conn, *args))  # type: ignore[no-any-return]


class Status(enum.Enum):
    APPENDED = "appended"    # durable: its transaction committed
    DUPLICATE = "duplicate"  # already held
    PENDING = "pending"      # waits in memory for a dependency
    FORK = "fork"            # a different entry holds its (author, seq): `fraud` proves it
    REJECTED = "rejected"    # refused; `reason` says why


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    reason: str = ""
    fraud: Fraud | None = None  # the fork proof, exactly for FORK: publish it

    def __post_init__(self) -> None:
        if (self.status is Status.FORK) != (self.fraud is not None):
            raise ValueError("a fork outcome, and only that, carries a fraud body")


_APPENDED = Outcome(Status.APPENDED)
_DUPLICATE = Outcome(Status.DUPLICATE, "already held")


def rejected(reason: str) -> Outcome:
    return Outcome(Status.REJECTED, reason)


@dataclass(eq=False, slots=True)
class _Request:
    entries: list[Entry]
    future: asyncio.Future[list[Outcome]]


@dataclass(slots=True)
class _Batch:
    """One transaction's overlay over the committed in-memory view."""

    row: int
    tip: bytes
    rows: list[schema.Row] = field(default_factory=list)
    heads: dict[bytes, Head] = field(default_factory=dict)
    ids: set[bytes] = field(default_factory=set)
    appended: list[Entry] = field(default_factory=list)


class Writer:
    """Owns the writer connection and its task; `submit` entries, await the future's outcomes."""

    def __init__(
        self, path: Path, signed: SignedSpec, db: aiosqlite.Connection, loaded: schema.Loaded, pending: Pending
    ) -> None:
        self._path, self._signed, self._swarm_id, self._db = path, signed, signed.swarm_id, db
        # the committed view, read by the Ledger
        self.state, self.heads, self.ids = loaded.state, loaded.heads, loaded.ids
        self.rows, self._tip = loaded.rows, loaded.tip
        self.pending = pending
        self.pending_dropped = 0  # waiting entries that turned out never appendable (logged)
        self.failed: StoreError | None = None  # set when a failed transaction could not be undone
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue(maxsize=MAX_QUEUED_REQUESTS)
        self._task = asyncio.get_running_loop().create_task(self._write_loop(), name=f"ledger-writer:{path.name}")

    async def submit(self, entries: list[Entry], timeout_s: float) -> asyncio.Future[list[Outcome]]:
        if self.failed is not None:
            raise self.failed
        if self._task.done():
            raise StoreError(f"{self._path}: the ledger's writer has stopped")
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(timeout_s):
            await self._queue.put(_Request(entries, future))
        return future

    async def stop(self, timeout_s: float) -> None:
        """Writes everything queued so far, then ends the task (cancels it after `timeout_s`)."""
        try:
            async with asyncio.timeout(timeout_s):
                if not self._task.done():
                    await self._queue.put(None)
                await asyncio.shield(self._task)
        except TimeoutError:
            _log.error("ledger writer did not finish within %s s; cancelling it", timeout_s)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _write_loop(self) -> None:
        stopping = False
        try:
            while not stopping:
                first = await self._queue.get()
                if first is None:
                    break
                batch, size = [first], len(first.entries)
                while size < MAX_BATCH_ENTRIES and not self._queue.empty():
                    request = self._queue.get_nowait()
                    if request is None:
                        stopping = True
                        break
                    batch.append(request)
                    size += len(request.entries)
                await self._write_batch(batch)
        finally:
            # whatever is still queued (only if the writer was cancelled) is refused, not lost silently
            while not self._queue.empty():
                request = self._queue.get_nowait()
                if request is not None and not request.future.done():
                    request.future.set_exception(StoreError(f"{self._path}: the ledger closed before this append"))

    async def _write_batch(self, batch: list[_Request]) -> None:
        if self.failed is not None:  # memory no longer matches the file: write nothing more
            for request in batch:
                request.future.set_exception(self.failed)
            return
        expired = self.pending.expire(time.monotonic())  # outside the transaction: never undone
        if expired:
            self.pending_dropped += len(expired)
            _log.warning("dropped %d waiting entries whose dependencies never came within %.0f s",
                         len(expired), self.pending.max_age_s)
        work = _Batch(self.rows, self._tip)
        self.pending.begin()
        try:
            results = [[await self._admit(work, entry) for entry in request.entries] for request in batch]
            if work.rows:
                if self.state.needs_rebuild:
                    # a fork proof voided entries already folded: fold afresh (committed rows and
                    # this batch's entries), in a thread; nothing is written before it is done
                    self.state = await asyncio.to_thread(schema.rebuild, self._path, self._signed, work.appended)
                changes = fold.take_changes(self.state)
                writes: list[tuple[str, Sequence[Any]]] = [(schema.INSERT_ENTRY, work.rows)]
                if changes.replace_all:
                    writes += [(f"DELETE FROM {table}", [()]) for table in schema.DERIVED_TABLES]
                writes += [(schema.UPSERT[table], rows) for table, rows in schema.change_rows(changes).items()]
                await _in_db_thread(self._db, _transaction, writes)
        except BaseException as exc:
            await self._recover(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.pending.commit()
        self.heads.update(work.heads)
        self.ids |= work.ids
        self.rows, self._tip = work.row, work.tip
        for request, outcomes in zip(batch, results):
            if not request.future.done():
                request.future.set_result(outcomes)

    async def _recover(self, batch: list[_Request], exc: BaseException) -> None:
        """A transaction failed: nothing of it is acknowledged and memory goes back to the file."""
        _log.error("ledger transaction failed, rolled back: %r", exc)
        self.pending.rollback()
        error = exc if isinstance(exc, LedgerError) else StoreError(f"{self._path}: append failed: {exc!r}")
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)
        try:
            if self._db.in_transaction:
                await self._db.execute("ROLLBACK")
            loaded = await asyncio.to_thread(schema.load, self._path, self._signed)
        except (sqlite3.Error, LedgerError) as again:
            _log.critical("ledger cannot recover from a failed transaction: %r", again)
            self.failed = StoreError(f"{self._path}: unusable after a failed transaction ({again}); reopen it")
            return
        self.state, self.heads, self.ids = loaded.state, loaded.heads, loaded.ids
        self.rows, self._tip = loaded.rows, loaded.tip

    async def _admit(self, work: _Batch, entry: Entry) -> Outcome:
        outcome = await self._classify(work, entry)
        if outcome is _APPENDED:
            self._append_row(work, entry)
            await self._retry_waiting(work, entry)
        return outcome

    async def _classify(self, work: _Batch, entry: Entry) -> Outcome:
        """Where the entry goes. _APPENDED means: append now; PENDING: it was filed to wait."""
        if entry.swarm != self._swarm_id:
            return rejected("entry belongs to another swarm")
        if entry.id in work.ids or entry.id in self.ids:
            return _DUPLICATE  # held, even if its author froze since: nothing new, nothing wrong
        author, seq = entry.author, entry.seq
        frozen_at = self.state.frozen.get(author)
        if frozen_at is not None and seq >= frozen_at:
            return rejected(f"author is frozen from seq {frozen_at} by a fork proof")
        head = work.heads.get(author) or self.heads.get(author)
        if head is not None and seq <= head.seq:
            held = await self._held_at(work, author, seq)
            return Outcome(Status.FORK, f"fork: another entry is held at seq {seq}", make_fraud(held, entry))
        waiting = self.pending.at(author, seq)
        if waiting is not None:
            if waiting.id == entry.id:
                return Outcome(Status.PENDING, "already waiting")
            return Outcome(Status.FORK, f"fork: another entry waits at seq {seq}", make_fraud(waiting, entry))
        where = place(head, entry, None)
        if where is Place.BROKEN:
            return rejected(f"broken chain: prev is not the held entry at seq {seq - 1}")
        if where is Place.GAP:
            missing: bytes | None = entry.prev
        else:
            missing = next((d for d in entry.body.refs() if d not in work.ids and d not in self.ids), None)
        if missing is None:
            return _APPENDED
        full = self.pending.full_reason(entry)
        if full is not None:
            return rejected(full)
        self.pending.add(entry, missing, time.monotonic())
        return Outcome(Status.PENDING, f"waiting for entry {missing.hex()[:16]}")

    def _append_row(self, work: _Batch, entry: Entry) -> None:
        work.row += 1
        work.tip = schema.next_chain(work.tip, entry.id)
        work.rows.append((work.row, entry.id, entry.author, entry.seq, entry.kind, entry.time_ms, entry.wire, work.tip))
        work.heads[entry.author] = Head(entry.seq, entry.id)
        work.ids.add(entry.id)
        work.appended.append(entry)
        self.state = fold.apply(self.state, entry)
        if entry.kind == "fraud":
            # a proof may have frozen an author: its waiting entries from the fork on never count
            for author, seq in self.state.frozen.items():
                for dropped in self.pending.remove_author_from(author, seq):
                    self._drop(dropped, f"author is frozen from seq {seq}")

    async def _retry_waiting(self, work: _Batch, first: Entry) -> None:
        todo = deque([first])
        while todo:
            done = todo.popleft()
            following = self.pending.at(done.author, done.seq + 1)
            if following is not None and following.prev != done.id:
                self.pending.remove(done.author, done.seq + 1)
                self._drop(following, "broken chain: its prev is not the entry appended at the seq before")
            for entry in self.pending.release(done.id):
                outcome = await self._classify(work, entry)
                if outcome is _APPENDED:
                    self._append_row(work, entry)
                    todo.append(entry)
                elif outcome.status is not Status.PENDING:
                    self._drop(entry, outcome.reason)

    def _drop(self, entry: Entry, reason: str) -> None:
        self.pending_dropped += 1
        _log.warning("dropped waiting entry %s (seq %d): %s", entry.id.hex()[:16], entry.seq, reason)

    async def _held_at(self, work: _Batch, author: bytes, seq: int) -> Entry:
        if seq > (self.heads[author].seq if author in self.heads else 0):
            for entry in reversed(work.appended):
                if entry.author == author and entry.seq == seq:
                    return entry
        else:
            # the writer connection is outside any transaction while entries are placed: it
            # reads committed rows only
            rows = list(await self._db.execute_fetchall(
                "SELECT wire FROM entries WHERE author = ? AND seq = ?", (author, seq)))
            if rows:
                try:
                    return decode_entry(bytes(rows[0][0]), swarm=self._swarm_id, signature_checked=True)
                except InvalidEntry as exc:
                    raise Tampered(f"{self._path}: a stored entry no longer decodes: {exc}") from None
        raise StoreError(f"{self._path}: nothing held at seq {seq} below the author's head")
