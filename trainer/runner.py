"""Runs one experiment end to end and returns a typed result; never trusts the candidate's numbers.

    run_experiment(candidate, parent, data, profile=..., budget_s=..., steps=..., seed=...)

1. The allowed-files rule: the candidate tree may differ from its parent's only in allowed files;
   anything else (another changed, added or removed file, a symlink) is rejected before running.
2. Training: the candidate's train.py is copied into a fresh work folder and run in the sandbox
   (trainer/sandbox.py) with the profile, budget, steps and seed in its environment, under memory,
   CPU and file-size limits and a wall-clock hard kill at budget + the profile's startup allowance.
3. Its text contract is parsed (trainer/contract.py) for the figures it reports and checked where
   it can be: the seed and, on a replay, the step count; on CUDA the device and peak memory, which
   catches a silent fallback to the CPU.
4. Evaluation in fresh sandboxed processes (trainer/evaluate.py) gives the canonical val_bpb and
   `outputs`, a digest of the per-batch losses behind it (trainer/outputs.py).

Knows nothing of peers, ledgers or claims: paths in, an ExperimentResult out.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from trainer import compile_cache as compile_cache_mod
from trainer import sandbox
from trainer.constants import (ENTRY_FILE, ENV_BUDGET_S, ENV_DATA, ENV_HORIZON, ENV_PROFILE, ENV_SEED, ENV_STEPS,
                               MAX_ENTRY_BYTES, MAX_LOG_TAIL_BYTES, MAX_STDOUT_TAIL_BYTES, MAX_TREE_FILES,
                               MODEL_CONFIG_FILE, PROFILES, TIME_BUDGET_S, WEIGHTS_FILE, Profile, get_profile)
from trainer.contract import Contract, ContractError, parse_contract
from trainer.data_fit import data_problem
from trainer.data_format import PreparedData
from trainer.errors import TrainerError
from trainer.evaluate import EvalError, evaluate, new_eval_seed
from trainer.harness import harness_hash

STATUSES = ("ok", "crash", "rejected", "timeout")
REPLAY_SLACK = 1.25  # a replay of N steps may take this much longer than the budget
MAX_WEIGHTS_BYTES = 16 << 30
PIPE_DRAIN_S = 5.0
FAKE_BPB_TOLERANCE = 1e-3
MAX_REASON_CHARS = 600
DEFAULT_HOME_NAME = ".autoswarm"  # the node's default home, under the user's home folder
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class RunnerError(TrainerError, ValueError):
    """The caller asked for something impossible (a bad argument, not a bad candidate)."""


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    status: str  # ok | crash | rejected | timeout
    reason: str  # why it failed; for ok, notes (e.g. an ignored printed val_bpb)
    val_bpb: float | None  # measured by the harness; None unless status is ok
    seed: int
    steps: int | None  # the replay step count asked for; None for a timed run
    horizon: int | None  # the replay's schedule horizon when it differs from steps
    num_steps: int | None  # steps train.py reports it ran (on a replay: checked equal to `steps`)
    planned_steps: int | None  # the horizon its schedule used: replaying this many repeats the run
    profile: str
    device: str | None
    budget_s: float
    total_seconds: float  # measured by the runner: the whole experiment
    train_wall_seconds: float | None  # measured by the runner: the training process
    eval_seconds: float | None
    training_seconds: float | None  # the rest are reported by train.py: informative, not trusted
    warmup_seconds: float | None = None  # untimed first steps, compilation included
    peak_vram_mb: float | None = None
    mfu_percent: float | None = None
    total_tokens_M: float | None = None
    num_params_M: float | None = None
    tokens_per_second: float | None = None
    loss_curve: tuple[tuple[int, float], ...] = ()
    probe_max_diff: float | None = None
    eval_seed: int | None = None  # the validation rows scored; pass it again to compare a replay exactly
    log_tail: str = ""
    harness_hash: str = ""
    candidate_sha256: str = ""
    # sha256 commitment (hex) to the evaluation's per-batch outputs and eval seed (trainer/outputs.py);
    # a verify entry carries it. None for a failed run, and in results written before it existed.
    outputs: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise RunnerError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.outputs is not None and (self.status != "ok" or not isinstance(self.outputs, str)
                                         or not _HEX_DIGEST.fullmatch(self.outputs)):
            raise RunnerError(f"outputs must be 64 lowercase hex digits on an ok result, got {self.outputs!r:.80}")
        if self.status == "ok" and (self.val_bpb is None or not math.isfinite(self.val_bpb)):
            raise RunnerError("an ok result needs a finite val_bpb")
        if self.status != "ok" and self.val_bpb is not None:
            raise RunnerError("a failed result has no val_bpb")
        if len(self.reason) > MAX_REASON_CHARS:  # reasons quote candidate output: keep them short
            object.__setattr__(self, "reason", self.reason[:MAX_REASON_CHARS] + " ...")
        if len(self.log_tail) > 2 * MAX_LOG_TAIL_BYTES:
            object.__setattr__(self, "log_tail", self.log_tail[-2 * MAX_LOG_TAIL_BYTES:])

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # JSON has no NaN: a diverged run's losses travel as null
        out["loss_curve"] = [[s, v if math.isfinite(v) else None] for s, v in self.loss_curve]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ExperimentResult":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["loss_curve"] = tuple((int(s), float("nan") if v is None else float(v))
                                     for s, v in values.get("loss_curve", ()))
        return cls(**values)


def resolve_profile(name: str) -> Profile:
    """`auto`: the gpu profile where an NVIDIA device node exists, else cpu."""
    if name == "auto":
        name = "gpu" if Path("/dev/nvidiactl").exists() else "cpu"
    return get_profile(name)


def default_hidden() -> tuple[Path, ...]:
    """What no sandbox may see, whatever the caller adds: the user's home folder and the default
    node home in it. A node whose home lives elsewhere passes it in `hidden_paths` (the environment
    is not read here: what is hidden is an argument, never an accident of the caller's variables)."""
    return (Path.home() / DEFAULT_HOME_NAME, Path.home())


class _Rejected(TrainerError):
    """Internal: the candidate is rejected before running (becomes status 'rejected')."""


def _tree(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (or of `path` itself, as the entry file); .git is skipped."""
    if path.is_file() and not path.is_symlink():
        return {ENTRY_FILE: hashlib.sha256(path.read_bytes()).hexdigest()}
    if not path.is_dir() or path.is_symlink():
        raise _Rejected(f"{path} is neither a regular file nor a folder")
    files: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                raise _Rejected(f"symlinks are not allowed: {Path(dirpath, d).relative_to(path)}")
        for name in filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(path).as_posix()
            if full.is_symlink() or not full.is_file():
                raise _Rejected(f"only regular files are allowed: {rel}")
            if len(files) >= MAX_TREE_FILES:
                raise _Rejected(f"more than {MAX_TREE_FILES} files")
            files[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
    return files


def check_allowed(candidate: Path, parent: Path | None, allowed_files: tuple[str, ...]) -> Path:
    """Applies the allowed-files rule; returns the entry file to run."""
    tree = _tree(candidate)
    if parent is not None and candidate.is_file() and parent.is_dir():
        parent = parent / ENTRY_FILE  # a lone file can only have changed the entry file
    if parent is not None:
        base = _tree(parent)
        changed = sorted(k for k in tree.keys() | base.keys() if tree.get(k) != base.get(k))
        forbidden = [k for k in changed if k not in allowed_files]
        if forbidden:
            raise _Rejected(f"changes files outside {list(allowed_files)}: {', '.join(forbidden[:10])}")
    entry = candidate if candidate.is_file() else candidate / ENTRY_FILE
    if ENTRY_FILE not in tree:
        raise _Rejected(f"the candidate has no {ENTRY_FILE}")
    if entry.stat().st_size > MAX_ENTRY_BYTES:
        raise _Rejected(f"{ENTRY_FILE} is larger than {MAX_ENTRY_BYTES} bytes")
    return entry


def _crash_reason(log: str, rc: int | None, profile: Profile) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    fail = next((line for line in reversed(lines) if line.startswith("FAIL")), None)
    exc = next((line for line in reversed(lines)
                if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", line)), None)
    detail = (fail or exc or (lines[-1] if lines else "no output"))[:300]
    if "MemoryError" in log or "can't allocate memory" in log or "out of memory" in log.lower():
        return f"out of memory (limit {profile.memory_limit_mb} MB): {detail}"
    if "Read-only file system" in log:
        return f"tried to write outside its work folder: {detail}"
    return f"train.py exited with code {rc}: {detail}"


def run_experiment(
    candidate: Path, parent: Path | None, data: PreparedData, *,
    profile: str | Profile = "auto", budget_s: float = TIME_BUDGET_S, steps: int | None = None, seed: int = 0,
    allowed_files: tuple[str, ...] = (ENTRY_FILE,), sandboxed: bool | None = None,
    hidden_paths: Sequence[Path] = (), work_root: Path | None = None, keep_work: bool = False,
    on_line: Callable[[str], None] | None = None, memory_limit_mb: int | None = None,
    wall_limit_s: float | None = None, eval_seed: int | None = None, horizon: int | None = None,
    compile_cache: Path | None = None,
) -> ExperimentResult:
    """Runs `candidate` (a train.py, or a folder holding one) and measures it; see the module doc.

    A replay of an earlier result passes steps=result.num_steps, horizon=result.planned_steps (the
    two differ when that run stopped before its planned horizon) and seed=result.seed.

    `eval_seed=None` draws fresh validation rows (what a verifier should do); a replay meant to be
    compared exactly with an earlier result passes that result's eval_seed.

    `hidden_paths`: folders and files no sandbox may see (the node's home with its key); they are
    hidden on top of default_hidden() and the validation tokens, and a bind that would expose one
    raises sandbox.PathExposed before anything runs.

    A dataset too small for the profile (trainer/data_fit.py: the offline corpus on a GPU) raises
    RunnerError with what to prepare instead, before anything runs.

    `compile_cache`: a base compile cache folder (trainer/compile_cache.py): the run starts from a
    private copy of it, and a successful run of the genesis program fills it if it is empty.

    `sandboxed=None` follows the environment (AUTOSWARM_NO_SANDBOX=1 opts out); without bubblewrap
    and without the opt-out this raises sandbox.SandboxUnavailable before anything runs.
    """
    started = time.monotonic()
    prof = profile if isinstance(profile, Profile) else resolve_profile(profile)
    if memory_limit_mb is not None:
        prof = _replace(prof, memory_limit_mb=memory_limit_mb)
    if not budget_s > 0 or (steps is not None and steps < 1) or not 0 <= seed < 2**63:
        raise RunnerError("budget_s and steps must be positive and seed in 0..2**63-1")
    if horizon is not None and (steps is None or horizon < steps):
        raise RunnerError("a horizon needs steps, and is at least steps")
    try:
        too_small = data_problem(data, prof)
    except OSError as exc:
        raise RunnerError(f"cannot read the dataset: {exc}") from None
    if too_small is not None:
        raise RunnerError(too_small)
    sandboxed = (not sandbox.sandbox_opted_out()) if sandboxed is None else sandboxed
    sandbox.check_available(sandboxed)
    hidden = default_hidden() + tuple(Path(p) for p in hidden_paths) + (data.val_tokens,)
    hhash = harness_hash()
    eval_seed = new_eval_seed() if eval_seed is None else eval_seed  # secret until the result is out
    base = {"eval_seed": eval_seed, "seed": seed, "steps": steps, "horizon": horizon, "profile": prof.name,
            "budget_s": budget_s, "harness_hash": hhash}

    def finish(status: str, reason: str, **kw: Any) -> ExperimentResult:
        return ExperimentResult(status=status, reason=reason, total_seconds=round(time.monotonic() - started, 3),
                                **{"val_bpb": None, "num_steps": None, "planned_steps": None, "device": None,
                                   "train_wall_seconds": None, "eval_seconds": None, "training_seconds": None,
                                   **base, **kw})

    try:
        entry = check_allowed(Path(candidate), Path(parent) if parent is not None else None, allowed_files)
    except (_Rejected, OSError) as exc:
        return finish("rejected", f"rejected before running: {exc}")
    base["candidate_sha256"] = hashlib.sha256(entry.read_bytes()).hexdigest()

    exp = Path(tempfile.mkdtemp(prefix="autoswarm-exp-", dir=work_root))
    try:
        work = exp / "work"
        work.mkdir()
        shutil.copyfile(entry, work / ENTRY_FILE)
        warm = compile_cache is not None and compile_cache_mod.seed(work, compile_cache)
        if on_line is not None and compile_cache is not None:
            on_line(f"runner: compile cache {'copied from ' + str(compile_cache) if warm else 'empty (cold start)'}")
        data_files = (data.train_tokens, data.token_bytes, data.meta_json)
        if sandboxed:
            data_env = str(sandbox.DATA_MOUNT)
        else:  # opted out: no isolation, but at least do not hand it the folder holding val.bin
            (exp / "data").mkdir()
            for f in data_files:
                os.symlink(f.resolve(), exp / "data" / f.name)
            data_env = str(exp / "data")
        env = {ENV_PROFILE: prof.name, ENV_BUDGET_S: repr(float(budget_s)), ENV_SEED: str(seed), ENV_DATA: data_env,
               **prof.thread_env()}
        if steps is not None:
            env[ENV_STEPS] = str(steps)
        if horizon is not None:
            env[ENV_HORIZON] = str(horizon)
        limit_s = wall_limit_s or budget_s * (REPLAY_SLACK if steps is not None else 1.0) + prof.startup_allowance_s
        spec = sandbox.SandboxSpec(
            work_dir=work, work_writable=True, data_files=data_files if sandboxed else (), env=tuple(env.items()),
            cuda=prof.device == "cuda", memory_limit_mb=prof.memory_limit_mb, hidden=hidden, sandboxed=sandboxed,
            cpu_limit_s=int(limit_s * (os.cpu_count() or 1)) + 30, file_limit_mb=MAX_WEIGHTS_BYTES >> 20)
        train = _train(spec, limit_s, on_line)
        base.update(train_wall_seconds=round(train.wall_s, 3), log_tail=train.log)
        if train.timed_out:
            why = ("set by the caller" if wall_limit_s
                   else f"budget {budget_s:g} s + {prof.startup_allowance_s:g} s allowance")
            return finish("timeout", f"training passed its wall-clock limit of {limit_s:.0f} s ({why}) and was killed")
        if train.memory_tripped:
            return finish("crash", f"out of memory: the process tree passed {prof.memory_limit_mb} MB and was killed")
        if train.returncode != 0:
            return finish("crash", _crash_reason(train.log, train.returncode, prof))
        if compile_cache is not None and compile_cache_mod.is_genesis(str(base["candidate_sha256"])):
            compile_cache_mod.publish(work, compile_cache)  # only the harness's own program fills the base
        try:
            contract = parse_contract(train.stdout)
            contract.require("num_steps", "device")
        except ContractError as exc:
            return finish("crash", f"train.py printed no valid contract: {exc}")
        base.update(_reported(contract))
        problem = _check_contract(contract, prof, seed, steps, horizon)
        if problem is not None:
            return finish(*problem)
        weights = work / WEIGHTS_FILE
        if not weights.is_file() or not (work / MODEL_CONFIG_FILE).is_file():
            return finish("crash", f"train.py left no {WEIGHTS_FILE} and {MODEL_CONFIG_FILE} in its work folder")
        if weights.stat().st_size > MAX_WEIGHTS_BYTES:
            return finish("crash", f"{WEIGHTS_FILE} is larger than {MAX_WEIGHTS_BYTES} bytes")
        if harness_hash() != hhash:  # cannot happen through a read-only mount; checked anyway
            return finish("rejected", "the harness changed during the run")
        if on_line is not None:
            on_line(f"runner: training done in {train.wall_s:.1f} s; evaluating in fresh sandboxed processes")
        try:
            report = evaluate(work, data, prof, eval_seed=eval_seed, sandboxed=sandboxed, hidden=hidden)
        except EvalError as exc:
            base["log_tail"] = (train.log[-MAX_LOG_TAIL_BYTES // 2:] + "\n--- evaluation ---\n" + exc.log_tail)
            return finish(exc.status, exc.reason)
        note = ""
        if contract.val_bpb is not None and not abs(contract.val_bpb - report.val_bpb) <= FAKE_BPB_TOLERANCE:
            note = (f"ignored the val_bpb train.py printed ({contract.val_bpb:g}); "
                    f"the harness measured {report.val_bpb:.6f}")
        return finish("ok", note, val_bpb=report.val_bpb, eval_seconds=round(report.seconds, 3),
                      probe_max_diff=report.probe_max_diff, outputs=report.outputs.hex())
    finally:
        if not keep_work:
            shutil.rmtree(exp, ignore_errors=True)


def _replace(prof: Profile, **changes: Any) -> Profile:
    return Profile(**{**{f.name: getattr(prof, f.name) for f in fields(prof)}, **changes})


def _reported(c: Contract) -> dict[str, Any]:
    return {"num_steps": c.num_steps, "planned_steps": c.planned_steps, "device": c.device,
            "training_seconds": c.training_seconds, "warmup_seconds": c.warmup_seconds,
            "peak_vram_mb": c.peak_vram_mb, "mfu_percent": c.mfu_percent,
            "total_tokens_M": c.total_tokens_M, "num_params_M": c.num_params_M,
            "tokens_per_second": c.tokens_per_second, "loss_curve": c.loss_curve}


def _check_contract(c: Contract, prof: Profile, seed: int, steps: int | None,
                    horizon: int | None = None) -> tuple[str, str] | None:
    if prof.device == "cuda" and (not (c.device or "").startswith("cuda") or not (c.peak_vram_mb or 0) > 0):
        return "crash", (f"silent CPU fallback: the gpu profile ran on device {c.device!r} "
                         f"with peak_vram_mb {c.peak_vram_mb}")
    if c.seed is not None and c.seed != seed:
        return "rejected", f"train.py reports seed {c.seed}, the runner gave {seed}"
    if steps is not None and c.num_steps != steps:
        return "rejected", f"replay asked for exactly {steps} steps, train.py reports {c.num_steps}"
    if steps is not None and c.planned_steps is not None and c.planned_steps != (horizon or steps):
        return "rejected", f"replay asked for horizon {horizon or steps}, train.py reports {c.planned_steps}"
    if c.num_steps is not None and c.num_steps < 1:
        return "crash", "train.py ran no training step"
    return None


@dataclass(frozen=True, slots=True)
class _Training:
    returncode: int | None
    timed_out: bool
    memory_tripped: bool
    stdout: str
    log: str
    wall_s: float


def _train(spec: sandbox.SandboxSpec, limit_s: float, on_line: Callable[[str], None] | None) -> _Training:
    started = time.monotonic()
    proc = sandbox.spawn(spec, [sys.executable, "-P", ENTRY_FILE])
    stdout, log = sandbox.Tail(MAX_STDOUT_TAIL_BYTES), sandbox.Tail(MAX_LOG_TAIL_BYTES)
    if proc.stdout is None or proc.stderr is None:
        raise RunnerError("the training process started without pipes")
    readers = [sandbox.drain(proc.stdout, stdout, log, name="train-stdout", on_line=on_line),
               sandbox.drain(proc.stderr, log, name="train-stderr", on_line=on_line)]
    watchdog = sandbox.Watchdog(proc, spec.memory_limit_mb).start() if sandbox.needs_watchdog(spec) else None
    try:
        finished = sandbox.wait_bounded(proc, started + limit_s)
    finally:
        if watchdog is not None:
            watchdog.stop()
        for reader in readers:
            reader.join(timeout=PIPE_DRAIN_S)
        proc.stdout.close()
        proc.stderr.close()
    return _Training(returncode=proc.returncode, timed_out=not finished,
                     memory_tripped=watchdog is not None and watchdog.tripped,
                     stdout=stdout.text(), log=log.text(), wall_s=time.monotonic() - started)


__all__ = ["ExperimentResult", "RunnerError", "run_experiment", "resolve_profile", "check_allowed", "PROFILES"]
