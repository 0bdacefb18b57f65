"""Offline audit of a ledger file: does every row still prove what it claims?

An offline tool, never run on a node's event loop: it reads the file with the stdlib `sqlite3`
in read-only mode (`?mode=ro`) and blocks as long as it needs. A node that wants to audit its own
file runs this in a thread or a subprocess.

Theory of operation. Rows are read in row order, CHUNK_ROWS at a time. A helper thread hands the
wires of chunk k+1 to the SignaturePool (worker processes on every core) while the main thread
checks chunk k: the row number, the row chain (each row's chain is H(previous chain || id), and
row 1 starts from the swarm id), the id column against the hash of the payload, the signature
verdict from the pool, the decoded entry against its columns, the author's feed (seq 1, 2, ...
each naming the previous id), the entry's references (each in an earlier row) and fork proofs.
Entries that pass are applied to the fold; at the end the fold's tables are compared with the
derived tables the file holds. Memory: two chunks of rows, the fold's state and the set of ids.

Each chain link is checked against the stored chain of the row before, so one edited row is
reported once instead of poisoning every later row; by induction the local checks prove the whole
chain. Mints and transfers that the credit rules refuse are not problems of the file: they are
signed entries a node rightly stored and the fold rightly ignored. They are listed apart and
become problems only with `strict`.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ledger import fold
from ledger.entry import Entry, decode_entry
from ledger.bodies import KEY_BYTES, Fraud
from ledger.errors import InvalidEntry, InvalidSpec, StoreError
from ledger.feed import check_fraud
from ledger.keys import SIGNATURE_BYTES, node_id_text
from ledger.schema import FORMAT, read_only_uri
from ledger.sigcheck import SignaturePool
from ledger.spec import SignedSpec, decode_spec

CHUNK_ROWS = 4096         # rows per read and per hand-off to the signature pool
MAX_PROBLEMS = 100        # kept in the report; the count covers all
MAX_INVALID = 1000
PROGRESS_MIN_ROWS = 20_000  # below this a bar only flickers
_HEADER_BYTES = KEY_BYTES + SIGNATURE_BYTES
# The store's triggers (ledger/schema.py). A file without them was edited by hand: worth a note,
# though the checks below do not rely on them.
APPEND_ONLY_TRIGGERS = frozenset(
    {f"{table}_no_{op}" for table in ("entries", "meta") for op in ("update", "delete")}
    | {"entries_only_next", "meta_only_new"}
)
_ROWS_SQL = "SELECT row, id, author, seq, kind, time_ms, wire, chain FROM entries ORDER BY row"

Row = tuple[Any, Any, Any, Any, Any, Any, Any, Any]  # as stored: any SQLite type in any column


@dataclass(frozen=True, slots=True)
class Problem:
    row: int | None  # None: the file's metadata or its derived tables
    what: str

    def __str__(self) -> str:
        return self.what if self.row is None else f"row {self.row}: {self.what}"


@dataclass(frozen=True, slots=True)
class Invalid:
    """A signed entry that the credit rules refuse (an unjustified mint, an overdrawn transfer)."""

    row: int
    kind: str
    author: bytes
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.kind} by {node_id_text(self.author)[:12]} is invalid: {self.reason}"


@dataclass(frozen=True, slots=True)
class AuditReport:
    path: str
    swarm_id: bytes | None
    rows: int
    authors: int
    counts: dict[str, int]          # entries per kind
    problems: tuple[Problem, ...]   # the first MAX_PROBLEMS, earliest row first
    problem_count: int
    invalid: tuple[Invalid, ...]    # the first MAX_INVALID refused by the credit rules
    invalid_count: int
    strict: bool                    # invalid entries were counted as problems
    triggers_present: bool
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def first_problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    @property
    def entries_per_s(self) -> float:
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _order(problem: Problem) -> float:
    return problem.row if problem.row is not None else float("inf")  # derived tables after the rows


def _text_or_bytes(raw: bytes) -> str | bytes:
    # An edit like `wire = substr(wire, ...) || X'00'` stores TEXT that is not UTF-8; reading it
    # must yield a report about that row, not a decode error for the whole file.
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def open_readonly(path: Path) -> sqlite3.Connection:
    """The file as a read-only connection; StoreError unless it holds a ledger's tables."""
    if not path.exists():
        raise StoreError(f"{path}: no such file")
    if not path.is_file():
        raise StoreError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise StoreError(f"{path}: empty file, not a ledger")
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True, isolation_level=None)
        conn.text_factory = _text_or_bytes
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")}
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: not a ledger ({exc})") from None
    if not {"meta", "entries"} <= names:
        conn.close()
        raise StoreError(f"{path}: not a ledger (no meta and entries tables)")
    return conn


