"""Runs the trainer as a child process and reads its one-line JSON result.

No training code runs in the node's process (DESIGN.md): `python -m trainer run` is started with
asyncio, in its own session so a terminal's Ctrl-C reaches only the node, which then decides.
Every run has a hard deadline (the trainer's own limits plus a margin); past it, or when the
owning task is cancelled (shutdown), the child's process group is SIGKILLed. The sandbox dies
with its parent (bubblewrap's --die-with-parent), and the child's TMPDIR is a scratch folder of
ours that we delete, so a killed run leaves nothing behind.

Exit statuses are the trainer's contract: 0 ok, 1 a failed candidate (still a result), 2 bad
input: the trainer cannot run at all here, which is TrainerFailed, not a claim.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.constants import ENV_PARENT_PID, PROFILES

from ledger.outputs import outputs_from_hex
from node.errors import TrainerFailed
from node.research.limits import MAX_LOG_TAIL

KILL_WAIT_S = 10.0                 # for a SIGKILLed child to be reaped
RESULT_MARGIN_S = 120.0            # beyond the trainer's own limits, before we give up on it
MAX_STDOUT_BYTES = 4 << 20         # the result line carries a log tail: kilobytes
STREAM_LIMIT_BYTES = 1 << 20       # longest stderr line we read whole
STDERR_TAIL_LINES = 40
LOCK_POLL_S = 0.2                  # how often a worker waiting for the machine lock looks again
REPLAY_SLACK = 1.25                # a replay may take this much longer than the budget (as the runner allows)


@dataclass(frozen=True, slots=True)
class RunRequest:
    train_py: Path
    parent_py: Path | None
    profile: str                   # "cpu" | "gpu"
    budget_s: int
    steps: int | None              # replay exactly this many steps (verification)
    horizon: int | None            # the schedule's horizon of the run being replayed
    seed: int
    data: Path
    scratch: Path                  # the child's TMPDIR; emptied after the run
    env: Mapping[str, str]         # extra environment (CUDA_VISIBLE_DEVICES)
    home: Path                     # the node's home: hidden from the candidate (keys), by argument
    eval_seed: int | None = None   # the validation rows to score; None: fresh, secret (the trainer draws them)


@dataclass(frozen=True, slots=True)
class RunResult:
    status: str                    # ok | crash | rejected | timeout
    reason: str
    val_bpb: float | None
    seed: int
    num_steps: int
    planned_steps: int
    training_s: float
    total_s: float
    peak_vram_mb: float
    loss_curve: tuple[float, ...]
    log_tail: str
    harness_hash: str
    wall_s: float                  # measured here: spawn to exit
    outputs: bytes | None = None   # commitment to the evaluation's outputs (trainer/outputs.py); ok runs only


def deadline_s(request: RunRequest) -> float:
    """The longest a run may take before we kill it: the trainer's limits plus a margin."""
    prof = PROFILES[request.profile]
    train = request.budget_s * (REPLAY_SLACK if request.steps is not None else 1.0) + prof.startup_allowance_s
    return train + 3 * prof.eval_timeout_s + RESULT_MARGIN_S


def command(request: RunRequest) -> list[str]:
    argv = [sys.executable, "-m", "trainer", "run", str(request.train_py), "--profile", request.profile,
            "--budget-s", str(request.budget_s), "--seed", str(request.seed), "--data", str(request.data),
            "--home", str(request.home)]
    if request.parent_py is not None:
        argv += ["--parent", str(request.parent_py)]
    if request.steps is not None:
        argv += ["--steps", str(request.steps)]
    if request.horizon is not None:
        argv += ["--horizon", str(request.horizon)]
    if request.eval_seed is not None:
        argv += ["--eval-seed", str(request.eval_seed)]
    return argv


def _number(raw: Mapping[str, Any], key: str) -> float:
    value = raw.get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def parse_result(line: str, wall_s: float) -> RunResult:
    try:
        raw = json.loads(line)
    except ValueError:
        raise TrainerFailed(f"the trainer's last line is not JSON: {line[:200]!r}") from None
    if not isinstance(raw, dict) or raw.get("status") not in ("ok", "crash", "rejected", "timeout"):
        raise TrainerFailed(f"the trainer's result has no known status: {line[:200]!r}")
    val = raw.get("val_bpb")
    ok = raw["status"] == "ok" and isinstance(val, (int, float)) and math.isfinite(val) and val > 0
    curve = raw.get("loss_curve") or []
    losses = tuple(float(p[1]) for p in curve if isinstance(p, list) and len(p) == 2
                   and isinstance(p[1], (int, float)) and math.isfinite(p[1]))
    return RunResult(
        status=raw["status"] if ok or raw["status"] != "ok" else "crash",
        reason=str(raw.get("reason") or ("" if ok else "no val_bpb in an ok result")),
        val_bpb=float(val) if ok else None,  # type: ignore[arg-type]  # ok implies a number
        seed=int(raw.get("seed") or 0),
        num_steps=int(_number(raw, "num_steps")),
        planned_steps=int(_number(raw, "planned_steps")),
        training_s=_number(raw, "training_seconds"),
        total_s=_number(raw, "total_seconds"),
        peak_vram_mb=_number(raw, "peak_vram_mb"),
        loss_curve=losses,
        log_tail=str(raw.get("log_tail") or ""),
        harness_hash=str(raw.get("harness_hash") or ""),
        wall_s=wall_s,
        outputs=outputs_from_hex(raw.get("outputs")) if ok else None,
    )


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    chunks: deque[bytes] = deque()
    size = 0
    while chunk := await stream.read(64 << 10):
        chunks.append(chunk)
        size += len(chunk)
        while size > limit and len(chunks) > 1:  # keep the end: the result is the last line
            size -= len(chunks.popleft())
    return b"".join(chunks)


