"""Swarm nodes as separate processes in their own network namespaces, joined by an emulated link layer.

Theory of operation. Every node gets a network namespace holding one TAP device (`sw0`) with an
address on a private /24; its peer process runs inside it (`ip netns exec`), so TCP, IP, ARP and the
sockets are the kernel's, per namespace. A *wire* process (`python -m tests.swarm.netns wire ...`;
the switch itself is tests/swarm/netwire.py) holds every TAP's file descriptor and is the switch
between them: it learns MAC addresses, floods
broadcasts, and gives each node's access link a one-way delay, a loss rate and a bit rate, the same
both ways; a frame from node i to node j crosses i's link and then j's. Links can be cut (`up=False`)
or put in different groups (a partition: frames between groups are dropped) while everything runs.

Why a userspace wire and not veth + bridge + `tc netem`: the kernel of this project's VM is built
without sch_netem (CONFIG_NET_SCH_NETEM is not set), so no kernel qdisc can delay a packet here;
the wire does in userspace what netem would, and only that. Each link direction is a FIFO with a
drop-tail backlog bound, so frames are never reordered.

The peer side (`python -m tests.swarm.netns peer ...`) is a real Ledger + Peer, driven by JSON lines
on stdin (one reply line on stdout per command), like tests/swarm/peer_process.py.

Knows nothing about pytest: tests/swarm/test_netns.py composes it.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.swarm.netwire import TAP_NAME, Link, Wire, WireError, open_tap

ROOT = Path(__file__).resolve().parents[2]
SUBNET = "10.99.0"           # addresses live only inside namespaces this module creates
PEER_PORT = 7400
NAME_PREFIX = "aswt"         # namespaces are named aswt<pid>x<n>i<node>; a dead pid's are swept
REPLY_TIMEOUT_S = 30.0       # a command that is not a wait must answer within this
IP_TIMEOUT_S = 10.0          # one `ip` command



class NetnsUnavailable(Exception):
    """This machine cannot run namespaced nodes (not root, no iproute2, no netns or no TUN)."""


async def run_wire(namespaces: list[str], seed: int) -> None:
    # TAPs are made before the loop starts: setns applies to the calling thread, and here it is the only one
    fds = [open_tap(ns, TAP_NAME) for ns in namespaces]
    wire = Wire(fds, random.Random(seed))
    reader = await _stdin_reader()
    _say(ready=True)
    try:
        while line := await reader.readline():
            try:
                _say(**wire.command(json.loads(line)))
            except (WireError, KeyError, TypeError, ValueError) as exc:
                _say(ok=False, error=str(exc))
    finally:
        wire.close()


# ---------------------------------------------------------------------------------------- peer


async def run_peer(ledger_path: Path, seed: int, host: str, bootstrap: tuple[str, ...]) -> None:
    from ledger import credits, fold
    from ledger.bodies import Mint
    from ledger.store import Ledger
    from swarm.peer import Peer, PeerConfig
    from tests.ledger import factory
    from tests.swarm.swarmkit import FAST, SPEC

    config = PeerConfig(host=host, port=PEER_PORT, bootstrap=bootstrap, seed=seed, **FAST)  # type: ignore[arg-type]
    async with Ledger.open(ledger_path, SPEC) as ledger, Peer.open(config, ledger, factory.identity(seed)) as peer:
        reader = await _stdin_reader()
        _say(address=peer.address)

        async def wait(heads: dict[bytes, int], timeout_s: float) -> dict[str, Any]:
            async def holds() -> bool:
                mine = await ledger.heads()
                return all(mine.get(a, 0) >= s for a, s in heads.items())

            try:
                await peer.wait_until(holds, timeout_s)
            except TimeoutError:
                return {"ok": False, "timeout": True, "count": await ledger.count()}
            return {"ok": True, "at_s": time.monotonic(), "count": await ledger.count()}

        def fold_digest() -> dict[str, Any]:
            tables = fold.tables(ledger.state)
            boards = {c: fold.leaderboard(ledger.state, c) for c in SPEC.spec.platform_classes}
            doc = repr((sorted(tables.balances.items()), sorted(tables.frozen.items()),
                        sorted(repr(r) for r in tables.records), sorted(tables.verdicts.items()), boards))
            return {"ok": True, "digest": hashlib.sha256(doc.encode()).hexdigest(),
                    "balances": {k.hex(): v for k, v in tables.balances.items()}, "records": len(tables.records)}

        async def handle(op: dict[str, Any]) -> dict[str, Any]:
            kind = op["op"]
            if kind == "posts":
                pad = "x" * int(op.get("pad", 0))
                for n in range(op["count"]):
                    entry = await peer.publish(factory.post(f"{seed} {n} {pad}"))
                return {"ok": True, "author": entry.author.hex(), "seq": entry.seq, "at_s": time.monotonic()}
            if kind == "claim":
                entry = await peer.publish(factory.claim(op["n"], op["val"]))
                return {"ok": True, "id": entry.id.hex(), "author": entry.author.hex(), "seq": entry.seq}
            if kind == "verify":  # a trusted verifier's seal and re-run, its record mint and its verification mint
                claim = await ledger.get(bytes.fromhex(op["claim"]))
                if claim is None:
                    return {"ok": False, "error": "claim not held"}
                await peer.publish(factory.seal(claim))  # as an anchor: then its replay is assigned
                ver = await peer.publish(factory.verify(claim, op["val"]))
                # the record mint the fold allows this verifier now (ledger/credits.py), if any
                mint, _ = credits.record_mint(ledger.state, ver.author, claim.id)
                if mint is not None:
                    await peer.publish(mint)
                entry = await peer.publish(Mint(reason="verification", subject=ver.id, quorum=[], to=ver.author,
                                                amount=1000, value=None, prev_best=None))
                return {"ok": True, "author": entry.author.hex(), "seq": entry.seq}
            if kind == "wait":
                heads = {bytes.fromhex(a): s for a, s in op["heads"].items()}
                return await wait(heads, float(op["timeout_s"]))
            if kind == "connected":  # waits until this many live connections
                want = int(op["count"])
                try:
                    await peer.wait_until(lambda: len(peer.connected()) >= want, float(op["timeout_s"]))
                except TimeoutError:
                    return {"ok": False, "timeout": True, "connected": len(peer.connected())}
                return {"ok": True, "connected": len(peer.connected())}
            if kind == "heads":
                return {"ok": True, "heads": {a.hex(): s for a, s in (await ledger.heads()).items()}}
            if kind == "fold":
                return fold_digest()
            if kind == "stats":
                stats = peer.stats()
                return {"ok": True, "connected": len(peer.connected()),
                        "rtt_ms": [p["rtt_ms"] for p in stats["peers"].values() if p.get("rtt_ms")],
                        "bytes_in": sum(p.get("bytes_in", 0) for p in stats["peers"].values()),
                        "bytes_out": sum(p.get("bytes_out", 0) for p in stats["peers"].values())}
            return {"ok": False, "error": f"unknown op {kind!r}"}

        while line := await reader.readline():
            _say(**await handle(json.loads(line)))


async def _stdin_reader() -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=1 << 20)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


# ---------------------------------------------------------------------------------------- parent side


def probe() -> str | None:
    """None if namespaced nodes can run here, else why not (for a skip message)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip",):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (no TUN/TAP support)"
    name = f"{NAME_PREFIX}{os.getpid()}probe"
    try:
        _ip("netns", "add", name)
    except NetnsUnavailable as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        fd = open_tap(name, TAP_NAME)
        os.close(fd)
    except OSError as exc:
        return f"cannot create a TAP device in a namespace: {exc}"
    finally:
        with contextlib.suppress(NetnsUnavailable):
            _ip("netns", "del", name)
    return None


