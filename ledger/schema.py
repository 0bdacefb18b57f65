"""The SQLite layout of a ledger file, and the blocking whole-file read the store runs in a thread.

Knows nothing about asyncio or the write path; `ledger/store.py` owns both. The audit reads the
same tables with its own code, so the layout below is a file format: change it only with FORMAT.

    meta(key, value)     ('format', FORMAT), ('spec', SignedSpec.wire); insert-only
    entries(row, ...)    rows 1, 2, 3, ...; chain = H(previous chain || id), row 1 chains from
                         the swarm id
    balances, frozen, records, verdicts, seals: the fold's derived tables, a cache that may be
                         rewritten (seals, claim -> its seal's id, came later: a file from before
                         gets it when a store opens it, and the audit reads its absence as empty)

Append-only is enforced inside SQLite, not only here: triggers refuse UPDATE and DELETE of entries
and meta, and a BEFORE INSERT trigger refuses any row that is not the next one or that would clash
with a held one, so INSERT OR REPLACE (which deletes without firing delete triggers) cannot
rewrite history either.
"""
from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ledger import fold
from ledger.entry import Entry, decode_entry
from ledger.errors import InvalidEntry, StoreError, Tampered
from ledger.feed import Head
from ledger.spec import SignedSpec

FORMAT = b"autoswarm-ledger/1"
APPEND_ONLY = "ledger rows are append-only"
DERIVED_TABLES = ("balances", "frozen", "records", "verdicts", "seals")
SEALS_TABLE = "CREATE TABLE seals(claim BLOB PRIMARY KEY, seal BLOB NOT NULL)"
READ_CHUNK_ROWS = 4096  # rows fetched per step of a whole-file read

SCHEMA: tuple[str, ...] = (
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    """CREATE TABLE entries(
        row INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, author BLOB NOT NULL, seq INTEGER NOT NULL,
        kind TEXT NOT NULL, time_ms INTEGER NOT NULL, wire BLOB NOT NULL, chain BLOB NOT NULL,
        UNIQUE(author, seq))""",
    *(
        f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
        for table in ("entries", "meta")
        for op in ("UPDATE", "DELETE")
    ),
    f"""CREATE TRIGGER entries_only_next BEFORE INSERT ON entries
        WHEN NEW.row IS NOT (SELECT IFNULL(MAX(row), 0) + 1 FROM entries)
          OR EXISTS (SELECT 1 FROM entries WHERE id = NEW.id)
          OR EXISTS (SELECT 1 FROM entries WHERE author = NEW.author AND seq = NEW.seq)
        BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END""",
    f"""CREATE TRIGGER meta_only_new BEFORE INSERT ON meta
        WHEN EXISTS (SELECT 1 FROM meta WHERE key = NEW.key)
        BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END""",
    "CREATE TABLE balances(author BLOB PRIMARY KEY, ucr INTEGER NOT NULL)",
    "CREATE TABLE frozen(author BLOB PRIMARY KEY, seq INTEGER NOT NULL)",
    """CREATE TABLE records(
        platform_class TEXT NOT NULL, n INTEGER NOT NULL, claim BLOB NOT NULL, commit_id BLOB NOT NULL,
        author BLOB NOT NULL, value REAL NOT NULL, prev REAL, PRIMARY KEY(platform_class, n))""",
    "CREATE TABLE verdicts(entry BLOB PRIMARY KEY, reason TEXT NOT NULL)",
    SEALS_TABLE,
)

INSERT_ENTRY = "INSERT INTO entries(row, id, author, seq, kind, time_ms, wire, chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
UPSERT = {
    "balances": "INSERT OR REPLACE INTO balances(author, ucr) VALUES (?, ?)",
    "frozen": "INSERT OR REPLACE INTO frozen(author, seq) VALUES (?, ?)",
    "records": "INSERT OR REPLACE INTO records(platform_class, n, claim, commit_id, author, value, prev) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)",
    "verdicts": "INSERT OR REPLACE INTO verdicts(entry, reason) VALUES (?, ?)",
    "seals": "INSERT OR REPLACE INTO seals(claim, seal) VALUES (?, ?)",
}

Row = tuple[int, bytes, bytes, int, str, int, bytes, bytes]  # as INSERT_ENTRY takes it


