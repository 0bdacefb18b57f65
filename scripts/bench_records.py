"""Records that are real (issue 13): today's record rule against the paired one, in one run.

    python scripts/bench_records.py [--nodes 100] [--hours 24] [--seeds 4] [--train-sd 0.0015,0.003]
                                    [--eval-sd 0.0003] [--rho 0.5] [--rules today,paired]

A simulated swarm (node/sim/simulate.py: the real fold, signed entries and verifier choices, a fake
trainer whose runs have training-seed noise and evaluation noise, node/sim/paired.py) per (rule,
training sd, seed). "today": the verifier replays a claim with the claim's own training seed
(node/research/verifier.py's queue, the quorum rule of ledger/facts.py), so a lucky training draw
is replayed by every verifier. "paired": the verifier runs the rounds ledger/evidence.py asks for,
candidate and parent on seeds from the seal; records by its sequential test and LORD++.

Lines: {"bench": "machine"}; {"bench": "records_run"} per swarm: false-record rate (records whose
true value is not below the record before them, over records after the first), median
|reported - true| / true gain of the true records, verification share of GPU time, records per
day; {"bench": "records_summary"} per (rule, training sd): the medians over seeds, the pooled
false-record rate and whether the goals hold (<= 1% false, <= 10% error, <= 15% share).
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.sim import simulate  # noqa: E402
from scripts.benchkit import emit, load, now_utc  # noqa: E402

FALSE_GOAL = 0.01
ERROR_GOAL = 0.10
SHARE_GOAL = 0.15
MODES = {"today": "claim_seed", "paired": "paired", "independent": "independent"}


def run(rule: str, train_sd: float, seed: int, args: argparse.Namespace) -> dict[str, object]:
    config = simulate.SimConfig(nodes=args.nodes, hours=args.hours, noise_sd_bpb=train_sd, eval_sd_bpb=args.eval_sd,
                                pair_rho=args.rho, replays=MODES[rule])
    t0 = time.monotonic()
    f = simulate.simulate(config, random.Random(seed)).figures
    row: dict[str, object] = {
        "bench": "records_run", "rule": rule, "seed": seed, "nodes": args.nodes, "hours": args.hours,
        "train_sd_bpb": train_sd, "eval_sd_bpb": args.eval_sd, "pair_rho": args.rho,
        "spec_noise_bpb": config.spec_noise_bpb, "wall_s": round(time.monotonic() - t0, 1)}
    for k, v in dataclasses.asdict(f).items():
        row[k] = round(v, 6) if isinstance(v, float) else v
    return row


def summary(rule: str, train_sd: float, rows: list[dict[str, object]], args: argparse.Namespace) -> dict[str, object]:
    def med(name: str) -> float | None:
        values = [float(r[name]) for r in rows if r[name] is not None]  # type: ignore[arg-type]
        return round(statistics.median(values), 4) if values else None

    later = sum(int(r["records"]) - 1 for r in rows if int(r["records"]) > 0)  # type: ignore[call-overload]
    false = sum(int(r["false_records"]) for r in rows)  # type: ignore[call-overload]
    pooled = false / later if later else 0.0
    error, share = med("gain_error_median"), med("verification_share")
    return {"bench": "records_summary", "rule": rule, "train_sd_bpb": train_sd, "eval_sd_bpb": args.eval_sd,
            "pair_rho": args.rho, "nodes": args.nodes, "hours": args.hours, "seeds": len(rows),
            "false_record_rate_median": med("false_record_rate"), "false_records": false,
            "records_after_the_first": later, "false_record_rate_pooled": round(pooled, 4),
            "gain_error_median": error, "verification_share_median": share,
            "records_per_day_median": med("records_per_day"),
            "true_progress_bpb_median": med("true_progress_bpb"),
            "meets_goals": pooled <= FALSE_GOAL and error is not None and error <= ERROR_GOAL
            and share is not None and share <= SHARE_GOAL,
            "date": now_utc(), "load_avg": load()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--train-sd", default="0.0015,0.003", help="training-seed sds of val_bpb, comma-separated")
    p.add_argument("--eval-sd", type=float, default=0.0003, help="evaluation sd of one run")
    p.add_argument("--rho", type=float, default=0.5, help="share of training noise two programs on one seed share")
    p.add_argument("--rules", default="today,paired", help=f"comma-separated, of {sorted(MODES)}")
    p.add_argument("--jobs", type=int, default=1, help="swarms simulated at once, in processes (default 1)")
    args = p.parse_args(argv)
    rules = args.rules.split(",")
    if any(r not in MODES for r in rules):
        p.error(f"rules must be among {sorted(MODES)}")
    emit({"bench": "machine", "cpus": os.cpu_count(), "python": platform.python_version(),
          "platform": platform.platform(), "date": now_utc(), "load_avg": load()})
    groups = [(rule, float(sd)) for rule in rules for sd in args.train_sd.split(",")]
    tasks = [(rule, sd, seed, args) for rule, sd in groups for seed in range(args.seeds)]
    with multiprocessing.get_context("spawn").Pool(max(1, args.jobs)) as pool:
        results = iter(pool.starmap(run, tasks) if args.jobs > 1 else [run(*t) for t in tasks])
        for rule, sd in groups:
            rows = [next(results) for _ in range(args.seeds)]
            for row in rows:
                emit(row)
            emit(summary(rule, sd, rows, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