def _ip(*args: str) -> None:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")


def sweep_stale() -> None:
    """Deletes namespaces left by test processes that died before their cleanup ran."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=IP_TIMEOUT_S,
                             check=False)
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(NAME_PREFIX):
            continue
        pid = name[len(NAME_PREFIX):].split("x")[0].removesuffix("probe")
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(NetnsUnavailable):
                _ip("netns", "del", name)


class _Child:
    """A child process that answers one JSON line per command."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc, self.name = proc, name

    async def line(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                raw = await self.proc.stdout.readline()
        except TimeoutError:
            raise WireError(f"{self.name}: no answer within {timeout_s} s") from None
        if not raw:
            raise WireError(f"{self.name}: the process ended (rc {await self.proc.wait()})")
        return json.loads(raw)  # type: ignore[no-any-return]

    async def ask(self, op: str, reply_timeout_s: float = REPLY_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        await self.proc.stdin.drain()
        reply = await self.line(reply_timeout_s)
        if not reply.get("ok") and not reply.get("timeout"):
            raise WireError(f"{self.name}: {op} failed: {reply}")
        return reply

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


@dataclass
class NetPeer:
    index: int
    seed: int
    address: str
    child: _Child

    async def ask(self, op: str, reply_timeout_s: float = REPLY_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
        return await self.child.ask(op, reply_timeout_s, **fields)


class Net:
    """Namespaces, the wire and the peer processes of one test; `open_net` owns their lifetime."""

    def __init__(self, names: list[str], wire: _Child, tmp: Path) -> None:
        self.names, self.wire, self.tmp = names, wire, tmp
        self.peers: list[NetPeer] = []
        self._children: list[_Child] = [wire]

    def address(self, i: int) -> str:
        return f"{SUBNET}.{10 + i}"

    async def set_link(self, i: int, link: Link) -> None:
        await self.wire.ask("set", port=i, link=asdict(link))

    async def stats(self) -> list[dict[str, int]]:
        return (await self.wire.ask("stats"))["ports"]  # type: ignore[no-any-return]

    async def start_peers(self, seeds: list[int], bootstrap: int | None = 0,
                          timeout_s: float = 90.0) -> list[NetPeer]:
        """Starts one peer process per node (all at once), each bootstrapping from node `bootstrap`."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        started = []
        for i, seed in enumerate(seeds):
            boot = [f"{self.address(bootstrap)}:{PEER_PORT}"] if bootstrap is not None and i != bootstrap else []
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", self.names[i], sys.executable, "-m", "tests.swarm.netns", "peer",
                str(self.tmp / f"node{i}.ledger"), str(seed), self.address(i), *boot,
                cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            child = _Child(proc, f"peer {i}")
            self._children.append(child)
            started.append((i, seed, child))
        hellos = await asyncio.gather(*(c.line(timeout_s) for _, _, c in started))
        self.peers = [NetPeer(i, s, h["address"], c) for (i, s, c), h in zip(started, hellos)]
        return self.peers

    async def aclose(self) -> None:
        for child in self._children:
            with contextlib.suppress(ProcessLookupError):
                await child.kill()


@contextlib.asynccontextmanager
async def open_net(size: int, tmp: Path, link: Link = Link(), *, seed: int = 0) -> AsyncIterator[Net]:
    """`size` namespaces on one wire, every link set to `link`. Everything is removed on exit."""
    if size > 200:
        raise ValueError("at most 200 nodes on one /24")
    sweep_stale()
    tag = f"{NAME_PREFIX}{os.getpid()}x{time.monotonic_ns() % 10**6}"
    names = [f"{tag}i{i}" for i in range(size)]
    made: list[str] = []
    net: Net | None = None
    try:
        for name in names:
            _ip("netns", "add", name)
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.swarm.netns", "wire", str(seed), *names, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        net = Net(names, _Child(proc, "wire"), tmp)
        await net.wire.line(REPLY_TIMEOUT_S)
        for i, name in enumerate(names):
            _ip("-n", name, "addr", "add", f"{net.address(i)}/24", "dev", TAP_NAME)
            _ip("-n", name, "link", "set", TAP_NAME, "up")
            await net.set_link(i, link)
        yield net
    finally:
        if net is not None:
            await net.aclose()
        for name in made:
            with contextlib.suppress(NetnsUnavailable):
                _ip("netns", "del", name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.swarm.netns")
    sub = parser.add_subparsers(dest="role", required=True)
    w = sub.add_parser("wire")
    w.add_argument("seed", type=int)
    w.add_argument("namespaces", nargs="+")
    p = sub.add_parser("peer")
    p.add_argument("ledger", type=Path)
    p.add_argument("seed", type=int)
    p.add_argument("host")
    p.add_argument("bootstrap", nargs="*")
    args = parser.parse_args(argv)
    if args.role == "wire":
        asyncio.run(run_wire(args.namespaces, args.seed))
    else:
        asyncio.run(run_peer(args.ledger, args.seed, args.host, tuple(args.bootstrap)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
