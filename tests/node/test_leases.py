"""Leases across nodes (issue 16): the lease line, its bounds, and reading leases from a real ledger."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.bodies import Post
from ledger.store import Ledger
from node.research import leases
from node.research.leases import BadLease, Lease, LeaseBook, decode, encode, live_keys
from tests.ledger.factory import CLASS, Feeds, identity, make_spec

KEY = "k1-" + "ab" * 16


def _key(n: int) -> str:
    return f"k1-{n:032x}"


def test_a_lease_round_trips_through_its_post_and_a_bad_one_is_refused() -> None:
    post = encode(CLASS, KEY, 61_000)
    assert post.channel == leases.LEASE_CHANNEL
    assert decode(post, b"a" * 32, 1_000) == Lease(b"a" * 32, CLASS, KEY, 1_000, 61_000)
    with pytest.raises(BadLease):
        decode(post, b"a" * 32, 61_001)            # ends before it starts
    with pytest.raises(BadLease):
        decode(encode(CLASS, KEY, 10**9), b"a" * 32, 0)   # longer than MAX_LEASE_S
    for text in ("lease v1 cpu-tiny k1-00 5", "lease v2 cpu-tiny " + KEY + " 5", "hello", "lease v1 A " + KEY + " 5"):
        with pytest.raises(BadLease):
            decode(Post(channel=leases.LEASE_CHANNEL, text=text, reply_to=None), b"a" * 32, 0)
    with pytest.raises(BadLease):
        decode(Post(channel="general", text=post.text, reply_to=None), b"a" * 32, 0)
    with pytest.raises(BadLease):
        encode("Not A Class", KEY, 5)


def test_live_keys_respect_class_time_our_own_and_the_caps() -> None:
    a, b = b"a" * 32, b"b" * 32
    held = [Lease(a, CLASS, _key(1), 0, 100), Lease(a, "h100", _key(2), 0, 100), Lease(b, CLASS, _key(3), 50, 200)]
    assert live_keys(held, CLASS, 60, {a: 1, b: 1}) == {_key(1), _key(3)}
    assert live_keys(held, CLASS, 150, {a: 1, b: 1}) == {_key(3)}        # a's lease ran out
    assert live_keys(held, CLASS, 60, {a: 1, b: 1}, me=a) == {_key(3)}   # our own: the running set covers them
    flood = [Lease(b"s" * 32, CLASS, _key(n), n, 10_000) for n in range(100)]
    assert live_keys(flood, CLASS, 500, {}) == {_key(0), _key(1)}        # a stranger: MAX_PER_STRANGER
    assert len(live_keys(flood, CLASS, 500, {b"s" * 32: 1})) == leases.MAX_PER_AUTHOR


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 50), st.integers(1, 1000)), max_size=300))
def test_strangers_never_block_more_than_their_total_cap(rows: list[tuple[int, int, int]]) -> None:
    held = [Lease(bytes([author]) * 32, CLASS, _key(n), start, start + length)
            for n, (author, start, length) in enumerate(rows)]
    live = live_keys(held, CLASS, 50, {})
    assert len(live) <= leases.MAX_STRANGERS
    assert all(any(x.key == k and x.start_ms <= 50 < x.until_ms for x in held) for k in live)


async def test_the_book_reads_lease_posts_from_the_ledger_and_drops_expired_ones(tmp_path: Path) -> None:
    creator, peer = identity(1), identity(2)
    spec = make_spec(creator, [creator])
    async with Ledger.open(tmp_path / "ledger.sqlite", spec) as ledger:
        feeds = Feeds(ledger.swarm_id)
        start = feeds.clock_ms + 1
        wires = [feeds.sign(peer, encode(CLASS, _key(n), start + n + 600_000)).wire for n in range(3)]
        wires.append(feeds.sign(peer, Post(channel=leases.LEASE_CHANNEL, text="lease v1 nonsense", reply_to=None)).wire)
        wires.append(feeds.sign(peer, Post(channel="general", text="hi", reply_to=None)).wire)
        await ledger.append_wires(wires)
        book = LeaseBook()
        assert await book.sync(ledger, now_ms=start) == 3 and book.refused == 1
        assert live_keys(book.leases, CLASS, start + 10, {peer.public_key: 1}) == {_key(0), _key(1), _key(2)}
        assert await book.sync(ledger, now_ms=start + 600_000) == 0
        assert [x.key for x in book.leases] == [_key(1), _key(2)]
