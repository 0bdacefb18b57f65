"""Trainer benchmark: prints one JSON object per line.

    python scripts/bench_trainer.py [--profile auto|cpu|gpu] [--runs N] [--budget-s S] [--data DIR]
                                    [--synthetic] [--no-sandbox]

Lines:
  {"bench": "sandbox_start", ...}  bwrap + interpreter start, and `import torch`, inside and outside
  {"bench": "experiment", ...}     one full experiment per run: reported tokens/s and MFU (from the
                                   genesis train.py, which is ours), and the runner's own clocks for
                                   everything outside the training budget (start, compile, save, eval)
  {"bench": "summary", ...}        medians over the runs

    python scripts/bench_trainer.py --outputs [--profile cpu] [--runs N] [--budget-s S]

The cost of the evaluation's outputs commitment (trainer/outputs.py): one genesis run trains a model,
then it is evaluated --runs times with one eval seed; line eval_outputs gives the median eval
seconds, the median seconds of the commitment's own work (quantizing each batch's loss and the
digest, timed in this process over the same batches), whether every evaluation committed to the
same digest, and the commitment's time for the gpu profile's batch count.

    python scripts/bench_trainer.py --check [--profile gpu|cpu] [--budget-s S] [--out FILE]

The check behind scripts/gpu_check.sh: synthetic data sized for the profile, then a cold-compile
run, a warm one (the compile cache the first filled), and a warm one without the sandbox; lines
check_machine (nvidia-smi, torch), check_data, check_run (tokens/s, MFU by our formula and by the
anchor's, compile, eval and overhead seconds), check_done.

On CPU the tiny profile runs on the offline default dataset (vocab 8192; --synthetic: 256 ids). On
CUDA --synthetic is sized by trainer/data_fit.py (16 eval batches of validation, 64M training tokens,
vocab 8192); the offline default corpus is too small for the gpu profile and is refused. On
CUDA the gpu profile is autoresearch's reference size (depth 8, ~50M parameters, 2^19 tokens per
step, sequence 2048): compare tokens/s and MFU with the reference figures in issue 3.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

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


def flops_per_token(weights: Path, config: dict[str, int]) -> dict[str, float]:
    """FLOP per trained token by two formulas, from the saved weights' shapes (nothing loaded).

    ours:   6 x (block parameters) + 6 x width x vocab (the head) + 12 x layers x width x seq_len,
            as the genesis train.py reports its MFU;
    anchor: autoresearch's, 6 x (parameters less embeddings and scalars) + 12 x layers x heads x
            head_dim x (each layer's attention window); our layers attend to the whole sequence.
    The two agree for a model without windows; the anchor's windowed model reads ~16% lower."""
    from safetensors import safe_open

    with safe_open(str(weights), "np") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    numel = {k: int(math.prod(v)) for k, v in shapes.items()}
    embeddings = sum(n for k, n in numel.items() if k.startswith(("wte.", "value_embeds.")))
    scalars = sum(n for k, n in numel.items() if len(shapes[k]) < 2)
    blocks = sum(n for k, n in numel.items() if k.startswith("blocks."))
    layers, width, seq, vocab = config["n_layer"], config["n_embd"], config["sequence_len"], config["vocab_size"]
    attention = 12 * layers * width * seq  # heads x head_dim = width
    return {"params": float(sum(numel.values())), "params_non_embedding": float(sum(numel.values()) - embeddings),
            "ours": float(6 * blocks + 6 * width * vocab + attention),
            "anchor": float(6 * (sum(numel.values()) - embeddings - scalars) + attention)}


def _peak_flops() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    table = {"H100": 989.5e12, "H200": 989.5e12, "A100": 312e12, "L40S": 362e12, "4090": 165e12}  # bf16 dense
    return next((v for k, v in table.items() if k in name), None)


def _nvidia_smi() -> dict[str, object]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=START_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"nvidia_smi": f"unavailable: {exc}"}
    return {"nvidia_smi": out.stdout.strip() or out.stderr.strip()[:300]}


