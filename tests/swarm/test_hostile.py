"""A hostile peer: malformed msgpack, forged signatures, another swarm, replayed and bad
handshakes, seq gaps, a fork, oversized and text frames, a flood. All refused and counted,
nothing bad forwarded, the node still serving honest peers; a persistent offender is banned."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import msgpack
import pytest

from ledger.keys import Identity
from swarm.handshake import Hello, decode_hello, new_nonce, sign_hello
from swarm.protocol import MAX_FRAME_BYTES, Entries, Ping, encode_message
from tests.ledger import factory
from tests.swarm.swarmkit import SWARM, Node, open_node, wait_all, wait_connected

EVIL = factory.identity(666)
OTHER_SWARM = factory.make_spec(factory.identity(7), [factory.identity(8)]).swarm_id


def hello_wire(who: Identity = EVIL, *, swarm: bytes = SWARM, time_ms: int | None = None, nonce: bytes | None = None) -> bytes:
    return sign_hello(who, swarm=swarm, listen="", time_ms=time_ms or int(time.time() * 1000),
                      nonce=nonce or new_nonce()).wire


@asynccontextmanager
async def raw_ws(node: Node) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.ws_connect(f"http://{node.address}/swarm/v1/ws", max_msg_size=0) as ws:
            yield ws


async def handshake(ws: aiohttp.ClientWebSocketResponse, wire: bytes) -> Hello | None:
    await ws.send_bytes(wire)
    msg = await ws.receive(timeout=10)
    return decode_hello(msg.data) if msg.type == aiohttp.WSMsgType.BINARY else None


async def wait_closed(ws: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (hello_wire(swarm=OTHER_SWARM), "wrong_swarm"),
        (hello_wire(time_ms=int(time.time() * 1000) - 3_600_000), "clock"),
        (hello_wire()[:40] + b"\x00" + hello_wire()[41:], "bad_signature"),
        (b"\x93garbage", "malformed"),
    ],
)
async def test_bad_handshakes_refused_and_counted(tmp_path: Path, wire: bytes, reason: str) -> None:
    async with open_node(tmp_path) as node, raw_ws(node) as ws:
        assert await handshake(ws, wire) is None
        assert node.peer.stats()["handshakes_failed"] == {reason: 1}
        assert node.peer.connected() == []


async def test_replayed_handshake_refused(tmp_path: Path) -> None:
    async with open_node(tmp_path) as node:
        wire = hello_wire()
        async with raw_ws(node) as ws:
            assert await handshake(ws, wire) is not None
        async with raw_ws(node) as ws:
            assert await handshake(ws, wire) is None
        assert node.peer.stats()["handshakes_failed"] == {"replayed": 1}


async def test_hostile_frames_rejected_counted_not_forwarded(tmp_path: Path) -> None:
    feeds = factory.Feeds(SWARM)
    other = factory.Feeds(OTHER_SWARM)
    async with open_node(tmp_path) as node, open_node(tmp_path, bootstrap=(node.address,)) as honest:
        await wait_connected(node, 1, 10)
        good = feeds.sign(EVIL, factory.post("evil but valid"))
        forged = bytearray(feeds.sign(EVIL, factory.post("forged")).wire)
        forged[40] ^= 1  # inside the signature
        wrong_swarm = other.sign(EVIL, factory.post("elsewhere")).wire
        gap = feeds.sign_at(EVIL, 9, b"\x01" * 32, factory.post("seq gap"))
        fork = feeds.sign_at(EVIL, 1, None, factory.post("the other branch"))
        async with raw_ws(node) as ws:
            assert await handshake(ws, hello_wire()) is not None
            await ws.send_bytes(encode_message(Entries((bytes(forged),))))
            await ws.send_bytes(encode_message(Entries((wrong_swarm,))))
            await ws.send_bytes(encode_message(Entries((b"\x00" * 50,))))  # too short to be an entry
            await ws.send_bytes(encode_message(Entries((good.wire, gap.wire))))
            await ws.send_bytes(encode_message(Entries((fork.wire,))))

            async def frozen_at_honest() -> bool:
                return EVIL.public_key in honest.ledger.state.frozen

            await honest.peer.wait_until(frozen_at_honest, 20)  # the fork proof travelled
            stats = node.peer.stats()["peers"][EVIL.node_id]
            assert stats["rejects"] == {"bad_signature": 1, "wrong_swarm": 1, "invalid_entry": 1, "fork": 1}
            assert stats["pending_in"] == 1 and stats["entries_in"] == 1
            # bad frames: counted, and this peer's score now falls below the ban line
            await ws.send_str("text frame")
            await ws.send_bytes(b"\xc1\xc1not msgpack")
            await ws.send_bytes(msgpack.packb([1, ["not bytes"]]))  # the link is gone before this one
            await wait_closed(ws)
        await node.peer.wait_until(lambda: EVIL.public_key not in node.peer.connected(), 10)
        gone = node.peer.stats()["closed_peer_rejects"]
        assert gone["malformed"] == 1 and gone["text_frame"] == 1 and node.peer.stats()["bans"] == 1
        # an oversized frame (from someone else) ends its link: aiohttp closes on it, we count it
        async with raw_ws(node) as ws:
            assert await handshake(ws, hello_wire(factory.identity(667))) is not None
            await ws.send_bytes(b"\x00" * (MAX_FRAME_BYTES + 10))
            await wait_closed(ws)
        await node.peer.wait_until(lambda: node.peer.connected() == [honest.identity.public_key], 10)
        assert node.peer.stats()["closed_peer_rejects"]["oversized"] == 1
        # the honest peer got the valid entry and the fork proof, never the bad ones
        held = {w for a in await honest.ledger.heads() for w in await honest.ledger.wires_after(a, 0, 100)}
        assert good.wire in held
        assert not {bytes(forged), wrong_swarm, gap.wire, fork.wire} & held
        assert honest.peer.stats()["peers"][node.identity.node_id]["rejects"] == {}
        # and the node still serves honest peers
        entry = await honest.peer.publish(factory.post("still here"))
        await wait_all([node], {entry.author: entry.seq}, 10)


async def test_persistent_offender_is_banned(tmp_path: Path) -> None:
    async with open_node(tmp_path) as node:
        async with raw_ws(node) as ws:
            assert await handshake(ws, hello_wire()) is not None
            for _ in range(10):
                await ws.send_bytes(b"\xc1")
            await wait_closed(ws)
        assert node.peer.stats()["bans"] == 1
        async with raw_ws(node) as ws:  # comes back: refused at the handshake
            assert await handshake(ws, hello_wire()) is None
        assert node.peer.stats()["refused"] == {"banned": 1}


async def test_flood_is_rate_limited_without_blocking(tmp_path: Path) -> None:
    async with open_node(tmp_path) as node, open_node(tmp_path, bootstrap=(node.address,)) as honest:
        await wait_connected(node, 1, 10)
        async with raw_ws(node) as ws:
            assert await handshake(ws, hello_wire()) is not None
            frame = encode_message(Ping(5))
            for _ in range(3000):
                await ws.send_bytes(frame)
            entry = await honest.peer.publish(factory.post("through the flood"))
            await wait_all([node], {entry.author: 1}, 20)
        async def rated() -> bool:
            return node.peer.stats()["closed_peer_rejects"].get("rate", 0) > 0
        await node.peer.wait_until(lambda: EVIL.public_key not in node.peer.connected(), 10)
        assert await rated()
