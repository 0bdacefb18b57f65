"""Node benchmark (issue 5): the node's own overhead and its experiments per hour. One JSON object per line.

    python scripts/bench_node.py [--budget-s S] [--experiments N] [--reference-runs R] [--keep DIR]
    python scripts/bench_node.py --sim [--sim-nodes 100] [--sim-hours 24] [--sim-seeds 8] [--sim-noise-sd 0.0015]
                                 [--sim-quorum 2] [--sim-legacy]

--sim: the third figure instead, in a simulated swarm (node/sim/simulate.py: the real fold, signed entries
and verification policy, a fake trainer, simulated time): the share of GPU time spent on replays and
the false-record rate, at the given run-to-run noise and at twice it, over --sim-seeds seeds each.
Lines: {"bench": "machine"}, one {"bench": "sim_run"} per simulated swarm (its figures and the wall
time it took), one {"bench": "sim_summary"} per noise level (records and false records pooled over
the seeds, the share's mean and max, the goals). --sim-legacy adds one swarm per noise level run with
the policy before issue 5's change (every claim beating the best by the noise, by every verifier).

What it runs, all on one fresh temporary home (so the data, the swarm and the ledger are new):
  1. `python -m trainer prepare --home HOME` once (the node finds it cached);
  2. half of the reference runs: `python -m trainer run trainer/train.py --profile cpu --budget-s S
     --seed 0 --data HOME/data/...` back to back, each timed from spawn to exit — the trainer's own
     limit on experiments per hour, the same genesis train.py the node's baseline runs;
  3. a real node: `python -m node --home HOME --profile cpu --budget-s S --max-experiments N`, its
     stdout read line by line and stamped on arrival here (monotonic clock);
  4. the other half of the reference runs (load drifts; before and after brackets the node).

Lines:
  {"bench": "machine", ...}       cpus, platform, python, date, load average
  {"bench": "reference", ...}     one trainer run: wall seconds, training seconds, val_bpb
  {"bench": "node_run", ...}      one trainer run of the node (baseline, verification, experiment):
                                  its cycle = time since the previous run's event line (the first:
                                  since the node's "swarm" line, i.e. after setup), and for
                                  experiments the overhead the node itself reports ("node overhead
                                  X s": choose the parent, propose, commit, materialize, bundle,
                                  publish the claim — everything around the trainer child)
  {"bench": "summary", ...}       the two figures of issue 5 with their goals

Experiments per hour: `all_runs_per_hour` counts every trainer run of the node (own experiments +
baseline + verification replays) over the node's working time (setup excluded); that one compares
with the trainer's limit (`reference_per_hour`, 3600 / mean reference wall). `experiments_per_hour`
counts only own experiments over the same time: the gap to the first is the verification work a
solo node does for itself, not node overhead. `experiment_cycle_median_s` vs
`reference_wall_median_s` compares one experiment cycle with one bare trainer run (the node's
experiments run edited train.py files, so eval time can differ a little from the genesis one).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dataclasses
import random

from ledger import credits
from ledger.bodies import Claim
from ledger.fold import State
from ledger.store import Ledger
from node.sim import simulate
from node.research.history import ClaimRecord, History
from node.home import Layout, current_slug
from scripts.benchkit import emit, load, now_utc

NODE_TIMEOUT_S = 1800            # the whole node run; a bench that hangs is a failure
REFERENCE_TIMEOUT_S = 600        # one reference trainer run

_OVERHEAD = re.compile(r"\(node overhead ([0-9.]+) s\)")
_KINDS = (("experiment", re.compile(r"\] experiment \d+: ")), ("baseline", re.compile(r"\] baseline ")),
          ("calibration", re.compile(r"\] calibration \(data seed ")),
          ("verification", re.compile(r"\] (verified |verification of |replay of )")))


def prepare(home: Path) -> Path:
    out = subprocess.run([sys.executable, "-m", "trainer", "prepare", "--home", str(home), "--no-progress"],
                         cwd=ROOT, check=True, capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    return Path(json.loads(out.stdout.strip().splitlines()[-1])["path"])


def reference_run(home: Path, data: Path, budget_s: int, index: int) -> tuple[float, float]:
    argv = [sys.executable, "-m", "trainer", "run", str(ROOT / "trainer" / "train.py"), "--profile", "cpu",
            "--budget-s", str(budget_s), "--seed", "0", "--data", str(data)]
    env = {**os.environ, "AUTOSWARM_HOME": str(home)}  # as the node sets it for its children
    t0 = time.monotonic()
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=REFERENCE_TIMEOUT_S,
                         check=False)
    wall = time.monotonic() - t0
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    emit({"bench": "reference", "run": index, "status": result.get("status", f"exit {out.returncode}"),
          "wall_s": round(wall, 3), "training_s": result.get("training_seconds"),
          "total_s": result.get("total_seconds"), "val_bpb": result.get("val_bpb"),
          "num_steps": result.get("num_steps"), "load_avg": load()})
    return wall, wall - float(result.get("total_seconds") or 0.0)


def node_run(home: Path, budget_s: int, experiments: int) -> dict[str, object]:
    argv = [sys.executable, "-m", "node", "--home", str(home), "--profile", "cpu", "--budget-s", str(budget_s),
            "--max-experiments", str(experiments)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.stdout is None:
        raise SystemExit("bench_node: the node started without a stdout pipe")
    swarm_at: float | None = None
    last_at: float | None = None
    runs: list[dict[str, object]] = []
    for line in proc.stdout:  # one event per line: stdout is not a terminal
        at = time.monotonic()
        text = line.rstrip("\n")
        print(f"# {text}", file=sys.stderr, flush=True)
        if swarm_at is None and text.split(" ", 2)[1:2] == ["swarm"]:  # "HH:MM:SS swarm ...": setup done
            swarm_at = last_at = at
            continue
        kind = next((k for k, pat in _KINDS if pat.search(text)), None)
        if kind is None or last_at is None:
            continue
        row: dict[str, object] = {"bench": "node_run", "kind": kind, "cycle_s": round(at - last_at, 3),
                                  "load_avg": load()}
        found = _OVERHEAD.search(text)
        if found:
            row["node_overhead_s"] = float(found.group(1))
        runs.append(row)
        last_at = at
    try:
        proc.wait(timeout=NODE_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    end = time.monotonic()
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0 or swarm_at is None:
        raise SystemExit(f"bench_node: the node exited with {proc.returncode}: {err.strip()[-500:]}")
    return {"runs": runs, "setup_s": swarm_at - t0, "working_s": end - swarm_at, "total_s": end - t0}


async def _claims(home: Path) -> list[Claim]:
    layout = Layout(home)
    async with Ledger.open(layout.ledger(current_slug(layout))) as ledger:
        entries = [await ledger.get(i) for i in ledger.state.claims]
    return [e.body for e in sorted((e for e in entries if e is not None), key=lambda e: e.seq)
            if isinstance(e.body, Claim)]


def attach_trainer_times(home: Path, runs: list[dict[str, object]]) -> None:
    """Each claim carries the trainer's own total_seconds: the cycle minus it is what the trainer's clock
    did not see (interpreter start, node work). Claims are in the order the node published them."""
    claims = asyncio.run(_claims(home))
    own = [r for r in runs if r["kind"] in ("baseline", "calibration", "experiment")]
    for row, claim in zip(own, claims):
        row["trainer_total_s"] = round(claim.wall_s, 3)
        row["outside_trainer_clock_s"] = round(float(row["cycle_s"]) - claim.wall_s, 3)  # type: ignore[arg-type]


SIM_SHARE_GOAL = 0.15       # verification GPU time / all GPU time
SIM_FALSE_RECORD_GOAL = 0.01


def legacy_queue(state: State, history: History, verifier: bytes, platform_class: str, skip: set[bytes],
                 own: frozenset[bytes] = frozenset(), now_ms: int | None = None) -> list[ClaimRecord]:
    """node/research/verifier.py's queue before the simulated figure (kept here only to compare with)."""
    if not credits.trusted(state, verifier, platform_class):
        return []
    mine = {v.claim for v in state.verifies.values() if v.author == verifier}
    best = state.best.get(platform_class)
    noise = state.spec.noise_bpb.get(platform_class, 0.0)
    queue = [r for r in history.of_class(platform_class)
             if not (r.id in state.verified or r.id in mine or r.id in skip or r.author == verifier or r.author in own)
             and r.body.status == "ok" and r.body.val_bpb is not None and r.body.num_steps >= 1
             and (best is None or r.body.val_bpb < best - noise)]
    return sorted(queue, key=lambda r: (r.body.parent is not None, r.body.val_bpb, r.time_ms, r.id))


