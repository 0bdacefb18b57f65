"""Swarm benchmark: N full peers in one process on loopback, a random graph of degree about D.

Every peer has its own SQLite ledger in a temporary folder, so every hop checks the signature
and appends durably (WAL, synchronous=FULL). Prints one JSON object per line:

    {"metric": "latency", ...}     time for one signed entry to reach every peer: p50, p95, max;
                                   CPU ms this process spent per entry (load-independent), and
                                   the machine's load average (other work slows every figure)
    {"metric": "idle", ...}        CPU ms per second the connected swarm spends with nothing to send
    {"metric": "duplicates", ...}  receipts of an entry a peer already held, per peer per entry
    {"metric": "throughput", ...}  entries/s delivered to all peers, many authors publishing at once
    {"metric": "bundle", ...}      bytes of the bundle for a one-line change of trainer/train.py,
                                   ours and `git bundle create`'s for the same change

    python scripts/bench_swarm.py --peers 64
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.bodies import Post  # noqa: E402
from ledger.entry import Entry  # noqa: E402
from ledger.keys import Identity  # noqa: E402
from ledger.spec import SwarmSpec, sign_spec  # noqa: E402
from ledger.store import Ledger  # noqa: E402
from swarm import gitrepo, gossip  # noqa: E402
from swarm.bundles import make_bundle  # noqa: E402
from swarm.peer import Peer, PeerConfig  # noqa: E402

TRAIN_PY = Path(__file__).resolve().parent.parent / "trainer" / "train.py"


def identity(n: int) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"bench-%d" % n).digest())


def make_spec() -> Any:
    creator = identity(-1)
    spec = SwarmSpec(
        name="bench", creator=creator.public_key, created_ms=0, harness_hash=b"h" * 32, dataset_hash=b"d" * 32,
        tokenizer_hash=b"t" * 32, time_budget_s=300, metric="val_bpb", direction="min",
        baseline_commit=b"\x00" * 20, allowed_files=["train.py"], platform_classes=["cpu"], verifiers=[],
        quorum=1, noise_bpb={"cpu": 0.01}, record_ucr_per_bpb=1, verify_ucr=1,
    )
    return sign_spec(creator, spec)


def random_graph(n: int, degree: int, rng: random.Random) -> list[set[int]]:
    """Each node dials degree/2 random others: a connected random graph of average degree ~degree."""
    dials: list[set[int]] = [set() for _ in range(n)]
    order = list(range(n))
    rng.shuffle(order)
    for i in range(1, n):  # a random spanning path first, so the graph is connected
        dials[order[i]].add(order[i - 1])
    for node in range(n):
        while len(dials[node]) < max(1, degree // 2):
            other = rng.randrange(n)
            if other != node and node not in dials[other]:
                dials[node].add(other)
    return dials


class Arrivals:
    """Per entry id: how many peers have it, and when the last one got it."""

    def __init__(self, n_peers: int) -> None:
        self.n = n_peers
        self.count: dict[bytes, int] = {}
        self.done: dict[bytes, float] = {}
        self.events: dict[bytes, asyncio.Event] = {}

    def expect(self, eid: bytes) -> asyncio.Event:
        return self.events.setdefault(eid, asyncio.Event())

    def arrived(self, eid: bytes) -> None:
        c = self.count.get(eid, 0) + 1
        self.count[eid] = c
        if c == self.n:
            self.done[eid] = time.perf_counter()
            self.expect(eid).set()


async def collect(peer: Peer, arrivals: Arrivals, ready: asyncio.Event) -> None:
    async with peer.subscribe(maxsize=1_000_000) as queue:
        ready.set()
        while True:
            entry: Entry = await queue.get()
            arrivals.arrived(entry.id)


def duplicates(peers: list[Peer]) -> int:
    return sum(p["duplicates_in"] for peer in peers for p in peer.stats()["peers"].values())


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    signed = make_spec()
    n = args.peers
    dials = random_graph(n, args.degree, rng)
    cfg = dict(
        dial_interval_s=0.2, anti_entropy_interval_s=args.anti_entropy_s, ping_interval_s=30.0,
        peer_exchange=False, max_inbound=4 * args.degree, max_outbound=max(1, args.degree // 2) + 1,
        ingest_batch_wires=63, connect_timeout_s=30.0, handshake_timeout_s=30.0,
        # every peer dials from 127.0.0.1: the per-address and per-subnet limits would refuse them
        max_inbound_per_addr=4 * args.degree, max_inbound_per_subnet=4 * args.degree, max_half_open=8 * args.degree,
    )
    with tempfile.TemporaryDirectory(prefix="bench-swarm-", dir=args.tmp) as tmp:
        async with contextlib.AsyncExitStack() as stack:
            t_open = time.perf_counter()
            ledgers = [await stack.enter_async_context(Ledger.open(Path(tmp) / f"p{i}.ledger", signed))
                       for i in range(n)]
            peers: list[Peer] = []
            for i in range(n):
                peers.append(await stack.enter_async_context(Peer.open(PeerConfig(**cfg), ledgers[i], identity(i))))
            for i in range(n):
                for j in dials[i]:
                    peers[i].table.add(peers[j].address, bootstrap=True)
            edges = sum(len(d) for d in dials)
            async with asyncio.timeout(120):
                while sum(len(p.connected()) for p in peers) < 2 * edges:
                    await asyncio.sleep(0.05)
            arrivals = Arrivals(n)
            async with asyncio.TaskGroup() as tg:
                readies = [asyncio.Event() for _ in peers]
                collectors = [tg.create_task(collect(p, arrivals, r), name=f"collect-{i}")
                              for i, (p, r) in enumerate(zip(peers, readies))]
                for r in readies:
                    await r.wait()
                setup_s = time.perf_counter() - t_open
                degrees = [len(p.connected()) for p in peers]
                emit(args, metric="setup", seconds=round(setup_s, 1), edges=edges,
                     mean_degree=round(statistics.mean(degrees), 2), max_fds=fd_count())
                if args.idle_s > 0:  # what the swarm costs doing nothing: pings, timers, dial rounds
                    idle_before, t_idle = cpu_s(), time.perf_counter()
                    await asyncio.sleep(args.idle_s)
                    emit(args, metric="idle", seconds=args.idle_s, cpu_ms_per_s=round(
                        (cpu_s() - idle_before) * 1000 / (time.perf_counter() - t_idle), 1))
                # warm-up, then one entry at a time: latency to the last peer
                lat: list[float] = []
                dup_before = duplicates(peers)
                cpu_before, loop_before = cpu_s(), loop_cpu_s()
                for k in range(args.warmup + args.entries):
                    author = peers[rng.randrange(n)]
                    t0 = time.perf_counter()
                    entry = await author.publish(Post(channel="bench", text=f"e{k}", reply_to=None))
                    async with asyncio.timeout(args.timeout_s):
                        await arrivals.expect(entry.id).wait()
                    if k >= args.warmup:
                        lat.append((arrivals.done[entry.id] - t0) * 1000)
                    if k + 1 == args.warmup:
                        dup_before = duplicates(peers)
                        cpu_before, loop_before = cpu_s(), loop_cpu_s()
                # duplicates settle once in-flight copies land; wait for queues to drain a moment
                await asyncio.sleep(0.5)
                dups = (duplicates(peers) - dup_before) / (args.entries * n)
                lat.sort()
                cpu_ms = (cpu_s() - cpu_before) * 1000 / args.entries  # includes the 0.5 s settle
                loop_ms = (loop_cpu_s() - loop_before) * 1000 / args.entries
                emit(args, metric="latency", entries=args.entries, p50_ms=round(statistics.median(lat), 1),
                     p95_ms=round(lat[int(0.95 * (len(lat) - 1))], 1), max_ms=round(lat[-1], 1),
                     cpu_ms_per_entry=round(cpu_ms, 1), loop_cpu_ms_per_entry=round(loop_ms, 1),
                     load_avg_1m=round(os.getloadavg()[0], 2))
                emit(args, metric="duplicates", per_peer_per_entry=round(dups, 2), degree=args.degree)
                # throughput: many authors publish at once
                t0 = time.perf_counter()
                published: list[Entry] = []

                async def burst(peer: Peer, count: int) -> None:
                    for k in range(count):
                        published.append(await peer.publish(Post(channel="bench", text=f"t{k}", reply_to=None)))

                authors = rng.sample(peers, min(args.authors, n))
                per = args.burst // len(authors)
                async with asyncio.timeout(args.timeout_s * 10):
                    await asyncio.gather(*(burst(p, per) for p in authors))
                    for entry in published:
                        await arrivals.expect(entry.id).wait()
                elapsed = time.perf_counter() - t0
                emit(args, metric="throughput", entries=len(published), seconds=round(elapsed, 2),
                     entries_per_s=round(len(published) / elapsed, 1), authors=len(authors))
                totals: dict[str, int] = {}
                for peer in peers:
                    snap = peer.stats()
                    totals["released"] = totals.get("released", 0) + snap["released"]
                    for link in snap["peers"].values():
                        for key in ("pending_in", "dropped_out", "duplicates_in", "entries_in"):
                            totals[key] = totals.get(key, 0) + link[key]
                        for reason, n in link["rejects"].items():
                            totals["reject_" + reason] = totals.get("reject_" + reason, 0) + n
                emit(args, metric="counters", **totals)
                for task in collectors:
                    task.cancel()
            t_close = time.perf_counter()
        emit(args, metric="teardown", seconds=round(time.perf_counter() - t_close, 1))


def cpu_s() -> float:
    """CPU seconds of this process, all threads (the loop, SQLite writers, signature checks)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def loop_cpu_s() -> float:
    """CPU seconds of the event loop's thread alone (the rest: SQLite threads, signature workers)."""
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


