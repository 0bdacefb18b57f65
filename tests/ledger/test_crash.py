"""Kill a writer with SIGKILL at random moments, again and again: nothing acknowledged is lost.

Each round starts `tests/ledger/crash_writer.py` on the same, growing file, waits for its first
acknowledged entry, lets it run a random few tens of milliseconds and kills it. Every round's
writer must open the file left by the previous kill (opening checks every chain link and feed).
At the end every acknowledged id must be in the file, the row chain recomputed from the rows
must hold, and the file must still open and take appends.
"""
from __future__ import annotations

import asyncio
import os
import random
import re
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger import schema
from ledger.store import Ledger
from tests.ledger.crash_writer import SPEC
from tests.ledger.factory import identity, post

ROOT = Path(__file__).resolve().parents[2]
KILLS = 100
MAX_RUN_S = 0.04         # longest a writer runs after its first acknowledgement
FIRST_ACK_TIMEOUT_S = 20.0
ACK = re.compile(rb"ack ([0-9a-f]{64}) (\d+)\n")


def first_line(proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            proc.kill()
            raise AssertionError(f"no acknowledgement within {timeout_s} s")
    return proc.stdout.readline()


def run_and_kill(path: Path, run: int, delay_s: float) -> list[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ledger.crash_writer", str(path), str(run)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        line = first_line(proc, FIRST_ACK_TIMEOUT_S)
        if line:
            time.sleep(delay_s)  # the random moment: the kill lands mid-append, mid-commit or between
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, f"writer ended by itself ({proc.returncode}): {err.decode()[-2000:]}"
    # a line cut by the kill never matched: only complete lines are acknowledgements
    return [m.group(1) for m in ACK.finditer(line + out)]


@pytest.mark.slow
def test_sigkill_never_loses_an_acknowledged_append(tmp_path: Path) -> None:
    path = tmp_path / "crash.ledger"
    rng = random.Random(20260)
    acked: set[bytes] = set()
    for run in range(KILLS):
        ids = run_and_kill(path, run, rng.uniform(0, MAX_RUN_S))
        assert ids, f"round {run}: no acknowledged entry"
        acked.update(bytes.fromhex(i.decode()) for i in ids)
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT row, id, chain FROM entries ORDER BY row").fetchall()
    held = {r[1] for r in rows}
    assert acked <= held, f"{len(acked - held)} acknowledged entries are missing"
    tip = SPEC.swarm_id
    for n, (row, entry_id, chain) in enumerate(rows, start=1):
        tip = schema.next_chain(tip, entry_id)
        assert (row, chain) == (n, tip), f"row {row}: chain broken"

    async def still_works() -> None:
        async with Ledger.open(path, SPEC) as ledger:
            before = await ledger.count()
            await ledger.publish(identity(499), post("after the kills"), time_ms=1)
            assert await ledger.count() == before + 1

    asyncio.run(still_works())
