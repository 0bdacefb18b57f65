"""`python -m node demo --nodes 3` end to end: three real node processes on loopback find an
improvement, the other two verify it, it is recorded and minted, and its author spends credits on
a job another node runs and is settled; the ledgers audit clean and fold to the same state. The demo itself checks all of that and says so in its JSON line; this test
re-checks the files it left.

The slowest test of the suite (a few minutes on a quiet 2-core machine); its bound has 3-5x
headroom for a machine that has just booted.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger import fold, schema
from ledger.audit import audit_file
from ledger.bodies import Claim
from ledger.keys import parse_node_id
from ledger.spec import decode_spec
from ledger.store import Ledger
from node.sim.demo import DEMO_STEPS

DEMO_TIMEOUT_S = 2400
JOIN_TIMEOUT_S = 900        # the creator's data, first start and baseline claim on a busy 2-core machine
STOP_TIMEOUT_S = 180        # the demo's SIGINT to each node and their clean stops (60 s each at most, then SIGKILL)


async def _claims(path: Path) -> list[Claim]:
    async with Ledger.open(path) as ledger:
        return [e.body for _, e in await ledger.entries_since(0, ["claim"], 10_000) if isinstance(e.body, Claim)]


def _logs(root: Path) -> str:
    return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-25:])
                     for p in sorted(root.glob("node*.log")))


def _diagnosis(summary: dict[str, object], root: Path) -> str:
    """A short account of a failed demo that survives a CI log's tail: why, then each node's runs."""
    keys = ("why", "seconds", "entries", "exit_codes", "audits_clean", "same_fold")
    head = ", ".join(f"{k}={summary.get(k)!r}" for k in keys)
    marks = ("experiment", "verified", "RECORD", "REFUTED", "rror", "mints owed")
    lines = []
    for log in sorted(root.glob("node*.log")):
        events = [line[:150] for line in log.read_text(errors="replace").splitlines() if any(m in line for m in marks)]
        lines += [f"--- {log.name}: {len(events)} events", *events[-8:]]
    return head + "\n" + "\n".join(lines)


@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S + 60)  # beyond the suite's 600 s default: the demo's own bound rules
def test_three_nodes_find_verify_record_and_mint(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "node", "demo", "--nodes", "3", "--dir", str(root), "--keep"],
                            capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
    lines = result.stdout.strip().splitlines()
    assert lines, (result.stderr[-3000:], _logs(root))
    summary = json.loads(lines[-1])
    if result.returncode != 0 or not summary["ok"]:
        pytest.fail(_diagnosis(summary, root), pytrace=False)
    assert "Traceback" not in result.stderr + _logs(root)
    record = summary["record"]
    assert record["author"] not in record["verified_by"] and len(record["verified_by"]) >= 2
    assert record["minted_ucr"] > 0 and record["val_bpb"] < record["previous_best"]
    # the demo's trust is its genesis spec alone: the creator's verifier and the others' research keys
    trust = summary["trust"]
    assert trust["admitted"] == [] and len(trust["spec_verifiers"]) == 3
    assert set(record["verified_by"]) <= set(trust["spec_verifiers"])
    job = summary["job"]  # the record's author spent credits on a job another node ran
    assert job["payer"] == record["author"] and job["executor"] != job["payer"]
    assert job["paid_ucr"] > 0 and job["gpu_s"] > 0
    ledgers = sorted(root.glob("node*/swarms/current/ledger.sqlite"))  # the path each node printed
    assert len(ledgers) == 3
    states = []
    for path in ledgers:
        report = audit_file(path)
        assert report.ok and report.invalid_count == 0, report.problems
        states.append(schema.load(path, decode_spec((path.parent / "spec.bin").read_bytes())).state)
    assert all(fold.tables(s) == fold.tables(states[0]) for s in states)
    assert all(set(s.anchors) == set(s.spec.verifiers) for s in states)  # nobody admitted for asking
    claim = bytes.fromhex(record["claim"])
    assert all(claim in s.verified for s in states)
    # every run of the demo's own trains DEMO_STEPS steps whatever the load: the baseline and the agent's edit
    assert {c.num_steps for c in asyncio.run(_claims(ledgers[0]))} == {DEMO_STEPS}
    assert parse_node_id(record["author"]) == states[0].claims[claim].author
    assert all(s.jobs[bytes.fromhex(job["job"])].status == "settled" for s in states)


def test_bad_demo_arguments_are_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "node", "demo", "--nodes", "1"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "between 2 and 8" in result.stderr


def _processes_of(root: Path) -> list[int]:
    """Live processes whose command line or environment names `root`: the demo's nodes and their trainers."""
    mark, found = str(root).encode(), []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if mark in (proc / "cmdline").read_bytes() or mark in (proc / "environ").read_bytes():
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":  # a zombie has exited; only its parent's wait is missing
                    found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def _wait_for_line(path: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text(errors="replace"):
        assert proc.poll() is None, path.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} within {timeout_s} s"
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(JOIN_TIMEOUT_S + STOP_TIMEOUT_S + 120)
def test_sigterm_takes_every_node_down(tmp_path: Path) -> None:
    """Issue 14: a SIGTERM to the demo once left its nodes running (their own sessions shield them)."""
    root, err = tmp_path / "demo", tmp_path / "demo.err"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "node", "demo", "--nodes", "2", "--dir",
                                 str(root), "--keep"], stdout=subprocess.PIPE, stderr=stderr)
    try:
        _wait_for_line(err, "the other nodes join", proc, JOIN_TIMEOUT_S)
        _wait_for_line(root / "node1.log", "local API and dashboard", proc, JOIN_TIMEOUT_S)  # past its imports
        started = _processes_of(root)
        assert len(started) >= 2, started  # both nodes (and maybe a trainer) run
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
        assert proc.returncode == 128 + signal.SIGTERM.value, err.read_text()[-3000:]
        summary = json.loads(out.decode().strip().splitlines()[-1])
        assert summary["why"] == "stopped by SIGTERM" and not summary["ok"]
        assert summary["exit_codes"] == [0, 0]  # each node stopped cleanly on the demo's SIGINT
        deadline = time.monotonic() + 30  # a trainer's last exit after its node's
        while (left := _processes_of(root)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left == [], f"orphans: {left}"
        assert "Traceback" not in err.read_text() + _logs(root)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for pid in _processes_of(root):  # never leave a failed test's nodes behind
            os.kill(pid, signal.SIGKILL)
