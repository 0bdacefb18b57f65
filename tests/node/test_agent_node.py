"""`python -m node --agent CMD` end to end on the CPU: a real node, a real scripted coding agent.

The agent (a small Python script run by the node's driver, node/research/agentdriver.py) edits
a train.py that does not parse on its first round, which the node refuses and goes on; the edit
of its second round the node's worker runs and claims. Its third round starts a child that ignores SIGTERM and a grandchild in a session of its own, then hangs:
SIGTERM to the node must stop all of them. Budgets are tiny (2 s of training); every wait is
bounded with headroom for a loaded 2-core machine.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ledger.audit import audit_file
from ledger.bodies import Claim
from ledger.store import Ledger

from node.configfile import DEFAULT_TOML

RUN_TIMEOUT_S = 1200.0      # the baseline, its replays and the agent's run, at load 10 on two cores
STOP_BOUND_S = 60.0         # SIGTERM to exit: the agent's grace period, the trainer, the ledger
pytestmark = [pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT_S + 300)]
MESSAGE = "agent: warm down over the last 40%"

AGENT = """
import os, pathlib, re, signal, subprocess, sys, time
state = pathlib.Path(sys.argv[1])
rounds = state / "rounds"
rounds.write_text(rounds.read_text() + "x" if rounds.exists() else "x")
if len(rounds.read_text()) == 1:   # round 1: a train.py that does not parse
    pathlib.Path(os.environ["AUTOSWARM_TRAIN_PY"]).write_text("def broken(:\\n")
    sys.exit(0)
if len(rounds.read_text()) == 2:   # round 2: the edit BRIEF.md asks for
    assert "off limits" in pathlib.Path(os.environ["AUTOSWARM_BRIEF"]).read_text()
    path = pathlib.Path(os.environ["AUTOSWARM_TRAIN_PY"])
    path.write_text(re.sub(r"(?m)^WARMDOWN_RATIO = .*$", "WARMDOWN_RATIO = 0.4", path.read_text()))
    pathlib.Path(os.environ["AUTOSWARM_MESSAGE"]).write_text(%r)
    sys.exit(0)
child = subprocess.Popen([sys.executable, "-c", '''
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True)
open(sys.argv[1], "w").write(str(g.pid))
time.sleep(3600)
''', str(state / "grandchild")])
(state / "pids").write_text(f"{os.getpid()} {child.pid}")
time.sleep(3600)
""" % MESSAGE


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


async def _claims(path: Path) -> list[Claim]:
    async with Ledger.open(path) as ledger:
        return [e.body for _, e in await ledger.entries_since(0, ["claim"], 10_000) if isinstance(e.body, Claim)]


def test_a_node_runs_its_agents_edit_and_stops_the_agent_with_itself(tmp_path: Path) -> None:
    home, state = tmp_path / "home", tmp_path / "agent"
    home.mkdir()
    state.mkdir()
    (home / "config.toml").write_text(DEFAULT_TOML.replace("calibration_runs = 2", "calibration_runs = 0"))
    script = tmp_path / "agent.py"
    script.write_text(textwrap.dedent(AGENT))
    log = tmp_path / "node.log"
    env = {**os.environ, "AUTOSWARM_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "node", "--profile", "cpu", "--budget-s", "2",
                                 "--agent", f"{sys.executable} {script} {state}"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        # the worker's line once the claim is published ("experiment 1: agent-cpu: ...: val_bpb ... claim ...")
        while not ("experiment 1: agent-cpu: " + MESSAGE in log.read_text() and (state / "pids").exists()
                   and (state / "grandchild").exists()):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the node never ran the agent's edit:\n" + log.read_text()[-3000:]
            time.sleep(0.5)
        pids = [int(p) for p in (state / "pids").read_text().split()] + [int((state / "grandchild").read_text())]
        assert all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STOP_BOUND_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for pid in pids:   # never leave a test's processes behind, whatever failed
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert re.search(r"\[cpu\] agent: ran \d+ s; its edit was refused: train.py does not parse: line 1, column \d+",
                     text), text[-3000:]   # the refusal is one line, and the node went on to the next round
    assert proc.returncode == 0 and "stopped cleanly" in text and "Traceback" not in text, text[-3000:]
    deadline = time.monotonic() + 10.0
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)], "the agent outlived its node"
    ledger = home / "swarms" / "current" / "ledger.sqlite"
    claims = asyncio.run(_claims(ledger))
    baseline = next(c.commit for c in claims if c.parent is None)
    # a run that failed under load appends its reason to the message; the claim is the point here
    mine = [c for c in claims if c.message.startswith("agent-cpu: " + MESSAGE)]
    assert len(mine) == 1, [c.message for c in claims]
    assert mine[0].parent == baseline and "WARMDOWN_RATIO: 0.5 -> 0.4" in mine[0].diff_summary
    assert audit_file(ledger).ok