def read_spec(conn: sqlite3.Connection, path: Path) -> SignedSpec:
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read its meta table: {exc}") from None
    if meta.get("format") != FORMAT:
        raise StoreError(f"{path}: not a ledger of format {FORMAT.decode()} (format {meta.get('format')!r})")
    wire = meta.get("spec")
    if type(wire) is not bytes:
        raise InvalidSpec("meta: the spec is missing")
    try:
        return decode_spec(wire)
    except InvalidSpec as exc:
        raise InvalidSpec(f"meta: the spec is invalid: {exc}") from None


class _Auditor:
    """The per-row checks; state that carries from row to row lives here."""

    def __init__(self, signed: SignedSpec) -> None:
        self.swarm_id = signed.swarm_id
        self.state = fold.initial(signed.spec)
        self.spec = signed.spec
        self.expected_row = 1
        self.rows_read = 0
        self.prev_chain = self.swarm_id
        self.heads: dict[bytes, tuple[int, bytes]] = {}
        self.seen: set[bytes] = set()
        self.counts: Counter[str] = Counter()
        self.problems: list[Problem] = []
        self.problem_count = 0
        self.rejected_rows: set[int] = set()
        self.judged: dict[bytes, tuple[int, str, bytes]] = {}  # id -> (row, kind, author) of judged kinds
        self.saw_fraud = False

    def problem(self, row: int | None, what: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(row, what))

    def reject(self, row: int, what: str, author: Any = None, seq: Any = None, entry_id: Any = None) -> None:
        """A row whose entry does not count. Its place in its feed is still taken (from the entry, or
        else from the row's columns) so that one bad row is one problem, not one per later entry."""
        self.rejected_rows.add(row)
        self.problem(row, what)
        if type(author) is bytes and type(seq) is int and type(entry_id) is bytes:
            self.heads[author] = (seq, entry_id)
            self.seen.add(entry_id)

    def check_chunk(self, rows: list[Row], sig_reasons: list[str | None]) -> None:
        for stored, sig_reason in zip(rows, sig_reasons):
            self.check_row(stored, sig_reason)

    def check_row(self, stored: Row, sig_reason: str | None) -> None:
        row, rid, author, seq, kind, time_ms, wire, chain = stored
        self.rows_read += 1
        if type(row) is not int:  # only in a table rebuilt by hand without INTEGER PRIMARY KEY
            self.problem(self.expected_row, f"row number {row!r} is not an integer")
            row = self.expected_row
        if row != self.expected_row:
            self.problem(row, f"rows jump from {self.expected_row - 1} to {row}")
        self.expected_row = row + 1
        if type(wire) is not bytes or len(wire) <= _HEADER_BYTES:
            self.prev_chain = chain if type(chain) is bytes else self.prev_chain
            return self.reject(row, "wire is not an entry's bytes", author, seq, rid)
        eid = hashlib.sha256(wire[_HEADER_BYTES:]).digest()
        chain_ok = type(chain) is bytes and hashlib.sha256(self.prev_chain + eid).digest() == chain
        if type(chain) is bytes:
            self.prev_chain = chain
        # One edit breaks several links (a changed wire has another id and chain): name the cause.
        if sig_reason is not None:
            return self.reject(row, sig_reason, author, seq, rid)
        if rid != eid:
            self.problem(row, "id column does not match the hash of the entry")
        elif not chain_ok:
            self.problem(row, "chain does not match (expected H(previous chain || id))")
        try:
            entry = decode_entry(wire, swarm=self.swarm_id, signature_checked=True)
        except InvalidEntry as exc:
            return self.reject(row, f"entry does not decode: {exc}", author, seq, rid)
        for name, column, actual in (
            ("author", author, entry.author), ("seq", seq, entry.seq),
            ("kind", kind, entry.kind), ("time_ms", time_ms, entry.time_ms),
        ):
            if column != actual or type(column) is not type(actual):
                self.problem(row, f"{name} column says {_shown(column)}, the entry says {_shown(actual)}")
        self.check_entry(row, entry)

    def check_entry(self, row: int, entry: Entry) -> None:
        head_seq, head_id = self.heads.get(entry.author, (0, None))
        place = (entry.author, entry.seq, entry.id)
        if entry.seq != head_seq + 1:
            return self.reject(
                row, f"feed of {node_id_text(entry.author)[:12]} jumps from seq {head_seq} to {entry.seq}", *place
            )
        if entry.prev != head_id:
            return self.reject(row, f"prev does not name the author's entry at seq {head_seq}", *place)
        for ref in entry.body.refs():
            if ref not in self.seen:
                return self.reject(row, f"refers to {ref.hex()[:16]}..., which no earlier row holds", *place)
        if isinstance(entry.body, Fraud):
            # A bad fork proof is a signed entry like any other: the store keeps it and the fold
            # judges it (a verdict, listed as invalid); only a good one freezes and needs a rebuild.
            try:
                check_fraud(entry.body, swarm=self.swarm_id)
                self.saw_fraud = True
            except InvalidEntry:
                pass
        self.heads[entry.author] = (entry.seq, entry.id)
        self.seen.add(entry.id)
        self.counts[entry.kind] += 1
        if entry.kind in fold.JUDGED_KINDS:
            self.judged[entry.id] = (row, entry.kind, entry.author)
        try:
            fold.apply(self.state, entry)
        except Exception as exc:  # a hostile file must yield a report, not a crash of the tool
            self.problem(row, f"the fold fails on this entry: {type(exc).__name__}: {exc}")


