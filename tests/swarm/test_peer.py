"""The peer: connecting, limits, HTTP answers, the peer table across restarts, stats, and two
real processes replicating a ledger and a bundle over loopback."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ledger.audit import audit_file
from ledger.store import Ledger
from swarm.errors import BadMessage, PeerUnavailable, SwarmError
from swarm.join import fetch_spec
from swarm.peer import Peer, PeerConfig
from tests.ledger import factory
from tests.swarm.swarmkit import FAST, SPEC, open_node, wait_all, wait_connected

ROOT = Path(__file__).resolve().parents[2]


async def test_two_peers_replicate_both_ways_and_count(tmp_path: Path) -> None:
    async with open_node(tmp_path) as a, open_node(tmp_path, bootstrap=(a.address,)) as b:
        await wait_connected(a, 1, 10)
        ea = await a.peer.publish(factory.post("from a"))
        eb = [await b.peer.publish(factory.post(f"from b {i}")) for i in range(5)]
        await wait_all([a, b], {ea.author: 1, eb[0].author: 5}, 10)
        async with asyncio.timeout(10):
            while a.peer.stats()["peers"][b.identity.node_id]["rtt_ms"] is None:
                await asyncio.sleep(0.05)  # polls a counter; the rtt itself needs a ping interval
        snap = a.peer.stats()["peers"][b.identity.node_id]
        assert snap["entries_in"] == 5 and snap["entries_out"] == 1
        assert snap["bytes_in"] > 0 and snap["bytes_out"] > 0 and snap["rejects"] == {}
        assert snap["rtt_ms"] >= 0 and json.dumps(a.peer.stats())  # a plain, JSON-able dict


async def test_one_connection_per_pair_when_both_dial(tmp_path: Path) -> None:
    async with open_node(tmp_path) as a, open_node(tmp_path) as b:
        await asyncio.gather(a.peer.connect(b.address), b.peer.connect(a.address), return_exceptions=True)
        await wait_connected(a, 1, 10)
        await wait_connected(b, 1, 10)
        e = await a.peer.publish(factory.post())
        await wait_all([b], {e.author: 1}, 10)
        assert a.peer.connected() == [b.identity.public_key] and b.peer.connected() == [a.identity.public_key]


async def test_inbound_limit(tmp_path: Path) -> None:
    async with open_node(tmp_path, max_inbound=1) as a, open_node(tmp_path) as b, open_node(tmp_path) as c:
        await b.peer.connect(a.address)
        with pytest.raises(PeerUnavailable):
            await c.peer.connect(a.address)
        assert a.peer.stats()["refused"] == {"limit": 1}
        assert a.peer.connected() == [b.identity.public_key]


async def test_outbound_limit(tmp_path: Path) -> None:
    async with open_node(tmp_path) as a, open_node(tmp_path) as b, open_node(tmp_path) as c:
        async with open_node(tmp_path, max_outbound=1, bootstrap=(a.address, b.address, c.address)) as d:
            await wait_connected(d, 1, 10)
            e = await d.peer.publish(factory.post())  # wakes waiters: a second dial would be visible
            await wait_all([d], {e.author: 1}, 5)
            assert len(d.peer.connected()) == 1


async def test_http_answers_are_short_4xx(tmp_path: Path) -> None:
    bundles = {b"\x07" * 32: b"bundle-bytes"}

    async def source(sha: bytes) -> bytes | None:
        return bundles.get(sha)

    async with Ledger.open(tmp_path / "l", SPEC) as ledger, \
            Peer.open(PeerConfig(**FAST), ledger, factory.identity(3), bundle_source=source) as peer:  # type: ignore[arg-type]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            base = f"http://{peer.address}"
            async with http.get(base + "/swarm/v1/ws") as r:
                assert r.status == 400 and "websocket" in await r.text()
            async with http.get(base + "/swarm/v1/bundle/XYZ") as r:
                assert r.status == 400
            async with http.get(base + "/swarm/v1/bundle/" + "ab" * 32) as r:
                assert r.status == 404
            async with http.post(base + "/swarm/v1/ws", data=b"x") as r:
                assert r.status == 405
        assert await peer.fetch_bundle(peer.address, b"\x07" * 32) == b"bundle-bytes"
        with pytest.raises(PeerUnavailable):
            await peer.fetch_bundle(peer.address, b"\x08" * 32)
        with pytest.raises(PeerUnavailable):
            await peer.fetch_bundle(peer.address, b"\x07" * 32, max_bytes=3)


async def test_peer_table_survives_restart(tmp_path: Path) -> None:
    table = tmp_path / "peers.json"
    async with open_node(tmp_path) as a:
        async with open_node(tmp_path, identity=factory.identity(77), peer_table_path=table,
                             bootstrap=(a.address,)) as b:
            await wait_connected(b, 1, 10)
        saved = json.loads(table.read_text())
        assert [p["addr"] for p in saved["peers"]] == [a.address]
        async with open_node(tmp_path, identity=factory.identity(77), peer_table_path=table) as b2:
            await wait_connected(b2, 1, 10)  # no bootstrap this time: the table remembered
            assert b2.peer.connected() == [a.identity.public_key]


async def test_peer_table_file_garbage_is_ignored(tmp_path: Path) -> None:
    table = tmp_path / "peers.json"
    table.write_text('{"version": 1, "peers": [{"addr": "bad host:1"}, {"addr": "127.0.0.1:9", "node": "zz"}, 3]}')
    async with open_node(tmp_path, peer_table_path=table) as a:
        assert list(a.peer.table.records) == ["127.0.0.1:9"]
        assert a.peer.table.records["127.0.0.1:9"].node == ""


def test_config_is_validated() -> None:
    with pytest.raises(SwarmError):
        PeerConfig(bootstrap=("nohost",))
    with pytest.raises(SwarmError):
        PeerConfig(port=70000)
    with pytest.raises(SwarmError):
        PeerConfig(anti_entropy_interval_s=0)


async def test_close_is_idempotent(tmp_path: Path) -> None:
    async with open_node(tmp_path) as a:
        await a.peer.aclose()
        await a.peer.aclose()


async def _line(proc: asyncio.subprocess.Process, timeout_s: float) -> dict[str, object]:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout_s):
        line = await proc.stdout.readline()
    assert line, "the child process ended early"
    return json.loads(line)  # type: ignore[no-any-return]


async def test_two_processes_replicate(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs: list[asyncio.subprocess.Process] = []

    async def spawn(name: str, seed: int, *bootstrap: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.swarm.peer_process", str(tmp_path / name), str(seed), "20", "41",
            *bootstrap, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    try:
        a = await spawn("a.ledger", 201)
        addr = (await _line(a, 60))["address"]
        b = await spawn("b.ledger", 202, str(addr))
        await _line(b, 60)
        done_a, done_b = await _line(a, 120), await _line(b, 120)
        assert done_a["converged"] == done_b["converged"] == 41  # 40 posts and a's claim
        assert done_a["heads"] == done_b["heads"]
        # b pulled the claim's bundle from a by hash, checked it and now holds the commit
        (pulled,) = done_b["bundles"]  # type: ignore[misc]
        assert pulled["train_py_matches"] and pulled["bytes"] < 500, pulled
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
    for name in ("a.ledger", "b.ledger"):
        report = await asyncio.to_thread(audit_file, tmp_path / name)
        assert report.ok and report.rows == 41, report.first_problem


async def test_peer_exchange_finds_more_peers(tmp_path: Path) -> None:
    async with open_node(tmp_path) as a, open_node(tmp_path, bootstrap=(a.address,)) as b:
        await wait_connected(a, 1, 10)
        async with open_node(tmp_path, bootstrap=(a.address,)) as c:
            await wait_connected(c, 2, 20)  # learnt b's address from a
            assert set(c.peer.connected()) == {a.identity.public_key, b.identity.public_key}


async def test_a_joining_node_fetches_the_signed_spec(tmp_path: Path) -> None:
    async with open_node(tmp_path) as node:
        got = await fetch_spec(node.address)
        assert got.wire == SPEC.wire and got.swarm_id == SPEC.swarm_id
    with pytest.raises(PeerUnavailable):  # the node is gone: a clear error, not a hang
        await fetch_spec(node.address, timeout_s=5.0)
    with pytest.raises(BadMessage):
        await fetch_spec("not an address")


async def test_an_unreachable_bootstrap_is_one_plain_sentence() -> None:
    """A closed port, a server that hangs up and one that never answers: each a sentence that says
    what happened, with no exception repr in it (what `python -m node --bootstrap` prints)."""
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()
        await writer.wait_closed()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # reads until the client gives up
        finally:
            writer.close()
            await writer.wait_closed()

    closed = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    closed_port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    messages = []
    async with await asyncio.start_server(hang_up, "127.0.0.1", 0) as rude, \
            await asyncio.start_server(silent, "127.0.0.1", 0) as mute:
        for port, timeout_s in ((closed_port, 20.0), (rude.sockets[0].getsockname()[1], 20.0),
                                (mute.sockets[0].getsockname()[1], 0.5)):
            with pytest.raises(PeerUnavailable) as caught:
                await fetch_spec(f"127.0.0.1:{port}", timeout_s=timeout_s)
            messages.append(str(caught.value))
    assert "cannot connect" in messages[0] and "closed the connection" in messages[1]
    assert "no answer within 0.5 s" in messages[2]
    for text in messages:
        assert "\n" not in text and "Error(" not in text and "<" not in text, text


async def test_a_joining_node_knows_when_it_holds_what_its_peer_holds(tmp_path: Path) -> None:
    async with open_node(tmp_path) as a:
        for i in range(30):
            await a.peer.publish(factory.post(f"before b joined {i}"))
        async with open_node(tmp_path, bootstrap=(a.address,)) as b:
            assert await b.peer.wait_synced(30.0)
            assert await b.ledger.heads() == await a.ledger.heads()
        async with open_node(tmp_path) as alone:
            assert not await alone.peer.wait_synced(0.5)  # nobody to agree with: a bounded False


async def test_close_waits_for_inbound_handlers_before_the_server_stops(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp's shutdown wait races a handler that ends just as it gives up (InvalidStateError,
    seen in bench_swarm's logs): the peer lets its inbound handlers end before the cleanup."""
    seen: list[int] = []
    async with open_node(tmp_path) as a:
        cleanup = web.AppRunner.cleanup

        async def watched_cleanup(runner: web.AppRunner) -> None:
            if runner is a.peer._runner:
                seen.append(a.peer.inbound.handlers)   # inbound handlers still running when the server stops
            await cleanup(runner)

        monkeypatch.setattr(web.AppRunner, "cleanup", watched_cleanup)
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                await stack.enter_async_context(open_node(tmp_path, bootstrap=(a.address,)))
            await wait_connected(a, 3, 10)
            assert a.peer.inbound.handlers == 3
            await a.peer.aclose()   # before its dialers close: their links end from this side
    assert seen == [0]
    assert "Unhandled exception" not in caplog.text
