"""A baseline killed at its wall-clock limit because the machine was busy is tried again, unclaimed,
instead of stopping the node (issue 18: a first start on a machine at load 3-12).

The busy moment is made real: the node's first sandboxed training process is stopped (SIGSTOP)
until the trainer's wall-clock limit kills it, exactly what a starved run looks like to the node.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.node.test_node_run import (RUN_TIMEOUT_S, TRAINER_START_S, _env, _wait_for_trainer,
                                      assert_audits_clean, ledger_facts)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT_S + 300)]


def _descendants(pid: int) -> list[int]:
    """`pid` and every process below it (polled from /proc)."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [pid], [pid]
    while frontier:
        below = [child for child, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found


def _sandbox_of(trainer: int) -> int:
    """The sandbox (bwrap) the trainer started for the run, once it exists (polled, bounded).

    Not the trainer's preflight, an empty sandbox that runs `true`: stopping that one makes the
    preflight time out, which the trainer rightly reports as a sandbox that does not work here."""
    deadline = time.monotonic() + TRAINER_START_S
    while time.monotonic() < deadline:
        for pid in _descendants(trainer)[1:]:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"bwrap") and argv[-1] != b"true":
                return pid
        time.sleep(0.1)
    raise AssertionError("the trainer never started its sandbox")


def test_a_starved_baseline_is_tried_again_and_never_claimed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # what comes after the baseline is not this test's subject: no calibration, two paired rounds
    (home / "config.toml").write_text("[research]\ncalibration_runs = 0\n\n[swarm]\nmax_rounds = 2\n")
    proc = subprocess.Popen([sys.executable, "-m", "node", "--profile", "cpu", "--budget-s", "1",
                             "--max-experiments", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env(home))
    try:
        # the sandbox, not the trainer's own process: that one holds the wall-clock limit
        for pid in _descendants(_sandbox_of(_wait_for_trainer(proc)[0])):
            try:
                os.kill(pid, signal.SIGSTOP)  # starved: the runner's wall-clock limit kills it
            except ProcessLookupError:
                pass
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0, out[-3000:]
    assert "baseline 1 of 3 too slow" in out and "not claimed, trying again" in out, out[-3000:]
    claims, _ = ledger_facts(home)
    baselines = [body for _, _, body in claims if body.parent is None]
    assert baselines and all(body.status == "ok" for body in baselines)  # the killed try left no claim
    assert_audits_clean(home)
    assert "Traceback" not in out
