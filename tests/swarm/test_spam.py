"""Spam and disk (issue 14) against real peers on loopback: strangers' bytes stay within the
configured quota, honest stamped nodes are still fully delivered, the flooder is penalized, and a
node that asked for entries never penalizes the peer that sent them."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ledger.keys import Identity
from swarm import asked
from swarm.handshake import new_nonce, sign_hello
from swarm.peer import WS_PATH
from swarm.protocol import Entries, Stamps, encode_message
from swarm.stamp import mint_stamp, stamp_ok
from tests.ledger import factory
from tests.swarm.swarmkit import (POST_TEXT, SWARM, Node, big_posts, hold_big_posts, open_node, wait_all,
                                  wait_connected, wait_heads)

KiB = 1024
QUOTA: dict[str, Any] = dict(stranger_quota_bytes=512 * KiB, fresh_author_bytes=24 * KiB, stamped_author_bytes=128 * KiB, stamp_bits=8)


async def stranger_bytes(node: Node, skip: set[bytes]) -> int:
    held = await node.peer.replicator.port.stored_bytes(frozenset(skip))
    return sum(held.values())


@contextlib.asynccontextmanager
async def raw_link(victim: Node, who: Identity) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        ws = await http.ws_connect(f"http://{victim.address}{WS_PATH}")
        await ws.send_bytes(sign_hello(who, swarm=SWARM, listen="", time_ms=int(time.time() * 1000),
                                       nonce=new_nonce()).wire)
        await ws.receive()   # the victim's hello
        yield ws


@pytest.mark.slow
async def test_fresh_key_flood_stays_within_quota_and_honest_entries_arrive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asked, "ASKED_WINDOW_S", 0.2)   # the victim's heads ask for everything briefly
    keys = [factory.identity(7000 + i) for i in range(43)]
    wires = big_posts(keys, 6)        # 43 keys x 6 posts x 8 KB: about 2 MiB, four times the quota
    async with open_node(tmp_path, **QUOTA) as victim, \
            open_node(tmp_path, stamp_path=tmp_path / "honest.stamp", dial_from="127.0.5.1", **QUOTA) as honest:
        await honest.peer.connect(victim.address)
        attacker = factory.identity(6999)
        sent = 0
        async with raw_link(victim, attacker) as ws:
            await asyncio.sleep(0.5)  # past the asked window: what follows is an unasked push
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                for start in range(0, len(wires), 8):
                    await ws.send_bytes(encode_message(Entries(tuple(wires[start:start + 8]))))
                    sent += 8
            # honest posts of 8 KB too: 12 of them are over the unstamped quota, within the stamped one
            published = [await honest.peer.publish(factory.post(POST_TEXT)) for _ in range(12)]
            await wait_all([victim], {honest.identity.public_key: len(published)}, 30)
            await victim.peer.wait_until(lambda: victim.peer.stats()["bans"] >= 1, 20)
        held = await stranger_bytes(victim, {victim.identity.public_key})
        assert held <= QUOTA["stranger_quota_bytes"], held
        quota = victim.peer.stats()["quota"]
        assert quota["strangers_bytes"] == held
        assert quota["refused"].get("quota_author", 0) + quota["refused"].get("quota_fresh", 0) > 0, quota
        assert honest.identity.public_key in victim.peer.quotas.stamps
        assert sent > 0


@pytest.mark.slow
async def test_stamp_travels_with_relayed_entries(tmp_path: Path) -> None:
    """C's entries reach A only through B; A counts C as stamped because B sends C's stamp first."""
    async with open_node(tmp_path, **QUOTA) as a, open_node(tmp_path, **QUOTA) as b, \
            open_node(tmp_path, stamp_path=tmp_path / "c.stamp", **QUOTA) as c:
        await b.peer.connect(a.address)
        await c.peer.connect(b.address)
        await c.peer.wait_until(lambda: c.peer.quotas.stamp_of(c.identity.public_key) is not None, 20)
        for _ in range(6):   # 48 KB: twice the unstamped quota
            await c.peer.publish(factory.post(POST_TEXT))
        await wait_all([a], {c.identity.public_key: 6}, 30)
        assert c.identity.public_key in a.peer.quotas.stamps


async def test_asked_traffic_over_quota_is_refused_but_never_penalized(tmp_path: Path) -> None:
    """B syncs from A a stranger's feed larger than B's quota for it: B stores what fits, refuses
    the rest with its reason, and A's score at B stays at zero."""
    stranger = factory.identity(8100)
    async with open_node(tmp_path) as a:
        await hold_big_posts(a, stranger, 8)
        async with open_node(tmp_path, bootstrap=(a.address,), **QUOTA) as b:
            await wait_connected(b, 1, 10)
            await wait_all([b], {stranger.public_key: 2}, 20)
            await b.peer.wait_until(lambda: b.peer.quotas.refused["quota_author"] > 0, 20)
            link = next(iter(b.peer.stats()["peers"].values()))
            assert link["score"] == 0 and link["rejects"].get("quota_author", 0) > 0, link
            assert b.peer.quotas.stored[stranger.public_key] <= QUOTA["fresh_author_bytes"]


