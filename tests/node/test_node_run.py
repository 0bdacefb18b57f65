"""`python -m node` end to end on the CPU: real subprocesses, real trainer runs, real ledger files.

Budgets are tiny (2 s of training) so the whole file takes a couple of minutes on a 2-core
machine; every wait is bounded with several times the usual duration as headroom.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ledger.audit import audit_file
from ledger.bodies import Claim
from ledger.store import Ledger

RUN_TIMEOUT_S = 600.0       # a 2-experiment run takes ~1-2 minutes here
TRAINER_START_S = 180.0     # data preparation and the first trainer spawn
STOP_BOUND_S = 45.0         # SIGINT to exit: kill the trainer, close the ledger
ARGS = ("--profile", "cpu", "--budget-s", "2")


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "AUTOSWARM_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def run_node(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "node", *ARGS, *args], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S, env=_env(home))
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    return result


def ledger_path(home: Path) -> Path:
    (path,) = (home / "swarms").glob("*/ledger.sqlite")
    return path


async def _claims_and_heads(path: Path) -> tuple[list[tuple[bytes, int, Claim]], dict[bytes, int]]:
    async with Ledger.open(path) as ledger:
        claims = []
        for claim_id in ledger.state.claims:
            entry = await ledger.get(claim_id)
            assert entry is not None and isinstance(entry.body, Claim)
            claims.append((entry.author, entry.seq, entry.body))
        return claims, await ledger.heads()


def ledger_facts(home: Path) -> tuple[list[tuple[bytes, int, Claim]], dict[bytes, int]]:
    return asyncio.run(_claims_and_heads(ledger_path(home)))


def assert_audits_clean(home: Path) -> dict[str, int]:
    report = audit_file(ledger_path(home))
    assert report.ok and report.invalid_count == 0, (report.problems, report.invalid)
    return report.counts


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    home = tmp_path_factory.mktemp("node") / "home"
    return home, run_node(home, "--max-experiments", "2")


def test_first_run_creates_the_home_and_researches(ran: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    home, result = ran
    for name in ("config.toml", "repo", "bundles", "data", "swarms/current"):
        assert (home / name).exists(), name
    assert stat.S_IMODE((home / "keys").stat().st_mode) == 0o700
    for key in ("research.key", "verifier.key"):
        assert stat.S_IMODE((home / "keys" / key).stat().st_mode) == 0o600
    assert len(list((home / "swarms").glob("*/spec.bin"))) == 1 and any((home / "bundles").iterdir())
    counts = assert_audits_clean(home)
    assert counts["claim"] == 3 and counts["profile"] == 1  # two experiments and the baseline
    assert counts["verify"] >= 1 and counts["mint"] >= 1
    claims, _ = ledger_facts(home)
    assert sum(1 for _, _, c in claims if c.parent is None) == 1
    assert all("key: k1-" in c.diff_summary for _, _, c in claims)
    assert "baseline val_bpb" in result.stdout and "experiment 2:" in result.stdout
    assert "RECORD" in result.stdout  # the baseline is the class's first record


def test_restart_resumes_from_the_ledger(ran: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    home, _ = ran
    before, heads_before = ledger_facts(home)
    result = run_node(home, "--max-experiments", "1")
    after, heads_after = ledger_facts(home)
    assert_audits_clean(home)
    assert len(after) == len(before) + 1 and sum(1 for _, _, c in after if c.parent is None) == 1
    (researcher,) = {a for a, _, c in before if c.parent is None}
    new = [(a, s) for a, s, _ in after if (a, s, ) not in {(x, y) for x, y, _ in before}]
    assert new == [(researcher, heads_before[researcher] + 1)]  # the feed continues, no second profile
    assert heads_after[researcher] == heads_before[researcher] + 1
    assert f"{len(before)} claims" in result.stdout
    keys = [c.diff_summary.splitlines()[-1] for _, _, c in after]
    assert len(keys) == len(set(keys))  # no program claimed twice


def _trainer_children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"trainer" in cmdline and b"run" in cmdline:
            found.append(int(proc.name))
    return found


def test_sigint_stops_cleanly_and_kills_the_trainer(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = subprocess.Popen([sys.executable, "-m", "node", *ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(home))
    try:
        deadline = time.monotonic() + TRAINER_START_S
        children: list[int] = []
        while not children and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            children = _trainer_children(proc.pid)
        assert children, "the node never started a trainer"
        _use_the_live_api(home)
        time.sleep(1.0)  # let it get into the run proper
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=STOP_BOUND_S)
        assert time.monotonic() - started < STOP_BOUND_S
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in out + err and "stopped cleanly" in out
    for child in children:
        with pytest.raises(ProcessLookupError):
            os.killpg(child, 0)  # the trainer's whole process group is gone
    assert_audits_clean(home)
    assert not (home / "api.json").exists()  # a stopped node leaves no address for the CLI to try


def _use_the_live_api(home: Path) -> None:
    """The running node's local API: the agent CLI and AgentHub's register against the real server."""
    api = json.loads((home / "api.json").read_text())
    assert stat.S_IMODE((home / "api.json").stat().st_mode) == 0o600
    cli = subprocess.run([sys.executable, "-m", "node", "--home", str(home), "frontier", "--json"],
                         capture_output=True, text=True, timeout=120, env=_env(home))
    assert cli.returncode == 0, cli.stderr
    assert isinstance(json.loads(cli.stdout), (dict, list))
    request = urllib.request.Request(api["url"] + "/api/register", data=b'{"id":"test-agent"}',
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert "api_key" in json.loads(answer.read())