def next_chain(prev_chain: bytes, entry_id: bytes) -> bytes:
    return hashlib.sha256(prev_chain + entry_id).digest()


def read_only_uri(path: Path) -> str:
    return f"file:{quote(str(path.resolve()))}?mode=ro"


def change_rows(changes: fold.Changes) -> dict[str, list[tuple[object, ...]]]:
    """The derived rows to upsert, per table; empty tables left out."""
    rows: dict[str, list[tuple[object, ...]]] = {
        "balances": list(changes.balances.items()),
        "frozen": list(changes.frozen.items()),
        "records": [(r.platform_class, r.n, r.claim, r.commit, r.author, r.value, r.prev) for r in changes.records],
        "verdicts": list(changes.verdicts.items()),
        "seals": list(changes.seals.items()),
    }
    return {table: r for table, r in rows.items() if r}


@dataclass(slots=True)
class Loaded:
    """What the store keeps in memory, as read from the file's committed rows."""

    state: fold.State
    heads: dict[bytes, Head]
    ids: set[bytes]
    rows: int
    tip: bytes  # chain of the last row; the swarm id when there is none


class _Rows:
    """The file's entries in row order, re-iterable (fold.rebuild reads them twice)."""

    def __init__(self, conn: sqlite3.Connection, swarm_id: bytes, extra: list[Entry]) -> None:
        self.conn, self.swarm_id, self.extra = conn, swarm_id, extra

    def __iter__(self) -> Iterator[Entry]:
        cursor = self.conn.execute("SELECT wire FROM entries ORDER BY row")
        while chunk := cursor.fetchmany(READ_CHUNK_ROWS):
            for (wire,) in chunk:
                # rows were checked when appended and again when the file was opened
                yield decode_entry(wire, swarm=self.swarm_id, signature_checked=True)
        yield from self.extra


def _connect_ro(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(read_only_uri(path), uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot be read: {exc}") from None


def load(path: Path, signed: SignedSpec) -> Loaded:
    """Reads every committed row: checks row numbers, ids, chain links and feeds, and folds.

    Signatures are not checked again (they were when each row was appended; the full check is
    `python -m ledger audit`), so opening costs one decode and one apply per row.
    """
    conn = _connect_ro(path)
    try:
        return _load(conn, path, signed)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot be read: {exc}") from None
    finally:
        conn.close()


def _load(conn: sqlite3.Connection, path: Path, signed: SignedSpec) -> Loaded:
    swarm_id = signed.swarm_id
    state = fold.initial(signed.spec)
    heads: dict[bytes, Head] = {}
    ids: set[bytes] = set()
    tip, n = swarm_id, 0
    cursor = conn.execute("SELECT row, id, wire, chain FROM entries ORDER BY row")
    while chunk := cursor.fetchmany(READ_CHUNK_ROWS):
        for row, entry_id, wire, chain in chunk:
            n += 1
            where = f"{path}: row {row}"
            if row != n:
                raise Tampered(f"{where}: expected row {n}")
            try:
                entry = decode_entry(wire, swarm=swarm_id, signature_checked=True)
            except InvalidEntry as exc:
                raise Tampered(f"{where}: {exc}") from None
            tip = next_chain(tip, entry.id)
            if entry.id != entry_id or chain != tip:
                raise Tampered(f"{where}: id or chain does not match the entry")
            head = heads.get(entry.author)
            if entry.seq != (head.seq if head else 0) + 1 or entry.prev != (head.id if head else None):
                raise Tampered(f"{where}: breaks its author's feed")
            heads[entry.author] = Head(entry.seq, entry.id)
            ids.add(entry.id)
            fold.apply(state, entry)
    if state.needs_rebuild:
        state = fold.rebuild(signed.spec, _Rows(conn, swarm_id, []))
    fold.take_changes(state)  # the derived tables already hold all of it
    return Loaded(state, heads, ids, n, tip)


def rebuild(path: Path, signed: SignedSpec, uncommitted: list[Entry]) -> fold.State:
    """Folds afresh over the committed rows and then `uncommitted` (the transaction in flight)."""
    conn = _connect_ro(path)
    try:
        return fold.rebuild(signed.spec, _Rows(conn, signed.swarm_id, uncommitted))
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot be read: {exc}") from None
    except InvalidEntry as exc:
        raise Tampered(f"{path}: {exc}") from None
    finally:
        conn.close()
