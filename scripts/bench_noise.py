"""Evaluation noise of the cpu profile: prints one JSON object per line.

    python scripts/bench_noise.py [--steps N | --budget-s S] [--sizes 8192,32768,...] [--eval-seeds N]
                                  [--shifts N] [--harness-reps N] [--train-seeds N] [--no-sandbox]

Measured figures and the command used: docs/benchmarks.md, "Trainer: CPU evaluation noise".

Two kinds of noise decide the cpu class's noise_bpb:
  eval-seed noise  the SAME weights scored on the rows of different eval seeds (trainer/evaluate.py
                   val_rows). A verifier replays a claim bit for bit but draws a fresh eval seed, so
                   two honest verifiers differ by this much: it sizes the tolerance between them.
  run-to-run noise the same program trained with different data seeds (--seed). A change to
                   train.py that only re-rolls the randomness moves val_bpb by this much: it sizes
                   the margin a record must beat the best by.

Lines:
  {"bench": "machine", ...}
  {"bench": "train", ...}          the genesis train.py (run_experiment, sandboxed): timed, or exactly
                                   --steps steps (a loaded machine then changes only the wall time)
  {"bench": "harness_eval", ...}   per eval size: the real sandboxed evaluate() on a few eval seeds,
                                   its wall time, and how far the in-process scoring below is from it
  {"bench": "eval_seed_noise", ...} per eval size: std of val_bpb over many eval seeds, same weights
  {"bench": "sweep_cost", ...}     tokens scored in-process and their wall and CPU seconds
  {"bench": "run_to_run", ...}     per eval size: std of val_bpb over models trained with other seeds
  {"bench": "run_to_run_runner", ...} the runner's own val_bpb of those models (profile size, secret seeds)

Scoring many eval seeds through the sandboxed harness would cost two interpreter starts each, so
the sweep scores rows in this process with the eval worker's own model loader and scoring function,
caching each row's loss by its tokens (rows of one shift recur across seeds), and sums them as
evaluate() does. The harness_eval line checks the two agree. Seeds whose grid shift is not among
the first --shifts scored are skipped: the shift barely matters, the row choice is what varies.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.constants import Profile, get_profile
from trainer.data_format import PreparedData, read_token_bytes
from trainer.eval_worker import _load_model, _score  # the eval worker's own code path
from trainer.evaluate import evaluate, val_rows
from trainer.prepare import default_home, prepare
from trainer.runner import ExperimentResult, default_hidden, run_experiment

DEFAULT_SIZES = "8192,32768,65536,98304"
MISSING_ROWS_FRACTION = 0.1  # a seed needing more new rows than this is on an unscored shift


def emit(obj: dict[str, object]) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def sized(profile: Profile, eval_tokens: int) -> Profile:
    return dataclasses.replace(profile, eval_tokens=eval_tokens)


def std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else float("nan")


class RowScorer:
    """Loss and target bytes of each evaluation row of one model, cached by the row's tokens."""

    def __init__(self, work: Path, data: PreparedData, profile: Profile) -> None:
        self.model = _load_model(work, "cpu")
        self.profile = profile
        self.vocab = data.vocab_size
        self.token_bytes = read_token_bytes(data).astype(np.int64)
        self.cache: dict[bytes, tuple[float, int]] = {}
        self.scored_tokens = 0
        self.scoring_s = 0.0
        self.scoring_cpu_s = 0.0

    def missing(self, rows: np.ndarray) -> int:
        return sum(1 for r in rows if r.tobytes() not in self.cache)

    def total(self, rows: np.ndarray) -> tuple[float, int]:
        """Sum of -log p (nats) and of target bytes over `rows` [n, T+1], as evaluate() sums them."""
        new = [r for r in rows if r.tobytes() not in self.cache]
        b, t = self.profile.eval_batch_size, self.profile.seq_len
        started, cpu_started = time.monotonic(), time.process_time()
        for i in range(0, len(new), b):
            batch = np.stack(new[i: i + b])
            _, lp = _score(self.model, batch, (len(batch), t, self.vocab), "cpu")
            weight = self.token_bytes[batch[:, 1:].astype(np.int64)]
            mask = weight > 0
            for row, lp_row, w_row, m_row in zip(batch, lp, weight, mask):
                self.cache[row.tobytes()] = (float(-(lp_row.astype(np.float64)[m_row]).sum()), int(w_row[m_row].sum()))
            self.scored_tokens += len(batch) * t
        self.scoring_s += time.monotonic() - started
        self.scoring_cpu_s += time.process_time() - cpu_started
        nats, nbytes = 0.0, 0
        for r in rows:
            row_nats, row_bytes = self.cache[r.tobytes()]
            nats += row_nats
            nbytes += row_bytes
        return nats, nbytes

    def val_bpb(self, val: np.ndarray, profile: Profile, eval_seed: int) -> float:
        rows = val_rows(val, profile, eval_seed)
        nats, nbytes = self.total(rows.reshape(-1, rows.shape[-1]))
        return nats / (math.log(2) * nbytes)


