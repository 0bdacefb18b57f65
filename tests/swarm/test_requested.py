"""Traffic a node asked for is never penalized: a syncing node slows its peer down instead.

A node far behind asks (heads) for thousands of entries; its peer answers faster than the
syncing node's per-link rate. Before, every over-rate frame cost the answering, honest peer a
`rate` penalty until it was banned; now the reader waits for tokens (the peer slows through TCP).
Unrequested floods are still penalized (tests/swarm/test_hostile.py's flood test).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm import antientropy, heads, limits
from tests.ledger import factory
from tests.swarm.swarmkit import SWARM, open_node, wait_all, wait_connected

AUTHORS = 20
SEQS = 25


@given(st.floats(0.1, 100), st.floats(1, 100), st.floats(0, 200), st.floats(0, 50))
def test_wait_s_is_the_time_until_take_succeeds(rate: float, burst: float, amount: float, spent: float) -> None:
    bucket = limits.TokenBucket.full(rate, burst, 0.0)
    bucket.take(min(spent, burst), 0.0)
    wait = bucket.wait_s(amount, 0.0)
    if amount <= burst:
        assert bucket.take(amount, wait + 1e-6)
    else:
        assert wait >= (burst - bucket.tokens) / rate - 1e-9


def test_request_window_opens_and_closes() -> None:
    lim = limits.ConnectionLimits.fresh(0.0)
    assert not lim.requested(0.0)
    lim.note_request(10.0)
    assert lim.requested(10.0 + limits.REQUEST_WINDOW_S - 1)
    assert not lim.requested(10.0 + limits.REQUEST_WINDOW_S)


@pytest.mark.slow
async def test_syncing_node_never_penalizes_the_peer_it_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # small per-link limits, so the catch-up is far over them (the same limits apply to both nodes)
    monkeypatch.setattr(limits, "FRAMES_PER_S", 100.0)
    monkeypatch.setattr(limits, "FRAME_BURST", 20.0)
    feeds = factory.Feeds(SWARM)
    authors = [factory.identity(900 + i) for i in range(AUTHORS)]
    async with open_node(tmp_path) as a:
        for x in authors:
            for i in range(SEQS):
                assert (await a.ledger.append(feeds.sign(x, factory.post(f"{i}")))).status.value == "appended"
        # one entry per frame on the answering side: many frames for the catch-up
        monkeypatch.setattr(antientropy, "pack_frames", lambda wires: heads.pack_frames(wires, max_entries=1))
        async with open_node(tmp_path, bootstrap=(a.address,)) as b:
            await wait_connected(b, 1, 10)
            await wait_all([b], {x.public_key: SEQS for x in authors}, 60)
            link = b.peer.stats()["peers"][next(iter(b.peer.stats()["peers"]))]
            assert link["rejects"].get("rate", 0) == 0, link
            assert link["throttled_in"] > 0    # it was over the rate, and slowed down
            assert b.peer.stats()["bans"] == 0
            assert a.identity.public_key in b.peer.connected()


def test_frame_kind_reads_the_type_without_decoding() -> None:
    from swarm.protocol import ANSWER_KINDS, Digest, Entries, Heads, Ping, encode_message, frame_kind

    assert frame_kind(encode_message(Entries((b"x" * 200,)))) in ANSWER_KINDS
    assert frame_kind(encode_message(Heads(b"\x00" * 32, b"\xff" * 32, ()))) in ANSWER_KINDS
    assert frame_kind(encode_message(Ping(7))) not in ANSWER_KINDS
    assert frame_kind(encode_message(Digest(b"d" * 32))) not in ANSWER_KINDS
    assert frame_kind(b"") is None and frame_kind(b"\xc1\x01") is None
