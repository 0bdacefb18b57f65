"""The store on real SQLite files: append, close, reopen, compare; feeds, pending, forks, triggers."""
from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from ledger import fold, schema, store
from ledger.bodies import Fraud, Mint
from ledger.entry import Entry, sign_entry
from ledger.errors import StoreError, Tampered
from ledger.feed import check_fraud
from ledger.spec import SignedSpec
from ledger.store import Ledger, Status
from tests.ledger.factory import Feeds, claim, identity, make_spec, post, seal, valid_history, verify

CREATOR = identity(200)
VERIFIERS = [identity(201), identity(202)]
USERS = [identity(210 + i) for i in range(6)]
SPEC = make_spec(CREATOR, VERIFIERS, quorum=1)
OTHER_SPEC = make_spec(identity(299), VERIFIERS, quorum=1)


def history(steps: int, seed: int, spec: SignedSpec = SPEC) -> list[Entry]:
    return valid_history(spec, VERIFIERS, USERS, steps=steps, seed=seed)


def raw_rows(path: Path) -> list[tuple[int, bytes, bytes, bytes]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT row, id, wire, chain FROM entries ORDER BY row").fetchall()


def chain_ok(path: Path, swarm_id: bytes) -> bool:
    tip = swarm_id
    for n, (row, entry_id, _, chain) in enumerate(raw_rows(path), start=1):
        tip = schema.next_chain(tip, entry_id)
        if row != n or chain != tip:
            return False
    return True


async def test_append_close_reopen_compare(tmp_path: Path) -> None:
    path = tmp_path / "a.ledger"
    rows = history(300, seed=1)
    async with Ledger.open(path, SPEC) as ledger:
        outcomes = [await ledger.append(e) for e in rows]
        assert {o.status for o in outcomes} == {Status.APPENDED}
        tables, heads = fold.tables(ledger.state), await ledger.heads()
        assert await ledger.count() == len(rows)
    async with Ledger.open(path) as again:  # the stored spec is enough to reopen
        assert again.swarm_id == SPEC.swarm_id
        assert fold.tables(again.state) == tables
        assert await again.heads() == heads
        assert await again.count() == len(rows)
        assert await again.get(rows[17].id) == rows[17]
        assert await again.get(b"\x00" * 32) is None
        author = rows[0].author
        own = [e.wire for e in rows if e.author == author]
        assert await again.wires_after(author, 0, 1000) == own
        assert await again.wires_after(author, 2, 1) == own[2:3]
        claims = [e for e in rows if e.kind == "claim"]
        got = await again.entries_since(0, ["claim"], 1000)
        assert [e for _, e in got] == claims and [r for r, _ in got] == sorted(r for r, _ in got)
        assert [e for _, e in await again.entries_since(got[3][0], ["claim"], 2)] == claims[4:6]
        assert await again.entries_since(0, [], 10) == []
    assert [r[2] for r in raw_rows(path)] == [e.wire for e in rows]
    assert chain_ok(path, SPEC.swarm_id)


async def test_derived_tables_hold_the_fold(tmp_path: Path) -> None:
    path = tmp_path / "d.ledger"
    async with Ledger.open(path, SPEC) as ledger:
        for entry in history(200, seed=2):
            await ledger.append(entry)
        want = fold.tables(ledger.state)
    with sqlite3.connect(path) as conn:
        assert dict(conn.execute("SELECT author, ucr FROM balances").fetchall()) == want.balances
        assert dict(conn.execute("SELECT entry, reason FROM verdicts").fetchall()) == want.verdicts
        records = conn.execute("SELECT platform_class, n, claim, commit_id, author, value, prev FROM records "
                               "ORDER BY platform_class, n").fetchall()
        assert dict(conn.execute("SELECT claim, seal FROM seals").fetchall()) == want.seals
    assert [fold.RecordRow(*r) for r in records] == sorted(want.records, key=lambda r: (r.platform_class, r.n))
    assert want.balances and want.verdicts and want.seals  # the history did exercise the credit rules


async def test_duplicate(tmp_path: Path) -> None:
    entry = Feeds(SPEC.swarm_id).sign(USERS[0], post())
    async with Ledger.open(tmp_path / "l", SPEC) as ledger:
        assert (await ledger.append(entry)).status is Status.APPENDED
        assert (await ledger.append(entry)).status is Status.DUPLICATE
        assert [o.status for o in await ledger.append_wires([entry.wire, entry.wire])] == [Status.DUPLICATE] * 2
        assert await ledger.count() == 1


async def test_gap_waits_then_appends_in_feed_order(tmp_path: Path) -> None:
    feeds = Feeds(SPEC.swarm_id)
    e1, e2, e3 = (feeds.sign(USERS[0], post(str(i))) for i in range(3))
    path = tmp_path / "l"
    async with Ledger.open(path, SPEC) as ledger:
        assert (await ledger.append(e3)).status is Status.PENDING
        assert (await ledger.append(e2)).status is Status.PENDING
        assert (await ledger.append(e3)).status is Status.PENDING  # already waiting
        assert ledger.pending_count == 2 and await ledger.count() == 0
        assert await ledger.head(USERS[0].public_key) is None
        assert (await ledger.append(e1)).status is Status.APPENDED
        assert ledger.pending_count == 0
        assert (await ledger.head(USERS[0].public_key)).seq == 3  # type: ignore[union-attr]
    assert [r[1] for r in raw_rows(path)] == [e1.id, e2.id, e3.id]


async def test_body_reference_waits_for_its_entry(tmp_path: Path) -> None:
    feeds = Feeds(SPEC.swarm_id)
    c = feeds.sign(USERS[0], claim(1, 1.5))
    v = feeds.sign(VERIFIERS[0], verify(c, 1.5))
    async with Ledger.open(tmp_path / "l", SPEC) as ledger:
        outcome = await ledger.append(v)
        assert outcome.status is Status.PENDING and c.id.hex()[:16] in outcome.reason
        assert (await ledger.append(c)).status is Status.APPENDED
        assert await ledger.count() == 2 and ledger.pending_count == 0
        assert v.id in ledger.state.verifies


async def test_fork_against_held_entry_gives_a_checkable_proof(tmp_path: Path) -> None:
    feeds = Feeds(SPEC.swarm_id)
    held = feeds.sign(USERS[1], post("one"))
    other = feeds.sign_at(USERS[1], 1, None, post("two"))
    async with Ledger.open(tmp_path / "l", SPEC) as ledger:
        await ledger.append(held)
        outcome = await ledger.append(other)
        assert outcome.status is Status.FORK and outcome.fraud is not None
        assert check_fraud(outcome.fraud, swarm=SPEC.swarm_id) == (USERS[1].public_key, 1)
        assert await ledger.count() == 1


async def test_fork_between_waiting_entries(tmp_path: Path) -> None:
    feeds = Feeds(SPEC.swarm_id)
    e1 = feeds.sign(USERS[2], post("a"))
    e2 = feeds.sign(USERS[2], post("b"))
    e2_other = feeds.sign_at(USERS[2], 2, e1.id, post("c"))
    async with Ledger.open(tmp_path / "l", SPEC) as ledger:
        assert (await ledger.append(e2)).status is Status.PENDING
        outcome = await ledger.append(e2_other)
        assert outcome.status is Status.FORK and outcome.fraud is not None
        assert check_fraud(outcome.fraud, swarm=SPEC.swarm_id) == (USERS[2].public_key, 2)


async def test_fraud_entry_freezes_the_author(tmp_path: Path) -> None:
    feeds = Feeds(SPEC.swarm_id)
    cheat = USERS[3]
    e1 = feeds.sign(cheat, post("a"))
    e2 = feeds.sign(cheat, post("b"))
    e3 = feeds.sign(cheat, post("c"))
    e2_other = feeds.sign_at(cheat, 2, e1.id, post("other"))
    async with Ledger.open(tmp_path / "l", SPEC) as ledger:
        await ledger.append(e1)
        await ledger.append(e2)
        fork = await ledger.append(e2_other)
        assert fork.fraud is not None
        later = feeds.sign_at(cheat, 4, b"\x07" * 32, post("later"))
        assert (await ledger.append(later)).status is Status.PENDING  # waits for seq 3
        proof = await ledger.publish(USERS[0], fork.fraud, time_ms=5)
        assert proof.kind == "fraud" and ledger.state.frozen == {cheat.public_key: 2}
        assert ledger.pending_count == 0  # the waiting entry of the frozen feed was dropped
        for entry in (e3, later):
            outcome = await ledger.append(entry)
            assert outcome.status is Status.REJECTED and "frozen" in outcome.reason
        assert (await ledger.append(e1)).status is Status.DUPLICATE  # before the fork: still held
    async with Ledger.open(tmp_path / "l") as again:  # the freeze is in the file, not only in memory
        assert again.state.frozen == {cheat.public_key: 2}
        assert (await again.append(e3)).status is Status.REJECTED


async def test_fraud_after_counted_entries_rebuilds_the_fold(tmp_path: Path) -> None:
    feeds = Feeds(SPEC.swarm_id)
    cheat = VERIFIERS[1]
    c = feeds.sign(USERS[0], claim(1, 1.5))
    s = feeds.sign(VERIFIERS[0], seal(c))
    v = feeds.sign(cheat, verify(c, 1.5))
    m = feeds.sign(cheat, Mint(reason="verification", subject=v.id, quorum=[], to=cheat.public_key,
                               amount=1000, value=None, prev_best=None))
    v_other = feeds.sign_at(cheat, 1, None, post("fork"))
    path = tmp_path / "l"
    async with Ledger.open(path, SPEC) as ledger:
        for entry in (c, s, v, m):
            await ledger.append(entry)
        assert ledger.state.balances[cheat.public_key] == 1000
        fork = await ledger.append(v_other)
        assert fork.fraud is not None
        await ledger.publish(USERS[1], fork.fraud, time_ms=9)
        assert not ledger.state.balances.get(cheat.public_key)  # the mint counts for nothing now
        want = fold.tables(ledger.state)
    with sqlite3.connect(path) as conn:
        assert dict(conn.execute("SELECT author, ucr FROM balances").fetchall()).get(cheat.public_key, 0) == 0
    async with Ledger.open(path) as again:
        assert fold.tables(again.state) == want


async def test_pending_area_is_bounded(tmp_path: Path) -> None:
    feeds = Feeds(SPEC.swarm_id)
    rows = [feeds.sign(USERS[4], post(str(i))) for i in range(6)]
    stranger = Feeds(SPEC.swarm_id)
    s_rows = [stranger.sign(USERS[5], post(str(i))) for i in range(3)]
    async with Ledger.open(tmp_path / "l", SPEC, max_pending_entries=4, max_pending_per_author=3) as ledger:
        outcomes = [await ledger.append(e) for e in rows[1:]]
        assert [o.status for o in outcomes] == [Status.PENDING] * 3 + [Status.REJECTED] * 2
        assert "pending area full" in outcomes[-1].reason
        assert (await ledger.append(s_rows[1])).status is Status.PENDING
        full = await ledger.append(s_rows[2])
        assert full.status is Status.REJECTED and "pending area full" in full.reason
        assert ledger.pending_count == 4
        await ledger.append(rows[0])  # frees the author's waiting entries
        assert await ledger.count() == 4 and ledger.pending_count == 1


async def test_bad_wires_are_rejected_with_a_reason(tmp_path: Path) -> None:
    good = Feeds(SPEC.swarm_id).sign(USERS[0], post())
    foreign = Feeds(OTHER_SPEC.swarm_id).sign(USERS[0], post())
    forged = bytearray(good.wire)
    forged[40] ^= 1  # a signature byte
    tampered = bytearray(good.wire)
    tampered[-3] ^= 1  # a payload byte
    wires = [b"", b"\x00" * 200, bytes(forged), bytes(tampered), foreign.wire, good.wire]
    async with Ledger.open(tmp_path / "l", SPEC) as ledger:
        outcomes = await ledger.append_wires(wires)
        assert [o.status for o in outcomes] == [Status.REJECTED] * 5 + [Status.APPENDED]
        assert all(o.reason for o in outcomes[:5])
        assert "signature" in outcomes[2].reason and "signature" in outcomes[3].reason
        assert "another swarm" in outcomes[4].reason
        assert "another swarm" in (await ledger.append(foreign)).reason
        assert await ledger.count() == 1


async def test_broken_chain_is_rejected(tmp_path: Path) -> None:
    feeds = Feeds(SPEC.swarm_id)
    e1 = feeds.sign(USERS[0], post("a"))
    stray = sign_entry(USERS[0], swarm=SPEC.swarm_id, seq=2, prev=b"\x01" * 32, body=post("b"), time_ms=1)
    async with Ledger.open(tmp_path / "l", SPEC) as ledger:
        await ledger.append(e1)
        outcome = await ledger.append(stray)
        assert outcome.status is Status.REJECTED and "broken chain" in outcome.reason


async def test_shuffled_batches_end_equal_to_sequential(tmp_path: Path) -> None:
    rows = history(600, seed=3)
    async with Ledger.open(tmp_path / "seq", SPEC) as ledger:
        for entry in rows:
            await ledger.append(entry)
        want_tables, want_heads = fold.tables(ledger.state), await ledger.heads()
    wires = [e.wire for e in rows]
    random.Random(4).shuffle(wires)
    async with Ledger.open(tmp_path / "batch", SPEC) as ledger:
        results = await asyncio.gather(*(ledger.append_wires(wires[i : i + 150]) for i in range(0, len(wires), 150)))
        statuses = {o.status for batch in results for o in batch}
        assert statuses <= {Status.APPENDED, Status.PENDING}
        assert ledger.pending_count == 0 and await ledger.count() == len(rows)
        assert await ledger.heads() == want_heads
        got = fold.tables(ledger.state)
    assert got.balances == want_tables.balances and got.verdicts == want_tables.verdicts
    assert got.frozen == want_tables.frozen
    assert {r.claim for r in got.records} == {r.claim for r in want_tables.records}
    assert chain_ok(tmp_path / "batch", SPEC.swarm_id)


async def test_concurrent_publish_makes_a_contiguous_feed(tmp_path: Path) -> None:
    me = USERS[0]
    async with Ledger.open(tmp_path / "l", SPEC) as ledger:
        published = await asyncio.gather(*(ledger.publish(me, post(str(i)), time_ms=i) for i in range(200)))
        assert sorted(e.seq for e in published) == list(range(1, 201))
        feed = await ledger.wires_after(me.public_key, 0, 1000)
    by_seq = {e.seq: e for e in published}
    assert feed == [by_seq[s].wire for s in range(1, 201)]
    assert all(by_seq[s].prev == by_seq[s - 1].id for s in range(2, 201))


async def test_triggers_refuse_rewrites_inside_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "l"
    rows = history(5, seed=5)
    async with Ledger.open(path, SPEC) as ledger:
        for entry in rows:
            await ledger.append(entry)
    conn = sqlite3.connect(path)
    try:
        for sql, args in [
            ("UPDATE entries SET kind = 'post' WHERE row = 1", ()),
            ("DELETE FROM entries WHERE row = 5", ()),
            ("UPDATE meta SET value = x'00' WHERE key = 'format'", ()),
            ("DELETE FROM meta", ()),
            ("INSERT OR REPLACE INTO meta(key, value) VALUES ('spec', x'00')", ()),
            ("INSERT OR REPLACE INTO entries SELECT * FROM entries WHERE row = 2", ()),
            ("INSERT INTO entries(row, id, author, seq, kind, time_ms, wire, chain) "
             "VALUES (9, ?, ?, 1, 'post', 0, x'00', x'00')", (b"\x01" * 32, b"\x02" * 32)),
        ]:
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(sql, args)
        assert conn.execute("SELECT count(*) FROM entries").fetchone() == (len(rows),)
    finally:
        conn.close()
    async with Ledger.open(path) as again:
        assert await again.count() == len(rows)


async def test_failed_transaction_acknowledges_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.05)
    path = tmp_path / "l"
    feeds = Feeds(SPEC.swarm_id)
    e1, e2, e3 = (feeds.sign(USERS[0], post(str(i))) for i in range(3))
    async with Ledger.open(path, SPEC) as ledger:
        await ledger.append(e1)
        assert (await ledger.append(e3)).status is Status.PENDING
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(StoreError):
                await ledger.append(e2)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert await ledger.count() == 1 and ledger.pending_count == 1  # e3 still waits, e2 is not held
        assert (await ledger.head(USERS[0].public_key)).seq == 1  # type: ignore[union-attr]
        assert (await ledger.append(e2)).status is Status.APPENDED
        assert await ledger.count() == 3