async def bundle_bytes(tmp: Path) -> dict[str, int]:
    """A one-line change of the genesis train.py, as our bundle and as git's."""
    import subprocess

    source = TRAIN_PY.read_bytes()
    lines = source.splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if b"=" in line and line[:1].isupper())
    changed = b"".join(lines[:i] + [lines[i].rstrip(b"\n") + b"  # tuned\n"] + lines[i + 1:])
    async with gitrepo.Repository.open(tmp / "repo.git") as repo:
        base = await gitrepo.commit_file(repo, None, {"train.py": source}, "genesis", "bench <b@b>", 1_700_000_000)
        child = await gitrepo.commit_file(repo, base, {"train.py": changed}, "tune", "bench <b@b>", 1_700_000_060)
        ours = await make_bundle(repo, child, [base])
        git = ["git", "-C", str(repo.path)]
        subprocess.run([*git, "update-ref", "refs/heads/bench", child.hex()], check=True)
        subprocess.run([*git, "bundle", "create", "-q", str(tmp / "git.bundle"), "bench", f"^{base.hex()}"],
                       check=True, capture_output=True)
    return {"train_py_bytes": len(source), "ours_bytes": len(ours),
            "git_cli_bytes": (tmp / "git.bundle").stat().st_size}


def emit(args: argparse.Namespace, **fields: Any) -> None:
    print(json.dumps({"peers": args.peers, "pull_rtt_factor": args.pull_rtt_factor, **fields}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=int, default=64)
    parser.add_argument("--degree", type=int, default=6)
    parser.add_argument("--entries", type=int, default=100, help="entries timed one at a time")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--burst", type=int, default=400, help="entries in the throughput phase")
    parser.add_argument("--authors", type=int, default=16, help="peers publishing at once in that phase")
    parser.add_argument("--anti-entropy-s", type=float, default=10.0, help="the node default")
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--idle-s", type=float, default=2.0, help="measure the idle swarm's CPU this long first")
    parser.add_argument("--pull-rtt-factor", type=float, default=gossip.PULL_RTT_FACTOR,
                        help="ask for an announced entry after this many round trips (1e9: the old fixed 0.5 s)")
    parser.add_argument("--tmp", default=None, help="folder for the ledgers (default: the system's)")
    args = parser.parse_args(argv)
    gossip.PULL_RTT_FACTOR = args.pull_rtt_factor
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        emit(args, metric="bundle", **asyncio.run(bundle_bytes(Path(tmp))))
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