class _Replay:
    """The accepted entries again, for `fold.rebuild` (which reads them twice) after a fork proof."""

    def __init__(self, conn: sqlite3.Connection, swarm_id: bytes, skip: set[int]) -> None:
        self.conn, self.swarm_id, self.skip = conn, swarm_id, skip

    def __iter__(self) -> Iterator[Entry]:
        for row, wire in self.conn.execute("SELECT row, wire FROM entries ORDER BY row"):
            if row not in self.skip:
                # signatures were checked in the first pass
                yield decode_entry(wire, swarm=self.swarm_id, signature_checked=True)


def _read_tables(conn: sqlite3.Connection) -> fold.Tables:
    balances = {a: u for a, u in conn.execute("SELECT author, ucr FROM balances") if u != 0}
    frozen = dict(conn.execute("SELECT author, seq FROM frozen").fetchall())
    records = [
        fold.RecordRow(*r)
        for r in conn.execute(
            "SELECT platform_class, n, claim, commit_id, author, value, prev FROM records ORDER BY platform_class, n"
        )
    ]
    verdicts = dict(conn.execute("SELECT entry, reason FROM verdicts").fetchall())
    has_seals = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'seals'").fetchone()
    # a file written before seals existed has no such table and no seal entry: its seals are none
    seals = dict(conn.execute("SELECT claim, seal FROM seals").fetchall()) if has_seals else {}
    return fold.Tables(balances, frozen, records, verdicts, seals)


class _Absent:
    def __repr__(self) -> str:
        return "nothing"


_ABSENT = _Absent()  # a missing row, unlike a row holding NULL


def _shown(value: Any) -> str:
    return node_id_text(value) if type(value) is bytes and len(value) == KEY_BYTES else repr(value)


def _key_text(key: Any) -> str:
    if type(key) is bytes and len(key) == KEY_BYTES:
        return f"author {node_id_text(key)}"
    return key.hex() if type(key) is bytes else repr(key)


def _compare_tables(auditor: _Auditor, held: fold.Tables, want: fold.Tables) -> None:
    for name, file_map, fold_map in (
        ("balances", held.balances, want.balances), ("frozen", held.frozen, want.frozen),
        ("verdicts", held.verdicts, want.verdicts), ("seals", held.seals, want.seals),
    ):
        for key in sorted(set(file_map) | set(fold_map), key=repr):
            a, b = file_map.get(key, _ABSENT), fold_map.get(key, _ABSENT)
            if a != b:
                label = _key_text(key) if name not in ("verdicts", "seals") \
                    else f"entry {key.hex() if type(key) is bytes else key!r}"
                auditor.problem(None, f"derived table {name}: {label}: file says {a!r}, fold says {b!r}")
    by_key_file = {(r.platform_class, r.n): r for r in held.records}
    by_key_fold = {(r.platform_class, r.n): r for r in want.records}
    if len(by_key_file) != len(held.records):
        auditor.problem(None, "derived table records: a (platform_class, n) appears twice")
    for place in sorted(set(by_key_file) | set(by_key_fold), key=repr):
        a_rec, b_rec = by_key_file.get(place, _ABSENT), by_key_fold.get(place, _ABSENT)
        if a_rec != b_rec:
            auditor.problem(None, f"derived table records: {place[0]} #{place[1]}: file says {a_rec}, fold says {b_rec}")


