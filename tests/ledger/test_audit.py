"""The audit: a ledger written by the store passes; any edit of any stored byte is caught, by row.

Tampered files are made the way a tamperer would: copy the file, drop the append-only triggers
(they are part of the file), edit. One test does it with the `sqlite3` command-line tool.
"""
from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ledger import audit
from ledger.bodies import Fraud, Mint, Post, Transfer, Verify
from ledger.entry import Entry
from ledger.errors import StoreError
from ledger.feed import make_fraud
from ledger.keys import Identity
from ledger.spec import SignedSpec
from ledger.store import Ledger
from tests.ledger.factory import Feeds, claim, identity, make_spec, post, record_mint, seal, transfer, verify

CREATOR = identity(300)
VERIFIER = identity(301)
USERS = [identity(310 + i) for i in range(4)]
FORKER = identity(320)
TRIGGERS = ("entries_no_update", "entries_no_delete", "meta_no_update", "meta_no_delete", "entries_only_next")
COLUMNS = ("wire", "id", "chain", "author", "seq", "kind", "time_ms")


@dataclass(frozen=True)
class Built:
    path: Path
    signed: SignedSpec
    entries: list[Entry]
    bad_mint: Entry      # signed, stored, refused by the credit rules
    bad_transfer: Entry
    fraud: Entry


def history(signed: SignedSpec) -> tuple[list[Entry], Entry, Entry, Entry]:
    """A small swarm's life: claims, verifications, mints, payments, a refused mint and transfer, a fork."""
    feeds = Feeds(signed.swarm_id)
    rows: list[Entry] = []

    def add(who: Identity, body: object) -> Entry:
        entry = feeds.sign(who, body)  # type: ignore[arg-type]
        rows.append(entry)
        return entry

    best: float | None = None
    for n, value in enumerate([1.5, 1.4, 1.39, 1.2, 1.1, 1.05]):
        c = add(USERS[n % len(USERS)], claim(n + 1, value))
        add(VERIFIER, seal(c))
        v = add(VERIFIER, verify(c, value))
        add(VERIFIER, Mint(reason="verification", subject=v.id, quorum=[], to=VERIFIER.public_key,
                           amount=1000, value=None, prev_best=None))
        if best is None:
            add(VERIFIER, record_mint(c, [v], value, None, 0))
            best = value
        elif value < best - 0.01:
            add(VERIFIER, record_mint(c, [v], value, best, int(10**9 * (best - value))))
            best = value
        add(USERS[(n + 1) % len(USERS)], post(f"note {n}"))
    vmints = [e for e in rows if isinstance(e.body, Mint) and e.body.reason == "verification"]
    pay = add(VERIFIER, transfer(USERS[0], 1500, [vmints[0].id, vmints[1].id]))
    add(USERS[0], transfer(USERS[1], 700, [pay.id]))
    first_verify = next(e for e in rows if e.kind == "verify")
    bad_mint = add(VERIFIER, Mint(reason="verification", subject=first_verify.id, quorum=[], to=VERIFIER.public_key,
                                  amount=5000, value=None, prev_best=None))  # twice for one verify, wrong amount
    bad_transfer = add(USERS[2], transfer(USERS[3], 10**9, [rows[0].id]))  # spends what it never received
    a = add(FORKER, post("one"))
    b = feeds.sign_at(FORKER, 1, None, Post(channel="general", text="another", reply_to=None))
    fraud = add(USERS[3], make_fraud(a, b))
    return rows, bad_mint, bad_transfer, fraud


async def write_with_store(path: Path, signed: SignedSpec, entries: list[Entry]) -> None:
    async with Ledger.open(path, signed) as ledger:
        for entry in entries:
            outcome = await ledger.append(entry)
            assert outcome.status.value == "appended", outcome


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    path = tmp_path_factory.mktemp("ledger") / "base.sqlite"
    signed = make_spec(CREATOR, [VERIFIER])
    entries, bad_mint, bad_transfer, fraud = history(signed)
    asyncio.run(write_with_store(path, signed, entries))
    return Built(path, signed, entries, bad_mint, bad_transfer, fraud)


