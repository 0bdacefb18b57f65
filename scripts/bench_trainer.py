"""Trainer benchmark: prints one JSON object per line.

    python scripts/bench_trainer.py [--profile auto|cpu|gpu] [--runs N] [--budget-s S] [--data DIR]
                                    [--synthetic] [--no-sandbox]

Lines:
  {"bench": "sandbox_start", ...}  bwrap + interpreter start, and `import torch`, inside and outside
  {"bench": "experiment", ...}     one full experiment per run: reported tokens/s and MFU (from the
                                   genesis train.py, which is ours), and the runner's own clocks for
                                   everything outside the training budget (start, compile, save, eval)
  {"bench": "summary", ...}        medians over the runs

On CPU the tiny profile runs on the offline default dataset (vocab 8192; --synthetic: 256 ids). On
CUDA --synthetic is sized by trainer/data_fit.py (16 eval batches of validation, 64M training tokens,
vocab 8192); the offline default corpus is too small for the gpu profile and is refused. On
CUDA the gpu profile is autoresearch's reference size (depth 8, ~50M parameters, 2^19 tokens per
step, sequence 2048): compare tokens/s and MFU with the reference figures in issue 3.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer import sandbox  # noqa: E402
from trainer.data_fit import synthetic_sizes  # noqa: E402
from trainer.data_format import load_prepared, synthetic  # noqa: E402
from trainer.runner import resolve_profile, run_experiment  # noqa: E402

START_TIMEOUT_S = 120


def emit(obj: dict[str, object]) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def _time(argv: list[str], spec: sandbox.SandboxSpec | None, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.monotonic()
        if spec is None:
            subprocess.run(argv, check=True, capture_output=True, timeout=START_TIMEOUT_S)
        else:
            proc = sandbox.spawn(spec, argv)
            out, err = proc.communicate(timeout=START_TIMEOUT_S)
            if proc.returncode != 0:
                raise RuntimeError(f"sandboxed {argv} failed: {err.decode()[-500:]}")
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def bench_sandbox_start(sandboxed: bool, reps: int = 5) -> None:
    with tempfile.TemporaryDirectory() as work:
        spec = sandbox.SandboxSpec(work_dir=Path(work), work_writable=True, sandboxed=sandboxed)
        emit({"bench": "sandbox_start", "sandboxed": sandboxed, "reps": reps,
              "python_pass_s": round(_time([sys.executable, "-c", "pass"], None, reps), 3),
              "sandbox_python_pass_s": round(_time([sys.executable, "-c", "pass"], spec, reps), 3),
              "import_torch_s": round(_time([sys.executable, "-c", "import torch"], None, reps), 3),
              "sandbox_import_torch_s": round(_time([sys.executable, "-c", "import torch"], spec, reps), 3)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="auto")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=None, help="default: 10 on cpu, 300 on gpu")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--no-sandbox", action="store_true")
    args = p.parse_args(argv)
    profile = resolve_profile(args.profile)
    budget_s = args.budget_s or (10.0 if profile.device == "cpu" else 300.0)
    sandboxed = not (args.no_sandbox or sandbox.sandbox_opted_out())
    try:
        sandbox.check_available(sandboxed)
    except sandbox.SandboxUnavailable as exc:  # one line naming the opt-out, not a traceback
        print(f"bench_trainer: {exc}", file=sys.stderr)
        return 2
    emit({"bench": "machine", "profile": profile.name, "cpus": os.cpu_count(), "python": platform.python_version(),
          "platform": platform.platform(), "load_avg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                            time.gmtime())})
    bench_sandbox_start(sandboxed)
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is not None:
            data = load_prepared(args.data)
        elif args.synthetic:
            n_train, n_val, vocab = synthetic_sizes(profile)  # on CUDA: several eval batches, 64M tokens
            data = synthetic(Path(tmp) / "data", n_train=n_train, n_val=n_val, vocab_size=vocab)
        else:
            from trainer.prepare import default_home, prepare

            data = prepare("default", home=default_home(), progress=False)
        rows = []
        for run in range(args.runs):
            r = run_experiment(ROOT / "trainer" / "train.py", None, data, profile=profile, budget_s=budget_s,
                               seed=run, sandboxed=sandboxed)
            if r.status != "ok":
                emit({"bench": "experiment", "run": run, "status": r.status, "reason": r.reason})
                continue
            row = {"bench": "experiment", "run": run, "status": r.status, "vocab_size": data.vocab_size,
                   "budget_s": budget_s, "val_bpb": round(r.val_bpb or 0.0, 5), "num_steps": r.num_steps,
                   "tokens_per_s": r.tokens_per_second, "mfu_percent": r.mfu_percent,
                   "peak_vram_mb": r.peak_vram_mb, "num_params_M": r.num_params_M,
                   "training_s": r.training_seconds, "warmup_s": r.warmup_seconds,
                   "train_process_s": r.train_wall_seconds,
                   "eval_s": r.eval_seconds, "total_s": r.total_seconds,
                   # outside training: sandbox + imports + untimed (compile) steps + save, then eval
                   "overhead_s": round(r.total_seconds - (r.training_seconds or 0.0), 3),
                   "train_overhead_s": round((r.train_wall_seconds or 0.0) - (r.training_seconds or 0.0), 3)}
            rows.append(row)
            emit(row)
        if rows:
            med = {k: statistics.median(float(r[k]) for r in rows)  # type: ignore[arg-type]
                   for k in ("tokens_per_s", "mfu_percent", "overhead_s", "train_overhead_s", "eval_s", "val_bpb")}
            emit({"bench": "summary", "profile": profile.name, "runs": len(rows), "budget_s": budget_s,
                  **{f"median_{k}": round(v, 3) for k, v in med.items()},
                  "experiments_per_hour": round(3600 / (budget_s + med["overhead_s"]), 2)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