def check(profile_name: str, budget_s: float | None, out: Path | None) -> int:
    """The GPU check (scripts/gpu_check.sh): cold and warm compile, sandboxed and not, both MFUs."""
    import torch

    profile = resolve_profile(profile_name)
    budget_s = budget_s or (60.0 if profile.device == "cuda" else 2.0)
    sink = open(out, "a") if out is not None else None

    def put(obj: dict[str, object]) -> None:
        emit(obj)
        if sink is not None:
            sink.write(json.dumps(obj, sort_keys=True) + "\n")
            sink.flush()

    has_bwrap = True
    try:
        sandbox.check_available(True)
    except sandbox.SandboxUnavailable as exc:
        has_bwrap = False
        put({"bench": "check_sandbox", "sandboxed": "unavailable", "reason": str(exc)})
    put({"bench": "check_machine", "profile": profile.name, "cpus": os.cpu_count(), "python": platform.python_version(),
         "torch": torch.__version__, "cuda": torch.version.cuda, "bwrap": has_bwrap, "load_avg": os.getloadavg(),
         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **_nvidia_smi()})
    peak = _peak_flops()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        n_train, n_val, vocab = synthetic_sizes(profile)
        data = synthetic(Path(tmp) / "data", n_train=n_train, n_val=n_val, vocab_size=vocab)
        put({"bench": "check_data", "train_tokens": n_train, "val_tokens": n_val, "vocab_size": vocab,
             "seconds": round(time.monotonic() - t0, 2)})
        cache = Path(tmp) / "compile-cache" / "base"
        runs = [("cold", has_bwrap), ("warm", has_bwrap)] + ([("warm", False)] if has_bwrap else [])
        failed = 0
        for i, (compile_state, sandboxed) in enumerate(runs):
            work_root = Path(tmp) / f"run{i}"
            work_root.mkdir()
            r = run_experiment(ROOT / "trainer" / "train.py", None, data, profile=profile, budget_s=budget_s, seed=i,
                               sandboxed=sandboxed, compile_cache=cache, work_root=work_root, keep_work=True)
            row: dict[str, object] = {"bench": "check_run", "compile": compile_state, "sandboxed": sandboxed,
                                      "status": r.status, "budget_s": budget_s}
            if r.status != "ok":
                failed += 1
                put({**row, "reason": r.reason, "log_tail": r.log_tail[-1500:]})
                continue
            work = next(work_root.glob("*/work"))
            flops = flops_per_token(work / "model.safetensors", json.loads((work / "model_config.json").read_text()))
            tps = float(r.tokens_per_second or 0.0)
            row.update({"val_bpb": round(r.val_bpb or 0.0, 5), "num_steps": r.num_steps,
                        "tokens_per_s": tps, "params_M": round(flops["params"] / 1e6, 3),
                        "flops_per_token_ours": flops["ours"], "flops_per_token_anchor": flops["anchor"],
                        "mfu_percent_reported": r.mfu_percent,
                        "mfu_percent_ours": round(100 * tps * flops["ours"] / peak, 2) if peak else None,
                        "mfu_percent_anchor": round(100 * tps * flops["anchor"] / peak, 2) if peak else None,
                        "compile_s": r.warmup_seconds, "peak_vram_mb": r.peak_vram_mb,
                        "training_s": r.training_seconds, "train_process_s": r.train_wall_seconds,
                        "eval_s": r.eval_seconds, "total_s": r.total_seconds,
                        "overhead_s": round(r.total_seconds - (r.training_seconds or 0.0), 3),
                        "experiments_per_hour_at_300s": round(3600 / (300.0 + r.total_seconds
                                                                       - (r.training_seconds or 0.0)), 2)})
            put(row)
        put({"bench": "check_done", "runs": len(runs), "failed": failed, "compile_cache_filled": cache.is_dir()})
    if sink is not None:
        sink.close()
    return 1 if failed else 0


def _median_s(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_outputs(profile_name: str, runs: int, budget_s: float | None, sandboxed: bool) -> int:
    """Eval seconds against the seconds of its outputs commitment, on one trained model."""
    from trainer import outputs
    from trainer.constants import get_profile
    from trainer.evaluate import evaluate
    from trainer.prepare import default_home, prepare

    profile = resolve_profile(profile_name)
    data = prepare("default", home=default_home(), progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        r = run_experiment(ROOT / "trainer" / "train.py", None, data, profile=profile, budget_s=budget_s or 2.0,
                           seed=0, sandboxed=sandboxed, work_root=Path(tmp), keep_work=True)
        if r.status != "ok" or r.eval_seed is None:
            emit({"bench": "eval_outputs", "status": r.status, "reason": r.reason})
            return 1
        work = next(Path(tmp).glob("*/work"))
        hidden = (data.val_tokens,)
        reports = [evaluate(work, data, profile, eval_seed=r.eval_seed, sandboxed=sandboxed, hidden=hidden)
                   for _ in range(runs)]
    leaves = reports[0].batch_outputs

    def commit() -> bytes:  # what evaluate() adds: a BatchOutput per batch, then the digest
        return outputs.digest(r.eval_seed or 0, [outputs.BatchOutput.of(o.nats, o.target_bytes, o.target_tokens)
                                                 for o in leaves])

    gpu = get_profile("gpu")
    gpu_batches = gpu.eval_tokens // (gpu.seq_len * gpu.eval_batch_size)
    gpu_leaves = [outputs.BatchOutput.of(1.5e5 + i, 200_000, 65_536) for i in range(gpu_batches)]
    eval_s = statistics.median(rep.seconds for rep in reports)
    commit_s = _median_s(commit, 200)
    emit({"bench": "eval_outputs", "profile": profile.name, "sandboxed": sandboxed, "evaluations": len(reports),
          "batches": len(leaves), "median_eval_s": round(eval_s, 3), "median_commit_s": round(commit_s, 6),
          "commit_fraction_of_eval": round(commit_s / eval_s, 7),
          "outputs_identical": len({rep.outputs for rep in reports}) == 1 and reports[0].outputs.hex() == r.outputs,
          "val_bpb_identical": len({rep.val_bpb for rep in reports}) == 1,
          "gpu_profile_batches": gpu_batches,
          "gpu_profile_commit_s": round(_median_s(lambda: outputs.digest(0, gpu_leaves), 50), 6),
          "load_avg": os.getloadavg()})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="auto")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=None, help="default: 10 on cpu, 300 on gpu")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--no-sandbox", action="store_true")
    p.add_argument("--check", action="store_true", help="the GPU check of scripts/gpu_check.sh")
    p.add_argument("--out", type=Path, default=None, help="with --check: also append the JSON lines here")
    p.add_argument("--outputs", action="store_true", help="the cost of the evaluation's outputs commitment")
    args = p.parse_args(argv)
    if args.check:
        return check(args.profile, args.budget_s, args.out)
    profile = resolve_profile(args.profile)
    budget_s = args.budget_s or (10.0 if profile.device == "cpu" else 300.0)
    sandboxed = not (args.no_sandbox or sandbox.sandbox_opted_out())
    try:
        sandbox.check_available(sandboxed)
    except sandbox.SandboxUnavailable as exc:  # one line naming the opt-out, not a traceback
        print(f"bench_trainer: {exc}", file=sys.stderr)
        return 2
    if args.outputs:
        return bench_outputs(args.profile, args.runs, args.budget_s, sandboxed)
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