def legacy_settled(state: State, record: ClaimRecord) -> bool:
    body, best = record.body, state.best.get(record.body.platform_class)
    noise = state.spec.noise_bpb.get(body.platform_class, 0.0)
    return (record.id in state.verified or body.status != "ok" or body.val_bpb is None
            or best is not None and not body.val_bpb < best - noise)


def sim_main(args: argparse.Namespace) -> int:
    emit({"bench": "machine", "cpus": os.cpu_count(), "python": platform.python_version(),
          "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "date": now_utc(), "load_avg": load(), "mode": "sim"})
    policies = [("current", simulate.Policy())]
    if args.sim_legacy:
        policies.append(("legacy", simulate.Policy(queue=legacy_queue, settled=legacy_settled)))
    for name, policy in policies:
        for sd in (args.sim_noise_sd, 2 * args.sim_noise_sd):
            config = simulate.SimConfig(nodes=args.sim_nodes, hours=args.sim_hours, noise_sd_bpb=sd,
                                        quorum=args.sim_quorum)
            seeds = range(args.sim_seeds if name == "current" else 1)
            t0 = time.monotonic()
            rows = []
            for seed in seeds:
                t1 = time.monotonic()
                figures = simulate.simulate(config, random.Random(seed), policy).figures
                rows.append(figures)
                emit({"bench": "sim_run", "policy": name, "seed": seed, "nodes": config.nodes, "hours": config.hours,
                      "noise_sd_bpb": sd, "spec_noise_bpb": config.spec_noise_bpb, "quorum": config.quorum,
                      "wall_s": round(time.monotonic() - t1, 2),
                      **{k: round(v, 6) if isinstance(v, float) else v for k, v in dataclasses.asdict(figures).items()}})
            later = sum(f.records - 1 for f in rows)
            false = sum(f.false_records for f in rows)
            shares = [f.verification_share for f in rows]
            rate = false / later if later else 0.0
            emit({"bench": "sim_summary", "policy": name, "date": now_utc(), "nodes": config.nodes,
                  "hours": config.hours, "seeds": len(rows), "noise_sd_bpb": sd,
                  "spec_noise_bpb": config.spec_noise_bpb, "quorum": config.quorum,
                  "experiments": sum(f.experiments for f in rows), "verifications": sum(f.verifications for f in rows),
                  "records": sum(f.records for f in rows), "records_after_the_first": later, "false_records": false,
                  "false_record_rate": round(rate, 4), "false_record_goal": SIM_FALSE_RECORD_GOAL,
                  "verification_share_mean": round(statistics.mean(shares), 4),
                  "verification_share_max": round(max(shares), 4), "verification_share_goal": SIM_SHARE_GOAL,
                  "true_progress_bpb_mean": round(statistics.mean(f.true_progress_bpb for f in rows), 4),
                  "best_true_found_progress_bpb_mean": round(statistics.mean(config.baseline_bpb - f.best_true_found_bpb
                                                                             for f in rows), 4),
                  "refused_mints": sum(f.refused_mints for f in rows),
                  "meets_goals": max(shares) <= SIM_SHARE_GOAL and rate <= SIM_FALSE_RECORD_GOAL,
                  "wall_s": round(time.monotonic() - t0, 2), "load_avg": load()})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-s", type=int, default=10, help="training seconds per run (default 10)")
    p.add_argument("--experiments", type=int, default=4, help="the node's --max-experiments (default 4)")
    p.add_argument("--reference-runs", type=int, default=4, help="bare trainer runs, half before, half after")
    p.add_argument("--keep", type=Path, default=None, help="use this folder as the home and keep it")
    p.add_argument("--sim", action="store_true", help="the simulated-swarm figure instead (no trainer, no node)")
    p.add_argument("--sim-nodes", type=int, default=100, help="nodes, one GPU worker each (default 100)")
    p.add_argument("--sim-hours", type=float, default=24.0, help="simulated hours (default 24)")
    p.add_argument("--sim-seeds", type=int, default=8, help="swarms per noise level (default 8)")
    p.add_argument("--sim-noise-sd", type=float, default=0.0015,
                   help="run-to-run sd of val_bpb; a second run uses twice it (default 0.0015)")
    p.add_argument("--sim-quorum", type=int, default=2, help="the spec's quorum (default 2)")
    p.add_argument("--sim-legacy", action="store_true", help="also one swarm per noise level with the old policy")
    args = p.parse_args(argv)
    if args.sim:
        return sim_main(args)
    emit({"bench": "machine", "cpus": os.cpu_count(), "python": platform.python_version(),
          "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "date": now_utc(), "load_avg": load(), "budget_s": args.budget_s, "experiments": args.experiments})
    home = args.keep or Path(tempfile.mkdtemp(prefix="bench-node-"))
    try:
        t0 = time.monotonic()
        data = prepare(home)
        emit({"bench": "prepare", "data": data.name, "s": round(time.monotonic() - t0, 3)})
        before = args.reference_runs // 2
        refs = [reference_run(home, data, args.budget_s, i) for i in range(before)]
        node = node_run(home, args.budget_s, args.experiments)
        attach_trainer_times(home, node["runs"])  # type: ignore[arg-type]
        for row in node["runs"]:  # type: ignore[attr-defined]
            emit(row)
        refs += [reference_run(home, data, args.budget_s, i) for i in range(before, args.reference_runs)]
    finally:
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)
    walls, ref_outside = [w for w, _ in refs], [o for _, o in refs]
    runs: list[dict[str, object]] = node["runs"]  # type: ignore[assignment]
    exps = [r for r in runs if r["kind"] == "experiment"]
    overheads = [float(r["node_overhead_s"]) for r in exps if "node_overhead_s" in r]  # type: ignore[arg-type]
    cycles = [float(r["cycle_s"]) for r in exps]  # type: ignore[arg-type]
    outside = [float(r["outside_trainer_clock_s"]) for r in exps if "outside_trainer_clock_s" in r]  # type: ignore[arg-type]
    working_s = float(node["working_s"])  # type: ignore[arg-type]
    ref_per_hour = 3600 / statistics.mean(walls)
    all_per_hour = 3600 * len(runs) / working_s
    emit({"bench": "summary", "date": now_utc(), "load_avg": load(), "budget_s": args.budget_s,
          "node_setup_s": round(float(node["setup_s"]), 3), "node_working_s": round(working_s, 3),  # type: ignore[arg-type]
          "node_runs": {k: sum(1 for r in runs if r["kind"] == k) for k, _ in _KINDS},
          "node_overhead_median_s": round(statistics.median(overheads), 3) if overheads else None,
          "node_overhead_max_s": round(max(overheads), 3) if overheads else None,
          "node_overhead_goal_s": 1.0,
          "experiment_cycle_median_s": round(statistics.median(cycles), 3) if cycles else None,
          "experiment_outside_trainer_clock_median_s": round(statistics.median(outside), 3) if outside else None,
          "reference_wall_median_s": round(statistics.median(walls), 3),
          "reference_outside_trainer_clock_median_s": round(statistics.median(ref_outside), 3),
          "reference_per_hour": round(ref_per_hour, 2),
          "all_runs_per_hour": round(all_per_hour, 2),
          "all_runs_vs_reference_percent": round(100 * (all_per_hour / ref_per_hour - 1), 2),
          "experiments_per_hour": round(3600 * len(exps) / working_s, 2),
          "experiment_cycle_vs_reference_percent": (round(100 * (statistics.median(walls) / statistics.median(cycles)
                                                                 - 1), 2) if cycles else None),
          "rate_goal": "all_runs_per_hour within 5% of reference_per_hour"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
