"""The swarm-side attacks of issue 14 against a real default peer on loopback, bounded in count and time.

    .venv/bin/python scripts/bench_hostile.py                # one JSON object per attack

Each attack runs against a fresh victim (a `swarm.peer.Peer` with the default `PeerConfig`, its
own SQLite ledger in a temporary folder) while honest nodes dial it from other loopback
addresses (Linux routes all of 127.0.0.0/8 to loopback, so 127.0.N.1 is another /24) and publish
entries. Printed per attack: honest dials accepted, honest entries delivered to the victim,
the attacker's share of the victim's connections (or of its address table and dial choice),
and the counters that show the defence at work.

- slots:     fresh node ids from one address try to take every inbound slot
- slowloris: websocket upgrades that never send a hello, reopened as soon as they are closed
- plain_get: plain GETs at the websocket path, to spend the handshake allowance
- pending:   entries whose seq 1 never comes, to fill the pending area
- eclipse:   gossiped addresses from one peer, to fill the address table and the next dials
- disk:      8 KB posts from 43 fresh keys pushed as fast as the link takes them (issue 14's
             42,100 in 30 s, scaled down), while a stamped honest node publishes 8 KB posts too
- flood:     the same posts, past each key's quota, pushed from the link's first second: the
             seconds until the victim bans the flooder (one fresh victim per try, median of
             `flood_tries`), then the flooder's key from another address and a fresh key from its
             address are both refused, and honest nodes still dial and deliver
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.bodies import Post  # noqa: E402
from ledger.entry import sign_entry  # noqa: E402
from ledger.keys import Identity  # noqa: E402
from ledger.spec import SwarmSpec, sign_spec  # noqa: E402
from ledger.store import Ledger  # noqa: E402
from swarm.handshake import new_nonce, sign_hello  # noqa: E402
from swarm.peer import WS_PATH, Peer, PeerConfig  # noqa: E402
from swarm.peertable import choose_dials, group_of, host_of  # noqa: E402
from swarm.protocol import Entries, Peers, encode_message  # noqa: E402

ATTACK_S = 20.0      # every attack ends by then


def identity(n: int) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"hostile-%d" % n).digest())


SPEC = sign_spec(identity(-1), SwarmSpec(
    name="hostile", creator=identity(-1).public_key, created_ms=0, harness_hash=b"h" * 32,
    dataset_hash=b"d" * 32, tokenizer_hash=b"t" * 32, time_budget_s=300, metric="val_bpb", direction="min",
    baseline_commit=b"\x00" * 20, allowed_files=["train.py"], platform_classes=["cpu"], verifiers=[],
    quorum=1, noise_bpb={"cpu": 0.01}, record_ucr_per_bpb=1, verify_ucr=1,
))


@dataclass
class Scale:
    attackers: int = 64          # attacker connections, requests or keys, per attack
    honest: int = 20             # honest dials per attack
    entries: int = 5             # entries each honest dialer publishes
    flood_entries: int = 2000    # pending-area flood
    addrs: int = 5000            # gossiped addresses
    disk_keys: int = 43          # fresh keys of the disk flood
    disk_posts: int = 4300       # 8 KB posts they push, all keys together
    honest_big: int = 40         # 8 KB posts the stamped honest node publishes (over the unstamped quota)
    flood_per_key: int = 60      # 8 KB posts per fresh key in the ban-time flood (its quota holds 31)
    flood_tries: int = 5         # victims flooded, for the median ban time


@contextlib.asynccontextmanager
async def node(tmp: Path, n: int, **config: Any) -> AsyncIterator[Peer]:
    async with (Ledger.open(tmp / f"n{n}.ledger", SPEC) as ledger,
                Peer.open(PeerConfig(**config), ledger, identity(n)) as peer):
        yield peer


def hello(n: int) -> bytes:
    return sign_hello(identity(n), swarm=SPEC.swarm_id, listen="", time_ms=int(time.time() * 1000),
                      nonce=new_nonce()).wire


@contextlib.asynccontextmanager
async def session(source: str) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as http:
        yield http


async def honest_round(tmp: Path, victim: Peer, scale: Scale, first: int,
                       attacker_ids: frozenset[bytes] = frozenset()) -> dict[str, Any]:
    """`scale.honest` nodes, each from its own /24, dial the victim and publish, all at once open;
    what got through, and the attacker's share of the victim's connections meanwhile."""
    accepted: list[Peer] = []
    async with contextlib.AsyncExitStack() as stack:
        for i in range(scale.honest):
            n = first + i
            peer = await stack.enter_async_context(
                node(tmp, n, dial_from=f"127.{1 + n // 250}.{n % 250}.1", host="127.0.0.1"))
            try:
                await peer.connect(victim.address)
            except Exception:  # noqa: BLE001 - a refused dial, whatever the reason
                continue
            if peer.node_id in victim.connected():
                accepted.append(peer)
        for peer in accepted:
            for k in range(scale.entries):
                await peer.publish(Post(channel="h", text=f"{k}", reply_to=None))

        async def holds() -> bool:
            seqs = [await victim.replicator.port.head_seq(p.node_id) for p in accepted]
            return all(s >= scale.entries for s in seqs)

        with contextlib.suppress(TimeoutError):
            await victim.wait_until(holds, 10 + scale.honest)
        delivered = sum([await victim.replicator.port.head_seq(p.node_id) for p in accepted])
        conns = victim.connected()
        attacker_share = sum(1 for c in conns if c in attacker_ids) / max(1, len(conns))
    return {"honest_dials": scale.honest, "honest_dials_accepted": len(accepted),
            "honest_accept_share": round(len(accepted) / scale.honest, 3),
            "honest_entries_delivered": round(delivered / max(1, len(accepted) * scale.entries), 3),
            "attacker_share": round(attacker_share, 3)}


async def attack_slots(tmp: Path, victim: Peer, scale: Scale) -> dict[str, Any]:
    held: list[aiohttp.ClientWebSocketResponse] = []
    ids = frozenset(identity(10_000 + i).public_key for i in range(scale.attackers))
    async with session("127.0.0.1") as http:
        for i in range(scale.attackers):
            try:
                ws = await http.ws_connect(f"http://{victim.address}{WS_PATH}")
            except aiohttp.ClientError:
                continue
            await ws.send_bytes(hello(10_000 + i))
            held.append(ws)
        attacker_connections = sum(1 for c in victim.connected() if c in ids)
        result = await honest_round(tmp, victim, scale, 100, ids)
        result.update(attacker_tries=scale.attackers, attacker_connections=attacker_connections)
        for ws in held:
            await ws.close()
    return result


async def attack_slowloris(tmp: Path, victim: Peer, scale: Scale) -> dict[str, Any]:
    opened = refused = 0
    stop = asyncio.Event()

    async def hold(source: str) -> None:
        nonlocal opened, refused
        async with session(source) as http:
            while not stop.is_set():
                try:
                    ws = await http.ws_connect(f"http://{victim.address}{WS_PATH}")
                except aiohttp.ClientError:
                    refused += 1
                    await asyncio.sleep(0.05)
                    continue
                opened += 1
                await ws.receive()   # never a hello: wait for the victim to close it, then again
                await ws.close()

    sources = [f"127.0.{200 + i % 8}.{1 + i // 8}" for i in range(scale.attackers)]
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(hold(s)) for s in sources]
        await asyncio.sleep(0.5)
        result = await honest_round(tmp, victim, scale, 200)
        stop.set()
        for task in tasks:
            task.cancel()
    result.update(attacker_sources=len(sources), half_open_opened=opened, half_open_refused=refused)
    return result


async def attack_plain_get(tmp: Path, victim: Peer, scale: Scale) -> dict[str, Any]:
    statuses: dict[int, int] = {}
    async with session("127.0.0.1") as http:
        for _ in range(scale.attackers * 10):
            async with http.get(f"http://{victim.address}{WS_PATH}") as resp:
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
    result = await honest_round(tmp, victim, scale, 300)
    result.update(plain_gets=scale.attackers * 10, answered=statuses)
    return result


async def attack_pending(tmp: Path, victim: Peer, scale: Scale) -> dict[str, Any]:
    keys = [identity(20_000 + i) for i in range(10)]
    wires = [sign_entry(k, swarm=SPEC.swarm_id, seq=seq, prev=bytes([seq % 256]) * 32,
                        body=Post(channel="x", text=str(seq), reply_to=None), time_ms=1).wire
             for seq in range(2, 2 + scale.flood_entries // len(keys)) for k in keys]
    sent = 0
    async with session("127.0.0.1") as http:
        ws = await http.ws_connect(f"http://{victim.address}{WS_PATH}")
        await ws.send_bytes(hello(20_999))
        await ws.receive()
        try:
            for start in range(0, len(wires), 50):
                await ws.send_bytes(encode_message(Entries(tuple(wires[start:start + 50]))))
                sent += len(wires[start:start + 50])
        except (aiohttp.ClientError, ConnectionError):
            pass
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while not ws.closed and identity(20_999).public_key in victim.connected():
                    await ws.receive()
        result = await honest_round(tmp, victim, scale, 400)
        await ws.close()
    result.update(flood_sent=sent, pending_in_area=victim.replicator.port.pending_count,
                  attacker_banned=victim.stats()["bans"] >= 1)
    return result


async def attack_eclipse(tmp: Path, victim: Peer, scale: Scale) -> dict[str, Any]:
    """Eight attacker links gossip addresses of their own /16; the victim also knows honest peers."""
    honest_addrs = [f"{11 + i}.{i}.0.1:7400" for i in range(16)]   # as if learned from 16 groups
    for i, addr in enumerate(honest_addrs):
        victim.table.add(addr, source=f"{11 + i}.0.0.0/16")
    attacker = [f"66.6.{i // 250}.{i % 250 + 1}:7400" for i in range(scale.addrs)]
    ids: set[bytes] = set()
    async with contextlib.AsyncExitStack() as stack:
        for link in range(8):
            http = await stack.enter_async_context(session(f"127.0.{50 + link}.1"))
            ws = await http.ws_connect(f"http://{victim.address}{WS_PATH}")
            await ws.send_bytes(hello(30_000 + link))
            ids.add(identity(30_000 + link).public_key)
            await ws.receive()
            for start in range(0, len(attacker) // 8, 64):
                chunk = attacker[link * len(attacker) // 8:][start:start + 64]
                if chunk:
                    await ws.send_bytes(encode_message(Peers(tuple(chunk))))
        await asyncio.sleep(0.5)   # the Peers frames are read in order; nothing to wait on in the table
        rows = list(victim.table.records)
        bad = [a for a in rows if a.startswith("66.")]
        rng = random.Random(1)
        dials: list[str] = []
        for _ in range(20):   # twenty dial rounds of 8 from this table, as a fresh node would make
            dials += choose_dials(victim.table, connected=[], banned=(), own=(), want=8, now_s=0.0, rng=rng)
        result = await honest_round(tmp, victim, scale, 500, frozenset(ids))
    result.update(gossiped=len(attacker), table=len(rows), attacker_in_table=len(bad),
                  attacker_table_share=round(len(bad) / max(1, len(rows)), 3),
                  attacker_dial_share=round(sum(1 for a in dials if a.startswith("66.")) / max(1, len(dials)), 3),
                  dial_groups=len({group_of(host_of(a)) for a in dials[:8]}))
    return result


async def attack_disk(tmp: Path, victim: Peer, scale: Scale) -> dict[str, Any]:
    """Fresh keys flood 8 KB posts over one link; honest nodes from other /24s publish meanwhile,
    one of them stamped and publishing 8 KB posts past the unstamped quota."""
    text = "x" * 8000
    keys = [identity(40_000 + i) for i in range(scale.disk_keys)]
    per_key = max(1, scale.disk_posts // len(keys))
    wires = flood_wires(keys, per_key, text)
    flooder = identity(40_999)
    sent = 0
    async with contextlib.AsyncExitStack() as stack:
        # the stamped honest node: its stamp is minted once per key (the node keeps it in its home)
        t_mint = time.perf_counter()
        honest = await stack.enter_async_context(node(tmp, 600, dial_from="127.3.100.1", host="127.0.0.1",
                                                      stamp_path=tmp / "honest.stamp"))
        await honest.wait_until(lambda: honest.quotas.stamp_of(honest.node_id) is not None, 120)
        mint_s = time.perf_counter() - t_mint
        await honest.connect(victim.address)
        http = await stack.enter_async_context(session("127.0.0.1"))
        ws = await http.ws_connect(f"http://{victim.address}{WS_PATH}")
        await ws.send_bytes(hello(40_999))
        await ws.receive()
        t0 = time.perf_counter()
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            for start in range(0, len(wires), 8):
                await ws.send_bytes(encode_message(Entries(tuple(wires[start:start + 8]))))
                sent += len(wires[start:start + 8])
        flood_s = time.perf_counter() - t0
        for _ in range(scale.honest_big):
            await honest.publish(Post(channel="general", text=text, reply_to=None))

        async def big_delivered() -> bool:
            return await victim.replicator.port.head_seq(honest.node_id) >= scale.honest_big

        with contextlib.suppress(TimeoutError):
            await victim.wait_until(big_delivered, 30)
        big = await victim.replicator.port.head_seq(honest.node_id)
        result = await honest_round(tmp, victim, scale, 700, frozenset({flooder.public_key}))
        await ws.close()
    held = await victim.replicator.port.stored_bytes(frozenset({victim.node_id}))
    attacker = {k.public_key for k in keys}
    quota = victim.quotas.limits
    result.update(
        attacker_keys=len(keys), flood_posts=len(wires), flood_sent=sent,
        flood_bytes=sum(len(w) for w in wires), flood_s=round(flood_s, 2),
        attacker_bytes_stored=sum(v for a, v in held.items() if a in attacker),
        strangers_bytes_stored=sum(held.values()), quota_bytes=quota.strangers_bytes,
        per_key_quota_bytes=quota.fresh_author_bytes, within_quota=sum(held.values()) <= quota.strangers_bytes,
        stamped_honest_posts=scale.honest_big, stamped_honest_delivered=round(big / scale.honest_big, 3),
        stamp_bits=victim.config.stamp_bits, stamp_mint_s=round(mint_s, 2),
        refused=dict(victim.quotas.refused), attacker_banned=victim.stats()["bans"] >= 1)
    return result


async def flood_once(victim: Peer, wires: list[bytes], flooder: int, source: str) -> tuple[float | None, int]:
    """Pushes `wires` from `source` from the first second after the hellos; (seconds until the
    victim closed the link, None if it never did within ATTACK_S; entries sent)."""
    sent = 0
    async with session(source) as http:
        ws = await http.ws_connect(f"http://{victim.address}{WS_PATH}")
        await ws.send_bytes(hello(flooder))
        await ws.receive()
        t0 = time.perf_counter()
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            for start in range(0, len(wires), 8):
                if ws.closed:
                    break
                await ws.send_bytes(encode_message(Entries(tuple(wires[start:start + 8]))))
                sent += len(wires[start:start + 8])
        with contextlib.suppress(TimeoutError, aiohttp.ClientError):
            async with asyncio.timeout(ATTACK_S):
                while not ws.closed:
                    message = await ws.receive()
                    if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                        break
        seconds = time.perf_counter() - t0
        await ws.close()
    return (seconds if victim.stats()["bans"] >= 1 else None), sent


async def refused(victim: Peer, flooder: int, source: str) -> bool:
    """Whether a link from `source` with key `flooder` is refused (at the upgrade or the hello)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10), session(source) as http:
            try:
                ws = await http.ws_connect(f"http://{victim.address}{WS_PATH}")
            except aiohttp.WSServerHandshakeError:
                return True
            await ws.send_bytes(hello(flooder))
            answer = await ws.receive()
            await ws.close()
            return answer.type != aiohttp.WSMsgType.BINARY
    return False


