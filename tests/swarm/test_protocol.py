"""Wire messages: round trips, refusals, and fuzzing (random bytes raise only BadMessage)."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.errors import BadMessage
from swarm.heads import heads_pages, lacking, pack_frames
from swarm.protocol import (
    LAST_AUTHOR, MAX_ENTRIES_PER_FRAME, MAX_FRAME_BYTES, MAX_IDS_PER_FRAME, Digest, Entries, Have, Heads,
    HeadsDelta, HeldQuery, HeldReply, Peers, Ping, Pong, Want, WantIds, decode_message, encode_message, parse_addr,
)

A, B, C = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
T = b"t" * 8

MESSAGES = [
    Entries((b"x" * 200, b"y" * 97)),
    Heads(b"", LAST_AUTHOR, ((A, 3, b"t" * 8), (B, 1, b"u" * 8))),
    Heads(A, B, ((B, 7, b"v" * 8),)),
    Want(((A, 0), (C, 5))),
    Ping(7), Pong(2**62),
    Peers(("127.0.0.1:8000", "example.org:1", "[::1]:9")),
    Peers(()),
    Digest(b"d" * 32),
    Have((A, B)), WantIds((C,)),
    HeadsDelta(((A, 3, T), (C, 1, T))),
    HeldQuery(5, A), HeldReply(5, True), HeldReply(2**62, False),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: object) -> None:
    assert decode_message(encode_message(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        [], [99, 1], [1], [1, []], [1, [b""]], [1, ["text"]], [1, [b"x"] * (MAX_ENTRIES_PER_FRAME + 1)],
        [2, b"", LAST_AUTHOR, [[B, 1, T], [A, 1, T]]],  # not ascending
        [2, B, A, []],                                # lo above hi
        [2, b"", LAST_AUTHOR, [[A, 0, T]]],           # a listed author holds seq >= 1
        [2, b"", LAST_AUTHOR, [[A, 1]]],              # no tip
        [2, b"", LAST_AUTHOR, [[A, 1, b"short"]]],
        [2, b"short", LAST_AUTHOR, []],
        [3, []], [3, [[A, -1]]], [3, [[A, True]]],
        [4, -1], [4, 1.5], [5, "x"], [4, True],
        [6, ["no-port"]], [6, ["host:99999"]], [6, ["bad host!:80"]], [6, [1]],
        [7, b"short"], [7, "x" * 32],
        [8, []], [8, [b"short"]], [8, [A] * (MAX_IDS_PER_FRAME + 1)], [9, [1]], [9, "x"],
        [10, []], [10, [[B, 1, T], [A, 1, T]]], [10, [[A, 0, T]]], [10, [[A, 1, T], [A, 2, T]]],
        [11, -1, A], [11, 1, b"short"], [11, 1], [12, 1, 1], [12, 1, None], [12, -1, True],
        {"a": 1}, "x", [True, 1],
    ],
)
def test_refuses_bad_fields(fields: object) -> None:
    with pytest.raises(BadMessage):
        decode_message(msgpack.packb(fields, use_bin_type=True))


def test_refuses_oversized_and_trailing_bytes() -> None:
    with pytest.raises(BadMessage):
        decode_message(b"\x00" * (MAX_FRAME_BYTES + 1))
    with pytest.raises(BadMessage):
        decode_message(encode_message(Ping(1)) + b"\x00")
    with pytest.raises(BadMessage):
        decode_message(msgpack.packb([4, msgpack.ExtType(1, b"x")]))
    with pytest.raises(BadMessage):
        decode_message("not bytes")


def test_parse_addr() -> None:
    assert parse_addr("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_addr("[::1]:443") == ("::1", 443)
    for bad in ("", ":80", "host:", "host:0", "[zz]:1", "a b:1", "x" * 400 + ":1"):
        with pytest.raises(BadMessage):
            parse_addr(bad)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        decode_message(data)
    except BadMessage:
        pass


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.binary(max_size=40),
                  st.text(max_size=20), st.floats(allow_nan=False))
_tree = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=5), max_leaves=20)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 13), st.lists(_tree, max_size=4))
@pytest.mark.slow
def test_fuzz_structured(kind: int, rest: list[object]) -> None:
    try:
        decode_message(msgpack.packb([kind, *rest], use_bin_type=True))
    except BadMessage:
        pass


# -- anti-entropy's pure parts


_authors = st.binary(min_size=32, max_size=32)
_tips = st.tuples(st.integers(1, 9), st.sampled_from([b"a" * 8, b"b" * 8]))


@given(st.dictionaries(_authors, _tips, max_size=60), st.integers(1, 7))
def test_heads_pages_cover_every_author_once(heads: dict[bytes, tuple[int, bytes]], page_size: int) -> None:
    pages = heads_pages(heads, page_size)
    assert pages[0].lo == b"" and pages[-1].hi == LAST_AUTHOR
    assert all(p.hi == q.lo for p, q in zip(pages, pages[1:]))
    assert {a: (s, t) for p in pages for a, s, t in p.heads} == heads
    for page in pages:
        assert decode_message(encode_message(page)) == page


@given(st.dictionaries(_authors, _tips, max_size=30), st.dictionaries(_authors, _tips, max_size=30), st.integers(1, 5))
def test_lacking_is_what_they_miss_or_hold_differently(
    mine: dict[bytes, tuple[int, bytes]], theirs: dict[bytes, tuple[int, bytes]], size: int
) -> None:
    found = [row for page in heads_pages(theirs, size) for row in lacking(mine, sorted(mine), page)]
    want = []
    for author, (seq, tip) in mine.items():
        their_seq, their_tip = theirs.get(author, (0, b""))
        if seq > their_seq or (seq == their_seq and tip != their_tip):
            want.append((author, their_seq, their_tip))
    assert sorted(found) == sorted(want)


def test_pack_frames_respects_limits() -> None:
    wires = [bytes([i % 256]) * 50_000 for i in range(60)]
    frames = pack_frames(wires)
    assert [w for f in frames for w in f.wires] == wires
    assert all(len(encode_message(f)) <= MAX_FRAME_BYTES for f in frames)
    assert len(pack_frames([b"x" * 100] * 1000)) == 2


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=320))
def test_fuzz_parse_addr(text: str) -> None:
    try:
        host, port = parse_addr(text)
    except BadMessage:
        return
    assert 1 <= port <= 65535 and host