def usable_seeds(val: np.ndarray, base: Profile, n_seeds: int, n_grids: int) -> list[int]:
    """The first `n_seeds` eval seeds whose rows lie on one of the first `n_grids` grids met.

    A seed's rows sit on a grid of stride T+1 fixed by its shift; the rows of later seeds on a grid
    already met are (mostly) cached, so they cost no scoring. Which slots a seed picks does not
    depend on its shift, so restricting the shifts does not bias the spread of the row choice.
    """
    whole = sized(base, max(len(val), base.seq_len * base.eval_batch_size))  # every slot of the grid
    seen: set[bytes] = set()
    seeds: list[int] = []
    grids = 0
    seed = 0
    while len(seeds) < n_seeds:
        keys = [r.tobytes() for r in val_rows(val, whole, seed).reshape(-1, base.seq_len + 1)]
        if sum(1 for k in keys if k not in seen) > MISSING_ROWS_FRACTION * len(keys):
            if grids >= n_grids:
                seed += 1
                continue
            grids += 1
            seen.update(keys)
        seeds.append(seed)
        seed += 1
    return seeds


def train(data: PreparedData, profile: Profile, work_root: Path, *, budget_s: float, seed: int, sandboxed: bool,
          steps: int | None = None, horizon: int | None = None) -> tuple[ExperimentResult, Path]:
    root = Path(tempfile.mkdtemp(dir=work_root))
    # A replay's default wall limit (budget x 1.25 + 30 s) is too tight when other sessions load the cores.
    wall_limit_s = None if steps is None else max(600.0, 10 * budget_s)
    result = run_experiment(ROOT / "trainer" / "train.py", None, data, profile=profile, budget_s=budget_s,
                            seed=seed, steps=steps, horizon=horizon, sandboxed=sandboxed, work_root=root,
                            keep_work=True, wall_limit_s=wall_limit_s)
    if result.status != "ok":
        raise SystemExit(f"training seed {seed} failed: {result.status}: {result.reason}\n{result.log_tail[-2000:]}")
    (exp,) = root.iterdir()
    return result, exp / "work"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-s", type=float, default=30.0, help="training budget (the node's cpu_budget_s)")
    p.add_argument("--steps", type=int, default=None,
                   help="train exactly this many steps instead of a timed run (load-independent)")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="eval_tokens values to compare")
    p.add_argument("--eval-seeds", type=int, default=1000, help="eval seeds per size (in-process scoring)")
    p.add_argument("--shifts", type=int, default=8, help="grid shifts scored for the eval-seed sweep")
    p.add_argument("--harness-reps", type=int, default=2, help="sandboxed evaluate() calls per size")
    p.add_argument("--train-seeds", type=int, default=6, help="data seeds for the run-to-run noise (0 included)")
    p.add_argument("--common-eval-seeds", type=int, default=40, help="eval seeds (on 2 shifts) per run-to-run model")
    p.add_argument("--no-sandbox", action="store_true")
    args = p.parse_args(argv)
    sandboxed = not args.no_sandbox
    base_profile = get_profile("cpu")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    profiles = {n: sized(base_profile, n) for n in sizes}
    started = time.monotonic()
    emit({"bench": "machine", "cpus": os.cpu_count(), "python": platform.python_version(),
          "platform": platform.platform(), "load_avg": os.getloadavg(),
          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "profile_eval_tokens": base_profile.eval_tokens})
    data = prepare("default", home=default_home(), progress=False)
    val = np.memmap(data.val_tokens, dtype="<u2", mode="r")
    hidden = default_hidden() + (data.val_tokens,)

    with tempfile.TemporaryDirectory(prefix="bench-noise-") as tmp:
        base, work = train(data, base_profile, Path(tmp), budget_s=args.budget_s, seed=0, sandboxed=sandboxed,
                           steps=args.steps, horizon=args.steps)
        emit({"bench": "train", "seed": 0, "budget_s": args.budget_s, "num_steps": base.num_steps,
              "planned_steps": base.planned_steps, "val_bpb": base.val_bpb, "eval_seconds": base.eval_seconds,
              "total_seconds": base.total_seconds, "val_tokens": len(val), "vocab_size": data.vocab_size})
        scorer = RowScorer(work, data, base_profile)

        # (a) eval-seed noise: the real harness for timing and as the reference, then the sweep.
        for n in sizes:
            prof = profiles[n]
            reports = [evaluate(work, data, prof, eval_seed=s, sandboxed=sandboxed, hidden=hidden)
                       for s in range(args.harness_reps)]
            agree = max(abs(r.val_bpb - scorer.val_bpb(val, prof, r.eval_seed)) for r in reports)
            emit({"bench": "harness_eval", "eval_tokens": n, "scored_tokens": reports[0].target_tokens,
                  "batches": reports[0].batches, "probed_rows": reports[0].probed_rows,
                  "eval_s_median": round(statistics.median(r.seconds for r in reports), 3),
                  "eval_s": [round(r.seconds, 3) for r in reports],
                  "val_bpb": [round(r.val_bpb, 6) for r in reports],
                  "max_abs_diff_vs_in_process": agree, "load_avg": os.getloadavg()})
        seeds = usable_seeds(val, base_profile, args.eval_seeds, args.shifts)
        eval_std: dict[int, float] = {}
        for n in sizes:
            values = [scorer.val_bpb(val, profiles[n], s) for s in seeds]
            eval_std[n] = sd = std(values)
            diffs = [abs(a - b) for a, b in zip(values[::2], values[1::2])]
            emit({"bench": "eval_seed_noise", "eval_tokens": n, "eval_seeds": len(seeds), "shifts": args.shifts,
                  "mean_val_bpb": round(statistics.fmean(values), 6), "std_val_bpb": round(sd, 6),
                  # the std of a sample std from n normal draws is about sd / sqrt(2(n-1))
                  "std_se": round(sd / math.sqrt(2 * (len(values) - 1)), 6),
                  "max_minus_min": round(max(values) - min(values), 6),
                  "pair_abs_diff_p95": round(float(np.percentile(diffs, 95)), 6) if diffs else None})
        emit({"bench": "sweep_cost", "scored_tokens": scorer.scored_tokens, "scoring_s": round(scorer.scoring_s, 2),
              "scoring_cpu_s": round(scorer.scoring_cpu_s, 2),
              "tokens_per_s": round(scorer.scored_tokens / max(scorer.scoring_s, 1e-9))})

        # (b) run-to-run noise: same steps and horizon as the genesis run, other data seeds, every
        # model scored on the same eval seeds (2 grids, so each model scores at most 2 whole grids).
        common = usable_seeds(val, base_profile, args.common_eval_seeds, 2)
        per_model = {0: {n: [scorer.val_bpb(val, profiles[n], s) for s in common] for n in sizes}}
        claimed = {0: base.val_bpb}
        del scorer
        for seed in range(1, args.train_seeds):
            result, seed_work = train(data, base_profile, Path(tmp), budget_s=args.budget_s, seed=seed,
                                      sandboxed=sandboxed, steps=base.num_steps, horizon=base.planned_steps)
            model_scorer = RowScorer(seed_work, data, base_profile)
            per_model[seed] = {n: [model_scorer.val_bpb(val, profiles[n], s) for s in common] for n in sizes}
            claimed[seed] = result.val_bpb
            emit({"bench": "train", "seed": seed, "num_steps": result.num_steps, "planned_steps": result.planned_steps,
                  "val_bpb": result.val_bpb, "val_bpb_largest": round(statistics.fmean(per_model[seed][sizes[-1]]), 6),
                  "total_seconds": result.total_seconds, "load_avg": os.getloadavg()})
        for n in sizes if len(per_model) > 1 else ():
            # Averaged over the common eval seeds: what training alone varies (eval noise / sqrt(K)
            # remains). One eval seed per model, a different one for each: what two claims of
            # programs that differ only in their randomness show; pooled over K such draws.
            averaged = [statistics.fmean(per_model[s][n]) for s in per_model]
            k = len(common)
            draws = [std([per_model[s][n][(i + j) % k] for j, s in enumerate(per_model)]) for i in range(k)]
            emit({"bench": "run_to_run", "eval_tokens": n, "models": len(per_model), "steps": base.num_steps,
                  "horizon": base.planned_steps, "eval_seeds_each": k,
                  "std_training_only": round(std(averaged), 6),
                  "std_one_eval_seed": round(math.sqrt(statistics.fmean(d * d for d in draws)), 6),
                  "eval_seed_std": round(eval_std[n], 6), "val_bpb_means": [round(v, 5) for v in averaged]})
        emit({"bench": "run_to_run_runner", "eval_tokens": base_profile.eval_tokens,
              "val_bpb": {str(k): v for k, v in claimed.items()},
              "std": round(std([v for v in claimed.values() if v is not None]), 6) if len(claimed) > 1 else None,
              "bench_wall_s": round(time.monotonic() - started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