async def test_a_forged_stamp_costs_the_sender(tmp_path: Path) -> None:
    async with open_node(tmp_path, stamp_bits=20) as victim:
        sender = factory.identity(8200)
        async with raw_link(victim, sender) as ws:
            await ws.send_bytes(encode_message(Stamps(((sender.public_key, b"\x01" * 8),))))
            # an entry after it on the same link: once it has landed, the stamp frame was judged
            entry = factory.Feeds(SWARM).sign(sender, factory.post("after"))
            await ws.send_bytes(encode_message(Entries((entry.wire,))))
            await wait_heads(victim, {sender.public_key: 1}, 10)
            link = victim.peer.stats()["peers"][sender.node_id]
        assert link["rejects"].get("bad_stamp") == 1 and link["score"] < 0, link
        assert sender.public_key not in victim.peer.quotas.stamps


async def test_restart_keeps_what_strangers_hold_counted(tmp_path: Path) -> None:
    stranger = factory.identity(8300)
    me = factory.identity(8301)
    async with open_node(tmp_path, identity=me, **QUOTA) as a:
        await hold_big_posts(a, stranger, 2)
    async with open_node(tmp_path, identity=me, **QUOTA) as a:
        held = a.peer.quotas.stored[stranger.public_key]
        assert held == sum(len(w) for w in await a.ledger.wires_after(stranger.public_key, 0, 10)) > 16_000
        assert a.peer.quotas.strangers_total == held


async def test_a_node_that_keeps_a_peer_table_mints_its_stamp_beside_it(tmp_path: Path) -> None:
    me = factory.identity(8400)
    async with open_node(tmp_path, identity=me, peer_table_path=tmp_path / "peers.json", stamp_bits=8) as a:
        await a.peer.wait_until(lambda: a.peer.quotas.stamp_of(me.public_key) is not None, 20)
    saved = (tmp_path / "stamp.json").read_text()
    async with open_node(tmp_path, identity=me, peer_table_path=tmp_path / "peers.json", stamp_bits=8) as a:
        await a.peer.wait_until(lambda: a.peer.quotas.stamp_of(me.public_key) is not None, 20)
    assert (tmp_path / "stamp.json").read_text() == saved   # kept, not minted again


async def test_others_stamps_are_kept_across_a_restart(tmp_path: Path) -> None:
    """A node passes stamps on with the feeds it relays, so it keeps the ones it checked."""
    me, other = factory.identity(8500), factory.identity(8501)
    nonce = mint_stamp(SWARM, other.public_key, 8)
    assert nonce is not None
    settings: dict[str, Any] = dict(identity=me, peer_table_path=tmp_path / "peers.json", stamp_bits=8)
    async with open_node(tmp_path, **settings) as a:
        async with raw_link(a, other) as ws:
            await ws.send_bytes(encode_message(Stamps(((other.public_key, nonce),))))
            entry = factory.Feeds(SWARM).sign(other, factory.post("after"))
            await ws.send_bytes(encode_message(Entries((entry.wire,))))
            await wait_heads(a, {other.public_key: 1}, 10)
        assert a.peer.quotas.stamp_of(other.public_key) == nonce
    async with open_node(tmp_path, **settings) as a:
        assert a.peer.quotas.stamp_of(other.public_key) == nonce
    (tmp_path / "stamps.json").write_text('{"stamps": {"%s": "%s"}}' % (other.public_key.hex(), "00" * 8))
    async with open_node(tmp_path, **settings) as a:   # an edited file: the stamp is checked again
        assert a.peer.quotas.stamp_of(other.public_key) in (None, b"\0" * 8)
        assert a.peer.quotas.stamp_of(other.public_key) is None or stamp_ok(SWARM, other.public_key, b"\0" * 8, 8)