def copy_ledger(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    for suffix in ("-wal", "-shm"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")
    return dst


def tamper(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """What anyone with the file can do: drop the triggers, then edit."""
    conn = sqlite3.connect(path)
    try:
        for name in TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def append_raw(path: Path, signed: SignedSpec, entries: list[Entry]) -> None:
    """Rows the store would never write, with a correct chain: only the row checks can object."""
    conn = sqlite3.connect(path)
    try:
        last = conn.execute("SELECT row, chain FROM entries ORDER BY row DESC LIMIT 1").fetchone()
        rows, chain = last if last is not None else (0, signed.swarm_id)
        for entry in entries:
            rows += 1
            chain = hashlib.sha256(chain + entry.id).digest()
            conn.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (rows, entry.id, entry.author, entry.seq, entry.kind, entry.time_ms, entry.wire, chain))
        conn.commit()
    finally:
        conn.close()


# -- a valid file


def test_a_file_written_by_the_store_passes(built: Built) -> None:
    report = audit.audit_file(built.path)  # default: a pool on every core
    assert report.ok, report.problems
    assert report.first_problem is None
    assert report.rows == len(built.entries)
    assert report.swarm_id == built.signed.swarm_id
    assert report.authors == len({e.author for e in built.entries})
    assert sum(report.counts.values()) == report.rows
    assert report.counts["fraud"] == 1
    assert report.triggers_present
    assert report.entries_per_s > 0


def test_entries_refused_by_the_credit_rules_are_listed_with_their_rows(built: Built) -> None:
    report = audit.audit_file(built.path, workers=1)
    rows = {e.id: n for n, e in enumerate(built.entries, 1)}
    listed = {(i.row, i.kind) for i in report.invalid}
    assert (rows[built.bad_mint.id], "mint") in listed
    assert (rows[built.bad_transfer.id], "transfer") in listed
    assert report.invalid_count == len(report.invalid) == 2
    assert report.ok  # a node rightly stored them and the fold rightly ignored them


def test_strict_makes_refused_entries_failures_naming_the_first_row(built: Built) -> None:
    report = audit.audit_file(built.path, workers=1, strict=True)
    assert not report.ok
    first = min(n for n, e in enumerate(built.entries, 1) if e.id in (built.bad_mint.id, built.bad_transfer.id))
    assert report.first_problem is not None and report.first_problem.row == first
    assert "credit rules" in report.first_problem.what


def test_an_empty_ledger_passes(tmp_path: Path, built: Built) -> None:
    path = tmp_path / "empty.sqlite"
    asyncio.run(write_with_store(path, built.signed, []))
    report = audit.audit_file(path, workers=1)
    assert report.ok and report.rows == 0 and report.counts == {}


# -- any single changed byte is caught, naming the row


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.slow
def test_any_single_byte_change_of_a_stored_entry_is_caught_at_its_row(
    built: Built, tmp_path: Path, data: st.DataObject
) -> None:
    path = copy_ledger(built.path, tmp_path / "tampered.sqlite")
    row = data.draw(st.integers(1, len(built.entries)), label="row")
    column = data.draw(st.sampled_from(COLUMNS), label="column")
    conn = sqlite3.connect(path)
    (old,) = conn.execute(f"SELECT {column} FROM entries WHERE row = ?", (row,)).fetchone()
    conn.close()
    if isinstance(old, bytes):
        at = data.draw(st.integers(0, len(old) - 1), label="byte")
        flip = data.draw(st.integers(1, 255), label="xor")
        new: object = old[:at] + bytes([old[at] ^ flip]) + old[at + 1:]
    elif isinstance(old, int):
        new = old + data.draw(st.integers(-(1 << 40), 1 << 40).filter(lambda d: d != 0), label="delta")
    else:
        at = data.draw(st.integers(0, len(old) - 1), label="char")
        new = old[:at] + data.draw(st.characters(codec="ascii").filter(lambda c: c != old[at])) + old[at + 1:]
    try:
        tamper(path, f"UPDATE entries SET {column} = ? WHERE row = ?", (new, row))
    except sqlite3.IntegrityError:
        assume(False)  # e.g. a seq the author already holds: the file refuses the edit itself
    report = audit.audit_file(path, workers=1)
    assert not report.ok
    assert report.first_problem is not None
    assert report.first_problem.row == row, report.problems


def test_tampering_with_the_sqlite3_tool_is_caught_by_the_cli(built: Built, tmp_path: Path) -> None:
    path = copy_ledger(built.path, tmp_path / "t.sqlite")
    row = len(built.entries) // 2
    flip = (f"UPDATE entries SET wire = substr(wire, 1, 119) || "
            f"CASE WHEN substr(wire, 120, 1) = X'00' THEN X'01' ELSE X'00' END || substr(wire, 121) WHERE row = {row}")
    refused = subprocess.run(["sqlite3", str(path), flip], capture_output=True, text=True)
    assert refused.returncode != 0 and "append-only" in refused.stderr  # the triggers hold...
    subprocess.run(["sqlite3", str(path), f"DROP TRIGGER entries_no_update; {flip}"], check=True)  # ...until dropped
    result = subprocess.run([sys.executable, "-m", "ledger", "audit", "--workers", "1", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAILED: row {row}: signature does not verify" in result.stdout
    assert "append-only triggers are missing" in result.stdout
    assert "Traceback" not in result.stderr


def test_a_deleted_row_is_caught(built: Built, tmp_path: Path) -> None:
    path = copy_ledger(built.path, tmp_path / "t.sqlite")
    tamper(path, "DELETE FROM entries WHERE row = 5")
    report = audit.audit_file(path, workers=1)
    assert report.first_problem == audit.Problem(6, "rows jump from 4 to 6")


def test_swapped_rows_are_caught(built: Built, tmp_path: Path) -> None:
    path = copy_ledger(built.path, tmp_path / "t.sqlite")
    conn = sqlite3.connect(path)
    a = conn.execute("SELECT id, author, seq, kind, time_ms, wire FROM entries WHERE row = 3").fetchone()
    b = conn.execute("SELECT id, author, seq, kind, time_ms, wire FROM entries WHERE row = 4").fetchone()
    conn.close()
    tamper(path, "DELETE FROM entries WHERE row IN (3, 4)")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO entries(row, id, author, seq, kind, time_ms, wire, chain) "
                 "SELECT 3, ?, ?, ?, ?, ?, ?, X'00'", b)
    conn.execute("INSERT INTO entries(row, id, author, seq, kind, time_ms, wire, chain) "
                 "SELECT 4, ?, ?, ?, ?, ?, ?, X'00'", a)
    conn.commit()
    conn.close()
    report = audit.audit_file(path, workers=1)
    assert report.first_problem is not None and report.first_problem.row == 3


def test_a_row_out_of_its_feed_or_before_its_references_is_caught(built: Built, tmp_path: Path) -> None:
    feeds = Feeds(built.signed.swarm_id)
    stranger = identity(399)
    gap = feeds.sign_at(stranger, 2, b"\x01" * 32, post("seq 2 without seq 1"))
    dangling = feeds.sign_at(stranger, 1, None, Verify(
        claim=b"\x02" * 32, commit=b"\x03" * 20, platform_class="cpu-tiny", status="ok", val_bpb=1.0,
        num_steps=1, seed=1, training_s=1.0))
    for bad, what in ((gap, "jumps from seq 0 to 2"), (dangling, "which no earlier row holds")):
        path = copy_ledger(built.path, tmp_path / f"t{bad.seq}.sqlite")
        append_raw(path, built.signed, [bad])
        report = audit.audit_file(path, workers=1)
        assert report.first_problem is not None
        assert report.first_problem.row == len(built.entries) + 1
        assert what in report.first_problem.what


def test_an_entry_of_another_swarm_is_caught(built: Built, tmp_path: Path) -> None:
    other = make_spec(CREATOR, [VERIFIER], quorum=1, verify_ucr=7)
    alien = Feeds(other.swarm_id).sign(identity(398), post("wrong swarm"))
    path = copy_ledger(built.path, tmp_path / "t.sqlite")
    append_raw(path, built.signed, [alien])
    report = audit.audit_file(path, workers=1)
    assert report.first_problem == audit.Problem(len(built.entries) + 1, "entry does not decode: entry belongs to another swarm")


def test_a_bad_fork_proof_is_listed_as_invalid(built: Built, tmp_path: Path) -> None:
    feeds = Feeds(built.signed.swarm_id)
    x = feeds.sign(identity(397), post("x"))
    y = Feeds(built.signed.swarm_id).sign(identity(396), post("y"))
    bogus = Feeds(built.signed.swarm_id).sign(identity(395), Fraud(first=min(x.wire, y.wire), second=max(x.wire, y.wire)))
    path = copy_ledger(built.path, tmp_path / "t.sqlite")
    append_raw(path, built.signed, [bogus])
    report = audit.audit_file(path, workers=1)
    assert any(i.row == len(built.entries) + 1 and i.kind == "fraud" for i in report.invalid)


# -- the derived tables and the spec


@pytest.mark.parametrize(
    ("sql", "table"),
    [
        ("UPDATE balances SET ucr = ucr + 1 WHERE rowid = (SELECT min(rowid) FROM balances)", "balances"),
        ("INSERT INTO balances VALUES (X'" + "ab" * 32 + "', 5)", "balances"),
        ("DELETE FROM frozen", "frozen"),
        ("UPDATE verdicts SET reason = '' WHERE reason != ''", "verdicts"),
        ("UPDATE records SET value = value - 0.5 WHERE n = 1", "records"),
        ("DELETE FROM records WHERE n = 2", "records"),
    ],
)
def test_an_edited_derived_table_is_caught(built: Built, tmp_path: Path, sql: str, table: str) -> None:
    path = copy_ledger(built.path, tmp_path / "t.sqlite")
    tamper(path, sql)
    report = audit.audit_file(path, workers=1)
    assert not report.ok
    assert report.first_problem is not None and report.first_problem.row is None
    assert report.first_problem.what.startswith(f"derived table {table}: ")
    assert "file says" in report.first_problem.what and "fold says" in report.first_problem.what


def test_a_changed_spec_is_caught(built: Built, tmp_path: Path) -> None:
    path = copy_ledger(built.path, tmp_path / "t.sqlite")
    tamper(path, "UPDATE meta SET value = substr(value, 1, 150) || X'ff' || substr(value, 152) WHERE key = 'spec'")
    report = audit.audit_file(path, workers=1)
    assert not report.ok
    assert report.first_problem is not None and report.first_problem.what.startswith("meta: the spec is invalid")


# -- not a ledger at all


def test_what_is_not_a_ledger_raises_store_error(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "junk").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "dir").mkdir()
    other = sqlite3.connect(tmp_path / "other.sqlite")
    other.execute("CREATE TABLE t(x)")
    other.close()
    foreign = sqlite3.connect(tmp_path / "foreign.sqlite")
    foreign.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB NOT NULL)")
    foreign.execute("CREATE TABLE entries(row INTEGER PRIMARY KEY)")
    foreign.execute("INSERT INTO meta VALUES ('format', X'00')")
    foreign.commit()
    foreign.close()
    for name in ("missing", "empty", "junk", "dir", "other.sqlite", "foreign.sqlite"):
        with pytest.raises(StoreError):
            audit.audit_file(tmp_path / name, workers=1)


def test_a_fork_proof_after_a_refused_entry_of_the_forked_author(tmp_path: Path) -> None:
    """The store folds incrementally, the audit from scratch: both must agree after a late fork proof.

    The forked author's mint is refused by the credit rules before the proof arrives (no effect, so
    no rebuild); from scratch it is refused because the author is frozen. The verdicts must match.
    """
    signed = make_spec(CREATOR, [VERIFIER])
    feeds = Feeds(signed.swarm_id)
    forker, witness = identity(330), identity(331)
    first = feeds.sign(forker, post("one"))
    mint = feeds.sign(forker, Mint(reason="verification", subject=first.id, quorum=[], to=forker.public_key,
                                   amount=1000, value=None, prev_best=None))
    other = feeds.sign_at(forker, 1, None, Post(channel="general", text="two", reply_to=None))
    proof = feeds.sign(witness, make_fraud(first, other))
    path = tmp_path / "fork.sqlite"
    asyncio.run(write_with_store(path, signed, [first, mint, proof]))
    report = audit.audit_file(path, workers=1)
    assert report.ok, report.problems
    assert [(i.row, i.kind) for i in report.invalid] == [(2, "mint")]


def test_a_dropped_derived_table_is_a_problem_not_a_crash(built: Built, tmp_path: Path) -> None:
    path = copy_ledger(built.path, tmp_path / "t.sqlite")
    tamper(path, "DROP TABLE records")
    report = audit.audit_file(path, workers=1)
    assert report.first_problem is not None and "derived tables cannot be read" in report.first_problem.what


def test_a_file_being_appended_to_audits_from_one_snapshot(built: Built, tmp_path: Path) -> None:
    """An audit of a live node's file: rows committed meanwhile are simply not part of this audit."""
    path = copy_ledger(built.path, tmp_path / "live.sqlite")
    feeds = Feeds(built.signed.swarm_id, heads={e.author: (e.seq, e.id) for e in built.entries})
    paid = next(e for e in built.entries if isinstance(e.body, Transfer) and e.author == USERS[0].public_key)
    # entries that change the derived tables: a snapshot that mixed old rows with new tables would not fold
    extra = [feeds.sign(USERS[1], transfer(USERS[2], 300, [paid.id])), feeds.sign(identity(380), post("late"))]
    original_check = audit._Auditor.check_chunk
    appended: list[int] = []

    def check_and_append(self: audit._Auditor, rows: list[audit.Row], reasons: list[str | None]) -> None:
        if not appended:
            asyncio.run(write_with_store_appending(path, built.signed, extra))
            appended.append(1)
        original_check(self, rows, reasons)

    audit._Auditor.check_chunk = check_and_append  # type: ignore[method-assign]
    try:
        report = audit.audit_file(path, workers=1)
    finally:
        audit._Auditor.check_chunk = original_check  # type: ignore[method-assign]
    assert report.ok, report.problems
    assert report.rows == len(built.entries)
    assert audit.audit_file(path, workers=1).rows == len(built.entries) + 2


async def write_with_store_appending(path: Path, signed: SignedSpec, entries: list[Entry]) -> None:
    async with Ledger.open(path, signed) as ledger:
        for entry in entries:
            assert (await ledger.append(entry)).status.value == "appended"


def test_one_bad_row_is_one_row_problem_not_one_per_later_entry(built: Built, tmp_path: Path) -> None:
    # the author's first claim: many later rows of that feed and references to it follow
    path = copy_ledger(built.path, tmp_path / "one-bad-row.sqlite")
    for edit in ("CAST(substr(wire, 1, 100) || X'00' AS BLOB)", "'text, not bytes'", "X'00'"):
        path.unlink()
        copy_ledger(built.path, path)
        tamper(path, f"UPDATE entries SET wire = {edit} WHERE row = 1")
        report = audit.audit_file(path, workers=1)
        assert [p.row for p in report.problems if p.row is not None] == [1], edit


def test_progress_goes_to_stderr_on_large_files(built: Built, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    audit.audit_file(built.path, workers=1, progress=True)
    assert capsys.readouterr().err == ""  # a small file: no bar
    monkeypatch.setattr(audit, "PROGRESS_MIN_ROWS", 1)
    audit.audit_file(built.path, workers=1, progress=True)
    captured = capsys.readouterr()
    assert "audit" in captured.err and f"{len(built.entries)}/{len(built.entries)}" in captured.err
    assert captured.out == ""


def _rebuild_without_constraints(path: Path, table: str, columns: str) -> None:
    """What a tamperer does to store values the schema forbids: copy the table into an untyped one."""
    conn = sqlite3.connect(path)
    try:
        for name in TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
        conn.executescript(f"""CREATE TABLE copy AS SELECT * FROM {table}; DROP TABLE {table};
                               CREATE TABLE {table}({columns}); INSERT INTO {table} SELECT * FROM copy;
                               DROP TABLE copy;""")
    finally:
        conn.close()


@pytest.mark.parametrize("value", [None, "7", b"7", 7.5, -1])
def test_rows_of_any_sqlite_type_are_reported_not_crashed_on(built: Built, tmp_path: Path, value: object) -> None:
    path = copy_ledger(built.path, tmp_path / "t.sqlite")
    _rebuild_without_constraints(path, "entries", "row, id, author, seq, kind, time_ms, wire, chain")
    tamper(path, "UPDATE entries SET row = ? WHERE rowid = 7", (value,))
    report = audit.audit_file(path, workers=1)
    assert not report.ok and report.first_problem is not None and report.first_problem.row is not None
    _rebuild_without_constraints(path, "balances", "author, ucr")
    tamper(path, "INSERT INTO balances VALUES (NULL, NULL)")
    assert any("derived table balances" in p.what for p in audit.audit_file(path, workers=1).problems)
