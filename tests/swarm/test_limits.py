"""Pure bookkeeping: rate limits, scores, bans, the send queue, the peer table and peer choice."""
from __future__ import annotations

import asyncio
import random
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from swarm.connection import SendQueue
from swarm.limits import BAN_S, Bans, ConnectionLimits, Score, TokenBucket, should_ban
from swarm.peertable import FORGET_AFTER_FAILURES, PeerTable, choose_dials


def test_token_bucket_refills_with_time() -> None:
    bucket = TokenBucket.full(rate_per_s=10, burst=5, now_s=0)
    assert all(bucket.take(1, 0) for _ in range(5))
    assert not bucket.take(1, 0)
    assert bucket.take(1, 0.1) and not bucket.take(1, 0.1)
    assert bucket.take(5, 100) and not bucket.take(6, 100)  # never above the burst


def test_connection_limits_charge_both_buckets_or_neither() -> None:
    limits = ConnectionLimits.fresh(0)
    assert not limits.admit(10**12, 0)
    assert limits.frames.tokens == limits.frames.burst  # the refused frame cost nothing


def test_score_recovers_and_bans() -> None:
    score = Score(0.0, 0.0)
    assert score.penalize("malformed", 0) == -20
    assert score.current(10) == -10 and score.current(1000) == 0
    assert should_ban(score.penalize("oversized", 1000, times=2))


def test_bans_expire_and_stay_bounded() -> None:
    bans = Bans(max_bans=3)
    for i in range(5):
        bans.ban(bytes([i]), now_s=i)
    assert len(bans) == 3 and not bans.banned(b"\x00", 5) and bans.banned(b"\x04", 5)
    assert not bans.banned(b"\x04", 4 + BAN_S)


async def test_send_queue_drops_oldest_and_keeps_urgent_first() -> None:
    q = SendQueue(max_frames=3)
    for i in range(5):
        q.push(bytes([i]))
    assert q.dropped == 2 and len(q) == 3
    q.push(b"urgent", urgent=True)
    assert await q.get() == b"urgent"
    assert [await q.get() for _ in range(2)] == [b"\x03", b"\x04"]


async def test_send_queue_put_waits_for_room() -> None:
    q = SendQueue(max_frames=1)
    await q.put(b"a")
    waiter = asyncio.create_task(q.put(b"b"))
    await asyncio.sleep(0)
    assert not waiter.done()
    assert await q.get() == b"a"
    async with asyncio.timeout(5):
        await waiter
    assert await q.get() == b"b" and q.dropped == 0


def test_peer_table_bounded_and_keeps_bootstrap(tmp_path: Path) -> None:
    table = PeerTable(max_peers=3)
    assert table.add("10.0.0.1:1", bootstrap=True)
    assert not table.add("not an address")
    for i in range(2, 10):
        table.add(f"10.0.0.{i}:1")
    assert len(table) == 3 and "10.0.0.1:1" in table.records
    table.save(tmp_path / "t.json")
    assert PeerTable.load(tmp_path / "t.json", 3).records.keys() == table.records.keys()
    assert len(PeerTable.load(tmp_path / "missing.json")) == 0


def test_failures_back_off_then_forget() -> None:
    table = PeerTable()
    table.add("10.0.0.9:1")
    table.failed("10.0.0.9:1", now_s=100)
    assert choose_dials(table, connected=(), banned=(), own=(), want=5, now_s=100, rng=random.Random(0)) == []
    assert choose_dials(table, connected=(), banned=(), own=(), want=5, now_s=1e9, rng=random.Random(0)) == ["10.0.0.9:1"]
    for _ in range(FORGET_AFTER_FAILURES):
        table.failed("10.0.0.9:1", now_s=100)
    assert len(table) == 0


@given(st.lists(st.integers(1, 200), unique=True, max_size=40), st.integers(0, 10), st.integers(0, 2**32))
def test_choose_dials_is_a_bounded_subset_of_eligible(ports: list[int], want: int, seed: int) -> None:
    table = PeerTable()
    for port in ports:
        table.add(f"10.0.0.1:{port}")
    connected = {f"10.0.0.1:{p}" for p in ports[::3]}
    banned = {f"10.0.0.1:{p}" for p in ports[1::5]}
    chosen = choose_dials(table, connected=connected, banned=banned, own={"10.0.0.1:1"}, want=want,
                          now_s=0, rng=random.Random(seed))
    assert len(chosen) == len(set(chosen)) <= want
    assert not set(chosen) & (connected | banned | {"10.0.0.1:1"})
    eligible = set(table.records) - connected - banned - {"10.0.0.1:1"}
    assert len(chosen) == min(want, len(eligible))


@given(st.text(max_size=400))
def test_fuzz_peer_table_file(text: str) -> None:
    """A damaged table file gives an empty or partial table, never an exception other than ours."""
    from swarm.errors import SwarmError

    try:
        table = PeerTable.from_json(text)
    except SwarmError:
        return
    assert len(table) <= table.max_peers


@given(st.lists(st.fixed_dictionaries({"addr": st.text(max_size=30), "node": st.text(max_size=70),
                                       "last_ok_s": st.one_of(st.floats(), st.integers(), st.text()),
                                       "failures": st.one_of(st.integers(), st.text())}), max_size=10))
def test_fuzz_peer_table_rows(rows: list[dict[str, object]]) -> None:
    import json

    table = PeerTable.from_json(json.dumps({"version": 1, "peers": rows}))
    for record in table.records.values():
        assert record.failures >= 0 and (record.node == "" or len(record.node) == 64)