async def test_refuses_what_is_not_its_ledger(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t(x)")
    for path in (garbage, foreign):
        with pytest.raises(StoreError, match="not an autoswarm ledger"):
            await Ledger.open(path, SPEC)
    with sqlite3.connect(foreign) as conn:  # refusing did not convert it to WAL or add tables
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    with pytest.raises(StoreError, match="needs the swarm spec"):
        await Ledger.open(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    empty = tmp_path / "empty"
    empty.touch()
    with pytest.raises(StoreError, match="not an autoswarm ledger"):
        await Ledger.open(empty)
    async with Ledger.open(empty, SPEC) as ledger:  # an empty file (a creation cut short) is created
        assert await ledger.count() == 0
    async with Ledger.open(tmp_path / "mine", SPEC):
        pass
    with pytest.raises(StoreError, match="not the given swarm"):
        await Ledger.open(tmp_path / "mine", OTHER_SPEC)


async def test_tampered_row_is_refused_on_open(tmp_path: Path) -> None:
    path = tmp_path / "l"
    async with Ledger.open(path, SPEC) as ledger:
        for entry in history(10, seed=6):
            await ledger.append(entry)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER entries_no_update")
        conn.execute("UPDATE entries SET chain = zeroblob(32) WHERE row = 4")
    with pytest.raises(Tampered, match="row 4"):
        await Ledger.open(path)


async def test_closed_ledger_refuses_work(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path / "l", SPEC)
    await ledger.aclose()
    await ledger.aclose()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await ledger.append(Feeds(SPEC.swarm_id).sign(USERS[0], post()))
    with pytest.raises(StoreError, match="closed"):
        await ledger.get(b"\x00" * 32)


def test_outcome_validates_itself() -> None:
    with pytest.raises(ValueError):
        store.Outcome(Status.FORK, "no proof")
    with pytest.raises(ValueError):
        store.Outcome(Status.REJECTED, "x", Fraud(first=b"a", second=b"b"))


async def test_pending_entries_expire_so_a_flood_cannot_hold_the_area(tmp_path: Path) -> None:
    """Entries whose dependencies never come (a flood of gaps) leave the area after its age limit,
    and an honest out-of-order entry refused while they filled it is then taken."""
    feeds = Feeds(SPEC.swarm_id)
    flood = [feeds.sign(USERS[4], post(str(i))) for i in range(4)][1:]  # seq 2..4: seq 1 never sent
    honest = Feeds(SPEC.swarm_id)
    h_rows = [honest.sign(USERS[5], post(str(i))) for i in range(2)]
    max_age_s = 0.3
    async with Ledger.open(tmp_path / "l", SPEC, max_pending_entries=3, max_pending_age_s=max_age_s) as ledger:
        assert [(await ledger.append(e)).status for e in flood] == [Status.PENDING] * 3
        refused = await ledger.append(h_rows[1])
        assert refused.status is Status.REJECTED and "pending area full" in refused.reason
        deadline = asyncio.get_running_loop().time() + max_age_s
        while asyncio.get_running_loop().time() <= deadline:  # the age limit is a span of the clock
            await asyncio.sleep(max_age_s / 3)
        assert (await ledger.append(h_rows[1])).status is Status.PENDING  # the flood expired first
        assert ledger.pending_count == 1 and ledger.pending_dropped == 3
        assert (await ledger.append(h_rows[0])).status is Status.APPENDED
        assert await ledger.count() == 2 and ledger.pending_count == 0
