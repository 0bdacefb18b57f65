"""A flooder is cut off and refused within seconds of its first frame, while honest peers sync on.

Issue 14: every link starts with our full heads, which asks the peer for anything we lack, and
what was asked for went unpenalized for 30 s, so a flooder that pushed from its first second was
never banned in that time. Now an asked-for entry over its author's quota is forgiven only from a
small bucket per link (swarm/asked.py), and a banned inbound peer is refused by key and by the
address its socket came from (swarm/links.py, swarm/inbound.py). Real peers on loopback: the
flooder comes from its own address (127.0.7.1), the honest node from another /24.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.keys import Identity
from swarm import asked
from swarm.asked import FORGIVEN_BURST, FORGIVEN_PER_S, Asked
from swarm.handshake import new_nonce, sign_hello
from swarm.limits import DUPLICATE_BURST
from swarm.peer import WS_PATH
from swarm.protocol import Entries, encode_message
from tests.ledger import factory
from tests.swarm.swarmkit import (SWARM, Node, big_posts, hold_big_posts, open_node, wait_all, wait_connected,
                                  wait_heads)

KiB = 1024
# quota_author comes first: 24 KiB per fresh key, while the strangers' and the subnet's shares are the defaults'
SMALL_AUTHORS: dict[str, Any] = dict(fresh_author_bytes=24 * KiB, addr_ban_s=120.0)
FLOODER_HOST = "127.0.7.1"
BAN_BOUND_S = 15.0      # measured ~1 s on the 2-core machine; generous for a loaded CI host


@contextlib.asynccontextmanager
async def link_from(victim: Node, who: Identity, source: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A raw websocket link from `source`, past both hellos."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        ws = await http.ws_connect(f"http://{victim.address}{WS_PATH}")
        await ws.send_bytes(sign_hello(who, swarm=SWARM, listen="", time_ms=int(time.time() * 1000),
                                       nonce=new_nonce()).wire)
        answer = await ws.receive(timeout=10)
        if answer.type != aiohttp.WSMsgType.BINARY:
            raise ConnectionError(f"no hello back: {answer.type}")
        yield ws


async def flood_until_closed(ws: aiohttp.ClientWebSocketResponse, wires: list[bytes], per_frame: int) -> float:
    """Pushes `wires` as fast as the link takes them, from its first second; the seconds until the
    victim closed the link (or all were sent and it closed after)."""
    t0 = time.monotonic()
    with contextlib.suppress(aiohttp.ClientError, ConnectionError):
        for start in range(0, len(wires), per_frame):
            if ws.closed:
                break
            await ws.send_bytes(encode_message(Entries(tuple(wires[start:start + per_frame]))))
        while not ws.closed:   # the victim's own frames, then its close
            message = await ws.receive(timeout=BAN_BOUND_S)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                break
    return time.monotonic() - t0


def forged(keys: list[Identity], count: int) -> list[bytes]:
    feeds = factory.Feeds(SWARM)
    wires = []
    for i in range(count):
        wire = bytearray(feeds.sign(keys[i % len(keys)], factory.post(f"forged {i}")).wire)
        wire[40] ^= 1   # inside the signature
        wires.append(bytes(wire))
    return wires


@pytest.mark.parametrize("kind", ["over_quota", "invalid"])
async def test_flooder_is_banned_within_seconds_by_key_and_address(tmp_path: Path, kind: str) -> None:
    keys = [factory.identity(9000 + i) for i in range(8)]
    wires = big_posts(keys, 40) if kind == "over_quota" else forged(keys, 400)
    flooder = factory.identity(8999)
    async with open_node(tmp_path, **SMALL_AUTHORS) as victim, \
            open_node(tmp_path, dial_from="127.0.5.1", **SMALL_AUTHORS) as honest:
        await honest.peer.connect(victim.address)
        first = await honest.peer.publish(factory.post("before the flood"))
        await wait_all([victim], {first.author: 1}, 20)
        async with link_from(victim, flooder, FLOODER_HOST) as ws:
            seconds = await flood_until_closed(ws, wires, 8)
        stats = victim.peer.stats()
        assert stats["bans"] == 1, stats
        assert seconds < BAN_BOUND_S, seconds
        # refused by key (from another address) and by address (with a fresh key)
        with pytest.raises(ConnectionError):
            async with link_from(victim, flooder, "127.0.8.1"):
                pass
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with link_from(victim, factory.identity(8998), FLOODER_HOST):
                pass
        assert refused.value.status == 403
        assert stats["refused"].get("banned", 0) + 1 == victim.peer.stats()["refused"]["banned"]
        assert victim.peer.stats()["refused"]["banned_addr"] == 1
        # the honest node was never penalized and keeps syncing both ways
        assert honest.identity.public_key in victim.peer.connected()
        assert victim.peer.stats()["peers"][honest.identity.node_id]["score"] == 0
        last = await honest.peer.publish(factory.post("after the flood"))
        back = await victim.peer.publish(factory.post("from the victim"))
        await wait_all([victim], {last.author: last.seq}, 20)
        await wait_all([honest], {back.author: back.seq}, 20)
        if kind == "over_quota":
            assert victim.peer.quotas.refused["quota_author"] > FORGIVEN_BURST
            assert sum(victim.peer.quotas.stored.get(k.public_key, 0) for k in keys) <= len(keys) * 24 * KiB


async def test_an_honest_catch_up_over_quota_is_forgiven(tmp_path: Path) -> None:
    """The other side of the bucket: B, with a smaller per-author quota than A, syncs a stranger's
    feed from A that runs over it; the refusals are forgiven and A's score stays at zero."""
    stranger = factory.identity(9100)
    async with open_node(tmp_path) as a:
        await hold_big_posts(a, stranger, 12)
        async with open_node(tmp_path, bootstrap=(a.address,), **SMALL_AUTHORS) as b:
            await wait_connected(b, 1, 10)
            await b.peer.wait_until(lambda: b.peer.quotas.refused["quota_author"] >= 9, 20)
            link = b.peer.stats()["peers"][a.identity.node_id]
            assert link["score"] == 0 and b.peer.stats()["bans"] == 0, link


