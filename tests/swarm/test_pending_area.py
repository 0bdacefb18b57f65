"""The pending area under a flood: one link's waiting entries are bounded and the sender pays.

A hostile link sends entries that can never be appended (each misses its seq 1). Past its share
of the area (PENDING_PER_LINK) every further one costs it score until it is banned; an honest
peer's out-of-order entries still wait and are appended once their dependency arrives.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from swarm import gossip
from swarm.protocol import Entries, encode_message
from tests.ledger import factory
from tests.swarm.swarmkit import SWARM, open_node, wait_all, wait_connected
from tests.swarm.test_hostile import EVIL, handshake, hello_wire, raw_ws, wait_closed

SHARE = 20


@pytest.mark.slow
async def test_pending_flood_is_counted_against_the_sender(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gossip, "PENDING_PER_LINK", SHARE)
    feeds = factory.Feeds(SWARM)
    keys = [factory.identity(1200 + i) for i in range(10)]
    flood = [feeds.sign_at(k, seq, bytes([seq]) * 32, factory.post(f"{seq}"))
             for seq in range(2, 40) for k in keys]   # seq 1 never comes
    x = factory.identity(1300)
    first, second = feeds.sign(x, factory.post("1")), feeds.sign(x, factory.post("2"))
    async with open_node(tmp_path) as node, open_node(tmp_path, bootstrap=(node.address,)) as honest:
        await wait_connected(node, 1, 10)
        async with raw_ws(node) as ws:
            assert await handshake(ws, hello_wire()) is not None
            for start in range(0, len(flood), 10):
                await ws.send_bytes(encode_message(Entries(tuple(e.wire for e in flood[start:start + 10]))))
            await asyncio.wait_for(wait_closed(ws), 20)
        await node.peer.wait_until(lambda: EVIL.public_key not in node.peer.connected(), 10)
        rejects = node.peer.stats()["closed_peer_rejects"]
        assert rejects.get("pending_flood", 0) >= 40 and node.peer.stats()["bans"] == 1
        # an honest out-of-order pair: the second waits, then both are appended
        assert (await honest.ledger.append(second)).status.value == "pending"
        assert (await honest.ledger.append(first)).status.value == "appended"
        honest.peer.announce(first)
        await wait_all([node], {x.public_key: 2}, 20)
        assert honest.identity.public_key in node.peer.connected()
