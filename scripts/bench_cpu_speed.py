"""A CPU-profile training step's time, idle and beside busy loops, by torch thread count.

    python scripts/bench_cpu_speed.py [--busy 0,1,3] [--threads 1,0] [--rounds 2] [--steps 20]

For each number of busy loops (pure-Python processes spinning beside the run) and each thread count
(the CPU profile's `threads`: 1 is the harness's; 0 is torch's default, one per core, which the
harness used before), runs `--rounds` sandboxed trainer runs (trainer.runner.run_experiment, the
CPU profile with that thread count) of the genesis train.py for `--steps` fixed steps on the default
dataset. Prints one JSON line per run (ms per timed step, val_bpb, evaluation seconds, the load),
then one per condition with the medians.
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.benchkit import emit, load, now_utc  # noqa: E402
from trainer.constants import PROFILES  # noqa: E402
from trainer.data_format import PreparedData  # noqa: E402
from trainer.prepare import default_home, prepare  # noqa: E402
from trainer.runner import ExperimentResult, run_experiment  # noqa: E402

UNTIMED_CPU_STEPS = 2      # trainer/train.py on the CPU profile
RUN_TIMEOUT_S = 900


def _spin() -> None:
    while True:
        pass


def train(data: PreparedData, threads: int, steps: int) -> ExperimentResult:
    profile = dataclasses.replace(PROFILES["cpu"], threads=threads)
    result = run_experiment(ROOT / "trainer" / "train.py", None, data, profile=profile, steps=steps)
    if result.status != "ok":
        raise SystemExit(f"trainer run failed: {result.status}: {result.reason}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--busy", default="0,1,3", help="comma-separated numbers of busy loops beside the runs")
    p.add_argument("--threads", default="1,0", help="comma-separated thread counts (0: torch's default)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args(argv)
    busy, threads = [int(b) for b in a.busy.split(",")], [int(t) for t in a.threads.split(",")]
    if a.rounds < 1 or a.steps <= UNTIMED_CPU_STEPS or any(n < 0 for n in busy + threads):
        p.error("--rounds must be positive, --steps above 2, --busy and --threads not negative")
    data = prepare("default", home=default_home())
    for n in busy:
        spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(n)]
        for s in spinners:
            s.start()
        try:
            for t in threads:
                rows = []
                for r in range(a.rounds):
                    result = train(data, t, a.steps)
                    step = (result.training_seconds or 0.0) / (a.steps - UNTIMED_CPU_STEPS) * 1000
                    rows.append((step, result.eval_seconds or 0.0))
                    emit({"bench": "cpu_speed", "busy": n, "threads": t, "round": r, "step_ms": round(step, 1),
                          "val_bpb": result.val_bpb, "eval_s": result.eval_seconds, "load": load(), "utc": now_utc()})
                med = [statistics.median(row[i] for row in rows) for i in range(2)]
                emit({"bench": "cpu_speed", "busy": n, "threads": t, "median_step_ms": round(med[0], 1),
                      "median_eval_s": round(med[1], 2), "rounds": a.rounds, "cpus": os.cpu_count(),
                      "load": load(), "utc": now_utc()})
        finally:
            for s in spinners:
                s.terminate()
                s.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