async def attack_flood(tmp: Path, victim: Peer, scale: Scale) -> dict[str, Any]:
    """Over-quota posts from fresh keys, from the first second of the link: seconds to the ban."""
    text = "x" * 8000
    seconds: list[float | None] = []
    sent = 0
    for attempt in range(scale.flood_tries):
        keys = [identity(50_000 + 1000 * attempt + i) for i in range(scale.disk_keys)]
        wires = flood_wires(keys, scale.flood_per_key, text)
        async with contextlib.AsyncExitStack() as stack:
            target = victim if attempt == 0 else await stack.enter_async_context(
                node(tmp, 900 + attempt, host="127.0.0.1"))
            took, sent = await flood_once(target, wires, 50_999 - attempt, f"127.0.{90 + attempt}.1")
        seconds.append(took)
    by_key = await refused(victim, 50_999, "127.0.89.1")      # its key, from an address not banned
    by_addr = await refused(victim, 50_998 - scale.flood_tries, "127.0.90.1")   # a fresh key from its address
    result = await honest_round(tmp, victim, scale, 800, frozenset({identity(50_999).public_key}))
    banned = sorted(s for s in seconds if s is not None)
    result.update(
        attacker_keys=scale.disk_keys, flood_posts=scale.disk_keys * scale.flood_per_key, flood_sent_last=sent,
        tries=scale.flood_tries, banned_tries=len(banned), ban_s=[None if s is None else round(s, 2) for s in seconds],
        ban_s_median=round(statistics.median(banned), 2) if len(banned) == len(seconds) else None,
        refused_by_key=by_key, refused_by_addr=by_addr, attacker_banned=bool(banned),
        quota_author_refused=victim.quotas.refused["quota_author"])
    return result


