"""Waves and two-tier screening (issue 8), compared in a simulated node. One JSON object per line.

    python scripts/bench_waves.py [--hours 12] [--seeds 5] [--target-bpb 0.01] [--only NAME]

Each configuration runs node/sim/simwork.py (the real fold, verification policy, proposer, waves and
screening on a landscape of train.py's constants, a fake trainer with run-to-run noise) once per
seed. Configurations:
  independent-8   8 reference workers, each drawing from the proposer (research.py today)
  independent-8-tries2000  the same with the proposer drawing 2000 times (not 200) before it gives
                  up: separates "waves keep the GPUs busy" from "a factorial design finds more"
  wave-8          8 reference workers sharing waves (node/research/waves.py)
  wave-8-size4    the same with waves of 4 (a 2x2 and one ordinary proposal), planned twice as often
  ref-only-8      = independent-8: the two-tier comparisons' equal-cost baseline (not rerun)
  one-tier-4+12   4 reference + 12 cheap workers (3x cheaper: the cost of 8 reference), each class
                  on its own path
  two-tier-4+12   the same fleet; reference workers confirm screened winners first (node/research/screening.py)
Lines: {"bench": "waves_run"} per configuration and seed; {"bench": "waves_summary"} per
configuration: medians over the seeds of the reference class's true val_bpb at half time and at the
end (the true value of its last record), of the hours until a record came within --target-bpb of
the landscape's floor (runs that never did count as the full time, and `reached` says how many
did), of own experiments per hour, and of records.
"""
from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.sim.simulate import CLASS, Outcome
from node.sim.simwork import Tier, WorkConfig, WorkFigures, cheap_tier, simulate_work
from scripts.benchkit import parse_sim, sim_parser


def configs(hours: float) -> dict[str, WorkConfig]:
    mixed = (Tier(CLASS, 4), cheap_tier(12))
    return {
        "independent-8": WorkConfig(hours=hours),
        "independent-8-tries2000": WorkConfig(hours=hours, proposer_tries=2000),
        "wave-8": WorkConfig(hours=hours, policy="wave"),
        "wave-8-size4": WorkConfig(hours=hours, policy="wave", wave_size=4),
        "one-tier-4+12": WorkConfig(tiers=mixed, hours=hours),
        "two-tier-4+12": WorkConfig(tiers=mixed, hours=hours, two_tier=True),
    }


def best_at(outcome: Outcome, config: WorkConfig, at_s: float, start: float) -> float:
    """True val_bpb of the reference class's last record by `at_s` (the genesis program's before any)."""
    value = start
    for t, row in outcome.record_times:
        truth = outcome.truth.get(row.claim)
        if t <= at_s and row.platform_class == config.reference_class and truth is not None:
            value = truth
    return value


def main(argv: list[str] | None = None) -> int:
    parser = sim_parser(__doc__.splitlines()[0], hours=12.0)
    parser.add_argument("--target-bpb", type=float, default=0.01)
    args, chosen = parse_sim(parser, argv, configs)
    for name, config in chosen.items():
        rows: list[tuple[WorkFigures, float]] = []
        for seed in range(args.seeds):
            started = time.monotonic()
            outcome, figures = simulate_work(config, random.Random(seed), target_bpb=args.target_bpb)
            start = figures.best_true_bpb + figures.progress_bpb
            half = best_at(outcome, config, config.hours * 1800, start)
            rows.append((figures, half))
            print(json.dumps({"bench": "waves_run", "config": name, "seed": seed, "hours": config.hours,
                              "best_true_bpb": round(figures.best_true_bpb, 5), "half_time_true_bpb": round(half, 5),
                              "hours_to_target": None if figures.hours_to_target is None
                              else round(figures.hours_to_target, 2),
                              "records": figures.records, "experiments": figures.experiments,
                              "confirmations": figures.confirmations, "confirmed_records": figures.confirmed,
                              "waves": figures.waves, "wall_s": round(time.monotonic() - started, 1)}), flush=True)
        reached = [f.hours_to_target for f, _ in rows if f.hours_to_target is not None]
        print(json.dumps({
            "bench": "waves_summary", "config": name, "seeds": args.seeds, "hours": config.hours,
            "target_bpb_above_floor": args.target_bpb,
            "median_best_true_bpb": round(statistics.median(f.best_true_bpb for f, _ in rows), 5),
            "median_half_time_true_bpb": round(statistics.median(h for _, h in rows), 5),
            "median_hours_to_target": round(statistics.median(
                f.hours_to_target if f.hours_to_target is not None else config.hours for f, _ in rows), 2),
            "reached": f"{len(reached)}/{len(rows)}",
            "median_experiments_per_hour": round(statistics.median(f.experiments for f, _ in rows) / config.hours, 1),
            "median_records": statistics.median(f.records for f, _ in rows),
        }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
