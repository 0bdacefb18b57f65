"""Eclipse: the address table by source group, dial diversity, undialable hosts, anchors."""
from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm import anchors
from swarm.peer import MAX_ADDRS_FROM_PEER
from swarm.peertable import MAX_PER_SOURCE, PeerTable, choose_dials, dialable, group_of, host_of
from swarm.protocol import Peers, Ping, Pong, decode_message, encode_message
from tests.swarm.swarmkit import open_node, wait_connected
from tests.swarm.test_hostile import EVIL, handshake, hello_wire, raw_ws


def test_undialable_hosts_are_refused() -> None:
    for addr in ("0.0.0.0:7400", "[::]:7400", "224.0.0.1:7400", "[ff02::1]:7400", "255.255.255.255:7400",
                 "10.0.0.1:0"):
        assert not dialable(addr)
        assert not PeerTable().add(addr)
    assert dialable("10.0.0.1:7400") and dialable("[2001:db8::1]:7400") and dialable("example.org:7400")


def test_groups() -> None:
    assert group_of(host_of("10.1.2.3:1")) == group_of(host_of("10.1.200.3:1")) == "10.1.0.0/16"
    assert group_of(host_of("[2001:db8:aa::1]:1")) == "2001:db8::/32"


@settings(deadline=None, max_examples=8)
@given(st.integers(0, 2**32 - 1))
def test_a_flood_from_one_source_cannot_take_the_table(seed: int) -> None:
    rng = random.Random(seed)
    table = PeerTable(max_peers=1000)
    honest = [f"10.{i}.{rng.randrange(256)}.1:7400" for i in range(1, 200)]
    for i, addr in enumerate(honest):
        assert table.add(addr, source=f"10.{i % 50}.0.0/16")
    for i in range(5000):  # gossiped by attacker peers in one /16
        table.add(f"66.{i // 256 % 256}.{i % 256}.9:7400", source="66.6.0.0/16")
    attacker = [r for r in table.records.values() if r.source == "66.6.0.0/16"]
    assert len(attacker) <= MAX_PER_SOURCE
    assert all(addr in table.records for addr in honest)
    assert len(table) <= 1000


@given(st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_dials_are_spread_over_groups(seed: int, want: int) -> None:
    table = PeerTable()
    for i in range(40):
        table.add(f"66.6.{i}.1:7400", source="66.6.0.0/16")   # one group, many addresses
    for i in range(3):
        table.add(f"{20 + i}.1.1.1:7400")
    picked = choose_dials(table, connected=[], banned=(), own=(), want=want, now_s=0.0, rng=random.Random(seed))
    groups = [group_of(host_of(a)) for a in picked]
    assert len(groups) == len(set(groups)) == min(want, 4)


def test_choose_anchors() -> None:
    links = [anchors.LinkSummary("10.0.0.1:1", True, 600, 0, 5), anchors.LinkSummary("10.0.0.2:1", False, 600, 0, 50),
             anchors.LinkSummary("10.0.0.3:1", True, 5, 0, 50), anchors.LinkSummary("10.0.0.4:1", True, 600, -90, 50),
             anchors.LinkSummary("10.0.0.5:1", True, 900, 0, 9)]
    assert anchors.choose_anchors(links) == ["10.0.0.5:1", "10.0.0.1:1"]


async def test_gossiped_addresses_from_one_peer_are_capped(tmp_path: Path) -> None:
    async with open_node(tmp_path) as node, raw_ws(node) as ws:
        assert await handshake(ws, hello_wire()) is not None
        for frame in range(20):  # 1,280 addresses over one link
            addrs = tuple(f"66.{frame}.{i}.7:7400" for i in range(64))
            await ws.send_bytes(encode_message(Peers(addrs)))
        # frames are handled in order: once our ping is answered, every Peers frame was read
        await ws.send_bytes(encode_message(Ping(42)))
        async with asyncio.timeout(10):
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY and decode_message(msg.data) == Pong(42):
                    break
        conn = node.peer.replicator.conns[EVIL.public_key]
        assert conn.addrs_learned == MAX_ADDRS_FROM_PEER
        # and of those, one source group's bucket keeps MAX_PER_SOURCE
        assert len(node.peer.table) <= MAX_PER_SOURCE + 1


async def test_anchors_survive_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anchors, "ANCHOR_MIN_S", 0.0)
    path = tmp_path / "anchors.json"
    async with open_node(tmp_path) as b:
        async with open_node(tmp_path, anchors_path=path, bootstrap=(b.address,), peer_exchange=False) as a:
            await wait_connected(a, 1, 10)
        assert anchors.load_anchors(path) == [b.address]
        # a fresh start with no bootstrap and an empty table: the anchor is dialed
        async with open_node(tmp_path, anchors_path=path, peer_exchange=False) as a:
            await wait_connected(a, 1, 10)
            assert a.peer.connected() == [b.identity.public_key]