def flood_wires(keys: list[Identity], per_key: int, text: str) -> list[bytes]:
    """Each key's feed from seq 1, chained, interleaved across keys as a flooder would send them."""
    prevs: dict[bytes, bytes] = {}
    wires = []
    for seq in range(1, per_key + 1):
        for k in keys:
            entry = sign_entry(k, swarm=SPEC.swarm_id, seq=seq, prev=prevs.get(k.public_key),
                               body=Post(channel="general", text=text, reply_to=None), time_ms=seq)
            prevs[k.public_key] = entry.id
            wires.append(entry.wire)
    return wires


ATTACKS = {"slots": attack_slots, "slowloris": attack_slowloris, "plain_get": attack_plain_get,
           "pending": attack_pending, "eclipse": attack_eclipse, "disk": attack_disk, "flood": attack_flood}


async def run_attack(name: str, scale: Scale) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        t0 = time.perf_counter()
        async with node(Path(tmp), 0, host="127.0.0.1") as victim:
            async with asyncio.timeout(ATTACK_S * (1 + scale.flood_tries) + scale.honest * 12):
                result = await ATTACKS[name](Path(tmp), victim, scale)
        return {"attack": name, **result, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attack", choices=sorted(ATTACKS), action="append")
    parser.add_argument("--attackers", type=int, default=Scale.attackers)
    parser.add_argument("--honest", type=int, default=Scale.honest)
    parser.add_argument("--flood-tries", type=int, default=Scale.flood_tries)
    args = parser.parse_args(argv)
    scale = Scale(attackers=args.attackers, honest=args.honest, flood_tries=args.flood_tries)
    for name in args.attack or list(ATTACKS):
        print(json.dumps(asyncio.run(run_attack(name, scale))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