def _sig_thread_check(pool: SignaturePool, rows: list[Row]) -> list[str | None]:
    return pool.check([r[6] if type(r[6]) is bytes else b"" for r in rows])


def audit_file(
    path: str | os.PathLike[str], *, workers: int | None = None, progress: bool = False, strict: bool = False
) -> AuditReport:
    """Checks the whole file. Raises StoreError when it is not a ledger at all (missing, empty, foreign)."""
    started = time.perf_counter()
    path = Path(path)
    conn = open_readonly(path)
    try:
        return _audit(conn, path, workers, progress, strict, started)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot be read: {exc}") from None
    finally:
        conn.close()


def _audit(
    conn: sqlite3.Connection, path: Path, workers: int | None, progress: bool, strict: bool, started: float
) -> AuditReport:
    # One read transaction: every query below sees the same snapshot, even while a node appends.
    conn.execute("BEGIN")
    triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    triggers_present = APPEND_ONLY_TRIGGERS <= triggers
    try:
        signed = read_spec(conn, path)
    except InvalidSpec as exc:
        return AuditReport(str(path), None, 0, 0, {}, (Problem(None, str(exc)),), 1, (), 0, strict,
                           triggers_present, time.perf_counter() - started)
    auditor = _Auditor(signed)
    total_rows = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    bar = tqdm(total=total_rows, unit="entry", file=sys.stderr, disable=not progress or total_rows < PROGRESS_MIN_ROWS,
               desc="audit", smoothing=0.1)
    cursor = conn.execute(_ROWS_SQL)
    with SignaturePool(workers) as pool, ThreadPoolExecutor(1, thread_name_prefix="audit-sig") as feeder, bar:
        chunk: list[Row] = cursor.fetchmany(CHUNK_ROWS)
        pending: Future[list[str | None]] | None = feeder.submit(_sig_thread_check, pool, chunk) if chunk else None
        while chunk and pending is not None:
            # read and dispatch chunk k+1 before checking chunk k, so the pool never waits on us
            following: list[Row] = cursor.fetchmany(CHUNK_ROWS)
            upcoming = feeder.submit(_sig_thread_check, pool, following) if following else None
            auditor.check_chunk(chunk, pending.result())
            bar.update(len(chunk))
            chunk, pending = following, upcoming
    state = auditor.state
    if auditor.saw_fraud or state.needs_rebuild:
        # a fork proof may void entries already applied, or a fact that judged entries read moved
        # after them (ledger/fold.py): fold afresh, fork proofs and facts first
        state = fold.rebuild(signed.spec, _Replay(conn, auditor.swarm_id, auditor.rejected_rows))
    want = fold.tables(state)
    try:
        held = _read_tables(conn)
    except sqlite3.Error as exc:  # dropped or reshaped by hand
        auditor.problem(None, f"derived tables cannot be read: {exc}")
    else:
        _compare_tables(auditor, held, want)
    invalid = sorted(
        (
            Invalid(row, kind, author, reason)
            for eid, reason in want.verdicts.items() if reason
            for row, kind, author in [auditor.judged.get(eid, (0, "?", b"\x00" * KEY_BYTES))]
        ),
        key=lambda item: item.row,
    )
    found = list(auditor.problems)
    problem_count = auditor.problem_count
    if strict:
        found += [Problem(i.row, f"{i.kind} is invalid by the credit rules: {i.reason}") for i in invalid[:MAX_PROBLEMS]]
        problem_count += len(invalid)
    problems = tuple(sorted(found, key=_order)[:MAX_PROBLEMS])
    return AuditReport(
        path=str(path), swarm_id=auditor.swarm_id, rows=auditor.rows_read, authors=len(auditor.heads),
        counts=dict(sorted(auditor.counts.items())), problems=problems, problem_count=problem_count,
        invalid=tuple(invalid[:MAX_INVALID]), invalid_count=len(invalid), strict=strict,
        triggers_present=triggers_present, elapsed_s=time.perf_counter() - started,
    )