async def _read_lines(stream: asyncio.StreamReader, tail: deque[str], on_line: Callable[[str], None] | None) -> None:
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # a line past STREAM_LIMIT_BYTES: drop it, keep reading
            continue
        if not raw:
            return
        line = raw.decode(errors="replace").rstrip()
        tail.append(line)
        if on_line is not None:
            on_line(line)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@contextlib.asynccontextmanager
async def machine_slot(lock_path: Path | None, slots: int = 1) -> AsyncIterator[None]:
    """Waits for this process's turn on a machine shared by several nodes (None: no waiting).

    Nodes that share one machine's CPU name the same `lock_path`; each run takes a ticket (a file
    named by the time it asked, in `<lock_path>.queue/`) and starts when its ticket is among the
    `slots` oldest live ones, so runs take turns in the order they asked — a plain flock lets
    whoever releases it take it again at once. With one slot each run gets the whole machine; two
    suit a 2-core machine whose trainers run one thread each (the CPU profile). A ticket of a
    process that died is removed by the next waiter. Waiting is polled, so a cancelled worker
    stops waiting at once.
    """
    if lock_path is None:
        yield
        return
    queue = lock_path.with_name(lock_path.name + ".queue")
    ticket = queue / f"{time.time_ns():020d}-{os.getpid()}-{next(_tickets)}"
    try:
        queue.mkdir(parents=True, exist_ok=True)
        ticket.touch(exist_ok=False)
    except OSError as exc:
        raise TrainerFailed(f"{queue}: cannot queue for the machine: {exc.strerror}") from None
    try:
        while ticket.name not in _queue_heads(queue, slots):
            await asyncio.sleep(LOCK_POLL_S)
        yield
    finally:
        ticket.unlink(missing_ok=True)


def _queue_heads(queue: Path, slots: int) -> list[str]:
    """The `slots` oldest tickets whose processes are alive; tickets of dead processes are removed."""
    heads: list[str] = []
    for name in sorted(p.name for p in queue.iterdir()):
        try:
            pid = int(name.split("-")[1])
            os.kill(pid, 0)
        except (IndexError, ValueError, ProcessLookupError):
            (queue / name).unlink(missing_ok=True)
            continue
        except PermissionError:
            pass  # alive, another user's
        heads.append(name)
        if len(heads) == slots:
            break
    return heads


_tickets = itertools.count()


async def run_trainer(request: RunRequest, on_line: Callable[[str], None] | None = None) -> RunResult:
    """One trainer run; cancelling the caller kills the child and cleans its scratch folder."""
    request.scratch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **request.env, "TMPDIR": str(request.scratch), "PYTHONUNBUFFERED": "1",
           ENV_PARENT_PID: str(os.getpid())}  # a SIGKILLed node takes its trainer with it
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *command(request), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True, limit=STREAM_LIMIT_BYTES)
    except OSError as exc:
        raise TrainerFailed(f"cannot start the trainer: {exc}") from None
    if proc.stdout is None or proc.stderr is None:
        raise TrainerFailed("the trainer started without pipes")
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    limit_s = deadline_s(request)
    try:
        async with asyncio.timeout(limit_s), asyncio.TaskGroup() as tg:
            out = tg.create_task(_read_capped(proc.stdout, MAX_STDOUT_BYTES), name="trainer-stdout")
            tg.create_task(_read_lines(proc.stderr, tail, on_line), name="trainer-stderr")
            tg.create_task(proc.wait(), name="trainer-wait")
    except TimeoutError:
        _kill_group(proc)
        await _reap(proc)
        return _timeout(request, limit_s, time.monotonic() - started, tail)
    except BaseException:
        _kill_group(proc)  # shutdown or a bug: the child must not outlive us
        await asyncio.shield(_reap(proc))
        raise
    finally:
        shutil.rmtree(request.scratch, ignore_errors=True)
    wall_s = time.monotonic() - started
    lines = out.result().decode(errors="replace").strip().splitlines()
    if proc.returncode not in (0, 1) or not lines:
        why = next((line for line in reversed(tail) if line.strip()), "no output")
        raise TrainerFailed(f"the trainer exited with status {proc.returncode}: {why[:300]}")
    return parse_result(lines[-1], wall_s)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    try:
        async with asyncio.timeout(KILL_WAIT_S):
            await proc.wait()
    except TimeoutError:
        pass


def _timeout(request: RunRequest, limit_s: float, wall_s: float, tail: deque[str]) -> RunResult:
    return RunResult(status="timeout", reason=f"the trainer did not finish within {limit_s:.0f} s and was killed",
                     val_bpb=None, seed=request.seed, num_steps=0, planned_steps=0, training_s=0.0, total_s=wall_s,
                     peak_vram_mb=0.0, loss_curve=(), log_tail="\n".join(tail)[-MAX_LOG_TAIL:], harness_hash="",
                     wall_s=wall_s)