def test_forgiveness_runs_dry_then_refills() -> None:
    asked = Asked()
    assert all(asked.forgive(0.0) for _ in range(int(FORGIVEN_BURST)))
    assert not asked.forgive(0.0)
    assert asked.forgive(1.0 / FORGIVEN_PER_S)
    assert not asked.forgive(1.0 / FORGIVEN_PER_S)
    assert asked.forgiven == FORGIVEN_BURST + 1


@given(st.lists(st.floats(min_value=0.0, max_value=1000.0), min_size=1, max_size=300))
def test_forgiven_never_exceeds_burst_plus_refill(times: list[float]) -> None:
    asked = Asked()
    times.sort()
    for t in times:
        asked.forgive(t)
    assert asked.forgiven <= FORGIVEN_BURST + (times[-1] - times[0]) * FORGIVEN_PER_S + 1e-9


async def test_a_flood_of_copies_of_one_entry_is_banned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies of an entry we hold cost a hash each and are never stored, but an unasked stream of
    them past the link's allowance (limits.DUPLICATES_PER_S) ends in a ban too."""
    monkeypatch.setattr(asked, "ASKED_WINDOW_S", 0.2)   # our connect-time heads ask for anything briefly
    flooder = factory.identity(9200)
    entry = factory.Feeds(SWARM).sign(flooder, factory.post("one entry"))
    async with open_node(tmp_path, **SMALL_AUTHORS) as victim:
        async with link_from(victim, flooder, FLOODER_HOST) as ws:
            await ws.send_bytes(encode_message(Entries((entry.wire,))))
            await wait_heads(victim, {flooder.public_key: 1}, 10)
            await asyncio.sleep(0.3)   # past the asked window, a fixed deadline: copies from here are unasked
            seconds = await flood_until_closed(ws, [entry.wire] * int(2 * DUPLICATE_BURST), 50)
        assert seconds < BAN_BOUND_S and victim.peer.stats()["bans"] == 1
        await victim.peer.wait_until(lambda: flooder.public_key not in victim.peer.connected(), 10)
        assert victim.peer.stats()["closed_peer_rejects"].get("duplicate_flood", 0) > 0
        assert await victim.ledger.count() == 1
