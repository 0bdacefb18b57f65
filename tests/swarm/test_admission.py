"""The peer port under the attacks of issue 14, against real servers on 127.0.0.x.

Linux routes all of 127.0.0.0/8 to loopback, so a client bound to 127.0.0.N looks like another
address (and 127.0.1.N like another /24) to the listener.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from hypothesis import given
from hypothesis import strategies as st

from swarm.admission import Admission, AdmissionLimits, subnet_of
from swarm.peer import WS_PATH, PeerConfig
from tests.ledger import factory
from tests.swarm.swarmkit import PORT_DEFAULTS, Node, open_node, wait_connected
from tests.swarm.test_hostile import handshake, hello_wire


def test_subnets() -> None:
    assert subnet_of("10.1.2.3") == subnet_of("10.1.2.200") == "10.1.2.0/24"
    assert subnet_of("10.1.3.3") != subnet_of("10.1.2.3")
    assert subnet_of("2001:db8:1:2::1") == subnet_of("2001:db8:1:ffff::9") == "2001:db8:1::/48"
    assert subnet_of("::ffff:10.1.2.3") == "10.1.2.0/24"
    assert subnet_of("not-an-ip") == "not-an-ip"


@given(st.lists(st.tuples(st.sampled_from(["a", "r", "i"]), st.integers(0, 11)), max_size=200))
def test_admission_counts_stay_within_limits(ops: list[tuple[str, int]]) -> None:
    limits = AdmissionLimits(max_inbound=6, per_addr=2, per_subnet=3, max_half_open=4, reserved_useful=2)
    adm = Admission(limits)
    hosts = [f"10.0.{i // 4}.{i}" for i in range(12)]
    half: list[str] = []
    full: list[tuple[str, str | None]] = []
    for op, i in ops:
        if op == "a" and adm.admit(hosts[i], 0.0) is None:
            half.append(hosts[i])
        elif op == "i" and half:
            host = half.pop()
            full.append((host, adm.admit_identity(host, bytes([i]))[0]))
        elif op == "r" and (half or full):
            if full:
                host, kind = full.pop()
                adm.release(host, identified=True, kind=kind)
            else:
                adm.release(half.pop(), identified=False, kind=None)
        assert adm.open == sum(1 for _, kind in full if kind is not None) <= limits.max_inbound
        assert adm.half_open == len(half) <= limits.max_half_open
        assert adm.ordinary <= limits.max_inbound - limits.reserved_useful
        for h in hosts:
            assert sum(1 for x in half + [f for f, _ in full] if x == h) <= limits.per_addr


@asynccontextmanager
async def client(source: str) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        yield http


async def honest_dial(tmp_path: Path, node: Node, source: str) -> bool:
    async with open_node(tmp_path, dial_from=source, **PORT_DEFAULTS) as honest:
        try:
            await honest.peer.connect(node.address)
        except Exception:  # noqa: BLE001 - any failure is a refused dial here
            return False
        return honest.identity.public_key in node.peer.connected()


async def test_fresh_ids_from_one_address_cannot_take_every_slot(tmp_path: Path) -> None:
    async with open_node(tmp_path, **PORT_DEFAULTS) as node, client("127.0.0.1") as http:
        held: list[aiohttp.ClientWebSocketResponse] = []
        refused = 0
        for i in range(12):
            try:
                ws = await http.ws_connect(f"http://{node.address}{WS_PATH}")
            except aiohttp.WSServerHandshakeError:
                refused += 1
                continue
            held.append(ws)
            assert await handshake(ws, hello_wire(factory.identity(2000 + i))) is not None
        assert len(held) == PORT_DEFAULTS["max_inbound_per_addr"] and refused == 12 - len(held)
        assert node.peer.stats()["refused"]["addr"] == refused
        assert await honest_dial(tmp_path, node, "127.0.0.2")
        for ws in held:
            await ws.close()


async def test_plain_gets_spend_no_handshake_allowance(tmp_path: Path) -> None:
    async with open_node(tmp_path, **PORT_DEFAULTS) as node:
        for i in range(3):
            async with client(f"127.0.2.{i + 1}") as http:
                for _ in range(100):
                    async with http.get(f"http://{node.address}{WS_PATH}") as resp:
                        assert resp.status == 400
        assert node.peer.stats()["refused"] == {"not_websocket": 300}
        assert all([await honest_dial(tmp_path, node, f"127.0.3.{i + 1}") for i in range(5)])


async def test_half_open_connections_are_capped_and_timed_out(tmp_path: Path) -> None:
    timeout_s = 1.0
    async with open_node(tmp_path, handshake_timeout_s=timeout_s, **PORT_DEFAULTS) as node:
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        sessions = [client(f"127.0.4.{i + 1}") for i in range(4)]
        https = [await s.__aenter__() for s in sessions]
        try:
            for http in https:  # 4 addresses x 4 upgrades, no hello: capped by address and subnet
                for _ in range(4):
                    try:
                        sockets.append(await http.ws_connect(f"http://{node.address}{WS_PATH}"))
                    except aiohttp.WSServerHandshakeError:
                        pass
            assert len(sockets) <= PORT_DEFAULTS["max_inbound_per_subnet"] // 2
            assert await honest_dial(tmp_path, node, "127.0.5.1")  # another subnet gets in meanwhile
            t0 = time.monotonic()
            # no hello within the handshake timeout: the node closes every half-open socket
            await asyncio.wait_for(asyncio.gather(*(ws.receive() for ws in sockets)), 10 * timeout_s)
            assert all(ws.closed for ws in sockets) and time.monotonic() - t0 < 5 * timeout_s
            assert node.peer.admission.half_open == 0
        finally:
            for s in sessions:
                await s.__aexit__(None, None, None)


async def test_reserved_slots_let_a_useful_peer_back_in(tmp_path: Path) -> None:
    config = dict(PORT_DEFAULTS, max_inbound=8, reserved_useful=2, max_inbound_per_addr=8, max_inbound_per_subnet=8)
    async with open_node(tmp_path, **config) as node, client("127.0.6.1") as http:
        useful = factory.identity(2100)
        node.peer.admission.mark_useful(useful.public_key)
        held = []
        for i in range(6):  # the ordinary slots
            ws = await http.ws_connect(f"http://{node.address}{WS_PATH}")
            assert await handshake(ws, hello_wire(factory.identity(2200 + i))) is not None
            held.append(ws)
        ws = await http.ws_connect(f"http://{node.address}{WS_PATH}")
        assert await handshake(ws, hello_wire(factory.identity(2300))) is None   # a stranger: no slot
        assert node.peer.stats()["refused"]["reserved"] == 1
        ws = await http.ws_connect(f"http://{node.address}{WS_PATH}")
        assert await handshake(ws, hello_wire(useful)) is not None   # a peer that proved useful: in
        await wait_connected(node, 7, 10)
        assert PeerConfig().reserved_useful > 0
