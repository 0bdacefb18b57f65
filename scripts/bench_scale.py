"""Scale benchmark: prints one JSON object per line.

    {"metric": "experiments_per_hour", ...}   one node, 1/2/4/8 workers, a fake trainer; linear?
    {"metric": "propagation", ...}            p95 time for an entry to reach all of 1,000 simulated nodes
    {"metric": "traffic", ...}                bytes per node per hour and per day, ledger size per node
    {"metric": "partition", ...}              10 namespaced peer processes: time to equal folds after a
                                              partition heals (skipped, with the reason, without netns)

    .venv/bin/python scripts/bench_scale.py                     # everything (a few minutes)
    .venv/bin/python scripts/bench_scale.py --only workers --runs 3

Workers. A fake run is process-free: it sleeps `--run-s` real seconds, standing for one 5-minute
training budget, so simulated time = real time x (300 / run_s). Around it each worker does what
node/research/loop.py's run_worker does for its own experiments: reads the fold (the class's best verified
commit is the parent), reserves an edit no other worker is trying, runs, and publishes the claim
through a real Ledger (signature, durable append, fold). All workers share that one ledger and one
event loop, as in the node, so whatever they serialize on shows as lost linearity.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import sim_scale  # noqa: E402
from ledger import fold  # noqa: E402
from ledger.bodies import Claim  # noqa: E402
from ledger.store import Ledger  # noqa: E402

BUDGET_S = 300.0   # what one fake run stands for


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def machine() -> dict[str, Any]:
    return {"utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "cpus": os.cpu_count(),
            "load_1m": round(os.getloadavg()[0], 2)}


# ------------------------------------------------------------------------------------- workers


async def workers_rate(workers: int, run_s: float, window_s: float, tmp: Path) -> dict[str, float]:
    """Experiments finished per simulated hour by `workers` workers of one node over `window_s` real seconds."""
    ids = [sim_scale.identity(i) for i in range(2)]
    spec = sim_scale.make_spec(ids[1:])
    me = ids[0]
    tried: set[bytes] = set()          # edits taken by a worker (node: reservations + the ledger's claims)
    done = 0
    counter = 0
    start_s = time.monotonic()
    stop_s = start_s + window_s

    async with Ledger.open(tmp / f"w{workers}.ledger", spec) as ledger:

        async def worker(k: int) -> None:
            nonlocal done, counter
            while time.monotonic() < stop_s:
                board = fold.leaderboard(ledger.state, sim_scale.CLASS)
                parent = ledger.state.claims[board[0][0]].commit if board else b"\x00" * 20
                counter += 1
                edit = hashlib.sha1(b"edit-%d" % counter).digest()
                if edit in tried:
                    continue
                tried.add(edit)
                await asyncio.sleep(run_s)    # the fake trainer: one budget
                body = Claim(commit=edit, parent=parent, platform_class=sim_scale.CLASS, status="ok",
                             val_bpb=1.5 + (counter % 97) / 1000, num_steps=950, planned_steps=950, seed=k,
                             training_s=BUDGET_S, wall_s=BUDGET_S + 30, peak_vram_mb=1.0,
                             loss_curve=[3.0 - i / 64 for i in range(64)], diff_summary=f"edit {counter}",
                             message="", bundle=None)
                await ledger.publish(me, body, time_ms=int(time.time() * 1000))
                if time.monotonic() <= stop_s:
                    done += 1

        async with asyncio.TaskGroup() as group:
            for k in range(workers):
                group.create_task(worker(k), name=f"worker-{k}")
    elapsed_s = window_s
    simulated_h = elapsed_s * (BUDGET_S / run_s) / 3600
    return {"experiments": done, "per_hour": done / simulated_h}


async def bench_workers(runs: int, run_s: float, window_s: float) -> None:
    rates: dict[int, list[float]] = {}
    for r in range(runs):
        for n in (1, 2, 4, 8):
            with tempfile.TemporaryDirectory() as tmp:
                got = await workers_rate(n, run_s, window_s, Path(tmp))
            rates.setdefault(n, []).append(got["per_hour"])
    med = {n: statistics.median(v) for n, v in rates.items()}
    linear = {n: med[n] / (n * med[1]) for n in med}
    say(metric="experiments_per_hour", workers=list(med), median_per_hour=[round(med[n], 2) for n in med],
        per_worker_vs_one=[round(linear[n], 4) for n in med], runs={n: [round(x, 2) for x in v] for n, v in rates.items()},
        linear_within_10pct=all(0.9 <= x <= 1.1 for x in linear.values()), run_s=run_s, window_s=window_s,
        stands_for_s=BUDGET_S, note="a fake run sleeps run_s; publishing through a real Ledger", **machine())


# ------------------------------------------------------------------------------------- the 1,000-node day


def bench_swarm(nodes: int, hours: float) -> None:
    cfg = sim_scale.SimConfig(nodes=nodes, hours=hours)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        r = sim_scale.simulate(cfg, ledger_dir=Path(tmp))
    wall_s = time.monotonic() - t0
    say(metric="propagation", nodes=nodes, degree_mean=r["graph"]["degree_mean"], entries=r["entries"],
        p50_s=round(r["propagation_s"]["p50"], 3), p95_s=round(r["propagation_s"]["p95"], 3),
        max_s=round(r["propagation_s"]["max"], 3), goal_p95_s=5.0, simulated_hours=hours,
        every_node_holds_every_entry=r["every_node_holds_every_entry"], folds_equal=r["folds"]["equal"],
        fold_tables_differing={name: len(nodes) for name, nodes in r["folds"]["differ"].items() if nodes},
        fold_sampled_nodes=len(r["folds"]["sampled_nodes"]), wall_s=round(wall_s, 1), **machine())
    per_h = r["bytes_per_node_per_h"]
    say(metric="traffic", nodes=nodes, bytes_per_node_per_h_median=round(per_h["median"]),
        bytes_per_node_per_h_max=round(per_h["max"]), entry_bytes_per_node_per_h=round(per_h["entries_median"]),
        anti_entropy_and_ping_bytes_per_node_per_h=round(per_h["anti_entropy_and_pings_median"]),
        bytes_per_node_per_day_median=round(r["bytes_per_node_per_day"]["median"]),
        bytes_per_node_per_day_max=round(r["bytes_per_node_per_day"]["max"]), goal_bytes_per_day=10**9,
        heads_round_bytes=r["heads_round_bytes"],
        eager_fanout=cfg.eager, heads=cfg.heads, duplicates_per_node_per_entry=round(r["duplicates_per_node_per_entry"], 2),
        ledger_rows=r["ledger"]["rows"], ledger_bytes_per_node=r["ledger"]["bytes"], kinds=r["kinds"], **machine())


# ------------------------------------------------------------------------------------- partition


async def partition_once(tmp: Path, size: int, hold_s: float) -> dict[str, float]:
    import dataclasses

    from tests.swarm import netns
    from tests.swarm.netwire import per_link

    wan = per_link(0.050, 0.01)
    async with netns.open_net(size, tmp, wan) as net:
        peers = await net.start_peers([700 + i for i in range(size)], timeout_s=120)
        # an established swarm: every node has found peers beyond its bootstrap before the cut
        await asyncio.gather(*(p.ask("connected", 130, count=min(4, size - 1), timeout_s=120) for p in peers))
        half = size // 2
        for p in peers[half:]:
            await net.set_link(p.index, dataclasses.replace(wan, group=1))
        replies = await asyncio.gather(*(p.ask("posts", count=5) for p in peers))
        heads = {r["author"]: r["seq"] for r in replies}
        await asyncio.sleep(hold_s)       # the partition's duration
        healed = time.monotonic()
        for p in peers[half:]:
            await net.set_link(p.index, wan)
        waits = await asyncio.gather(*(p.ask("wait", 130, heads=heads, timeout_s=120) for p in peers))
        if any(w.get("timeout") for w in waits):
            return {"converged": 0.0}
        folds = {(await p.ask("fold"))["digest"] for p in peers}
        return {"converged": 1.0, "heal_s": max(w["at_s"] for w in waits) - healed, "equal_folds": float(len(folds) == 1)}


async def bench_partition(runs: int, size: int, hold_s: float) -> None:
    from tests.swarm import netns

    why = netns.probe()
    if why is not None:
        say(metric="partition", skipped=why)
        return
    got = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            got.append(await partition_once(Path(tmp), size, hold_s))
    heal = [g["heal_s"] for g in got if g.get("converged")]
    say(metric="partition", nodes=size, path_delay_ms=50, path_loss=0.01, hold_s=hold_s,
        converged_runs=len(heal), runs=runs, all_folds_equal=all(g.get("equal_folds") for g in got),
        heal_s_median=round(statistics.median(heal), 3) if heal else None, heal_s=[round(h, 3) for h in heal],
        **machine())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["workers", "swarm", "partition"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--run-s", type=float, default=0.25, help="real seconds of one fake run")
    parser.add_argument("--window-s", type=float, default=10.0, help="real seconds measured per worker count")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--partition-nodes", type=int, default=10)
    parser.add_argument("--hold-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.only in (None, "workers"):
        asyncio.run(bench_workers(args.runs, args.run_s, args.window_s))
    if args.only in (None, "swarm"):
        bench_swarm(args.nodes, args.hours)
    if args.only in (None, "partition"):
        asyncio.run(bench_partition(args.runs, args.partition_nodes, args.hold_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
