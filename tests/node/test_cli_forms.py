"""Every `python -m node` form that README.md and docs/*.md print, through the real entry point.

One argparse tree (node/cli.py) parses them all. Here: `--help` lists every command; every command
word and option the docs print is one the tree knows; and the forms run as real processes with a
tmp AUTOSWARM_HOME, `--home`/`--json` before and after the command: the agent commands against a
real local API (tests/node/test_agentcli.py's history), the run forms up to the point where they
need a swarm (a bootstrap address nobody listens on), status on a home with no node. The job
forms run in tests/node/test_market_cli.py, `status` on a real ledger and `run` itself in
tests/node/test_node_run.py, `demo` in tests/node/test_demo.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.node.test_agentcli import _swarm

from node.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT_S = 60.0
_FORM = re.compile(r"python -m node\b([^`\n|#;]*)")


def node(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=TIMEOUT_S,
                          env={**os.environ, "AUTOSWARM_HOME": str(home), **(env or {})}, cwd=home.parent)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    found = {s for action in parser._actions for s in action.option_strings}
    for sub in _subparsers(parser).values():
        found |= _options(sub)
    return found


@pytest.mark.slow
def test_help_lists_every_command_with_a_line(tmp_path: Path) -> None:
    done = node("--help", home=tmp_path / "h")
    assert done.returncode == 0 and done.stderr == ""
    commands = _subparsers(build_parser())
    assert {"run", "status", "demo", "job", "agent-key", "frontier", "submit", "credits"} <= set(commands)
    for name in commands:
        (row,) = [r for r in done.stdout.splitlines() if r.split()[:1] == [name]]
        assert len(row.split()) > 2, row  # a description beside the name
    for sub in ("submit", "list", "show", "cancel"):
        assert re.search(rf"^\s+{sub}\s+\S", node("job", "--help", home=tmp_path / "h").stdout, re.M)


def test_every_documented_command_and_option_is_known() -> None:
    parser = build_parser()
    commands, options = set(_subparsers(parser)), _options(parser)
    valued = {s for a in parser._actions for s in a.option_strings if a.nargs != 0}
    seen: set[str] = set()
    for doc in DOCS:
        for form in _FORM.findall(doc.read_text()):
            try:
                words = shlex.split(form)  # a quoted value (an agent's command line) is one word
            except ValueError:
                words = form.split()
            skip, command = False, None
            for word in words:
                bare = word.strip("[]").split("=")[0]
                if bare.startswith("-"):
                    assert bare in options, f"{doc.name}: `python -m node{form}`: no option {bare}"
                    skip = bare in valued and "=" not in word and command is None
                elif skip:
                    skip = False
                elif command is None and not word.startswith(("[", "<", "...")):
                    command = word
            if command is not None:
                assert command in commands, f"{doc.name}: `python -m node{form}`: no command {command!r}"
                seen.add(command)
    assert {"status", "demo", "job", "frontier", "submit", "credits"} <= seen  # the scan reads the docs at all


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("form", [
    # docs/node.md: joining a swarm, with the address other machines reach this one at
    ["--bootstrap", "{peer}", "--listen", "127.0.0.1:0", "--advertise", "10.0.0.6:7400"],
    ["run", "--bootstrap", "{peer}", "--listen", "127.0.0.1:0", "--advertise", "10.0.0.6:7400"],
    # docs/deploy.md
    ["--home", "{home}", "--listen", "127.0.0.1:0", "--bootstrap", "{peer}"],
    ["--bootstrap", "{peer}", "--home", "{home}"],
])
def test_join_forms_parse_and_an_unreachable_peer_is_one_line(tmp_path: Path, form: list[str]) -> None:
    home, peer = tmp_path / "home", f"127.0.0.1:{_closed_port()}"
    done = node(*[w.format(home=home, peer=peer) for w in form], home=home)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line == (f"node: cannot reach the bootstrap peer ({peer}: connection refused): check the address, "
                    f"and that a node runs there (it prints `peer HOST:PORT` when it starts)")
    assert "Error(" not in line and "(111" not in line  # no exception repr


def test_status_before_and_after_on_a_home_without_a_node(tmp_path: Path) -> None:
    home = tmp_path / "empty"
    for args in (["status", "--home", str(home)], ["--home", str(home), "status"], ["status"], ["--json", "status"]):
        done = node(*args, home=home)
        assert done.returncode == 2 and done.stderr.strip() == (
            f"node: {home}: no node here yet (no config.toml); start one with `python -m node --home {home}`"), args


def test_run_options_on_another_command_are_refused(tmp_path: Path) -> None:
    done = node("--budget-s", "5", "frontier", home=tmp_path / "h")
    assert done.returncode == 2
    assert done.stderr.strip() == "node: python -m node: --budget-s is an option of `python -m node run`, not of `frontier`"


AGENT_FORMS = [  # README.md's and docs/agents.md's, with this history's hashes
    ["frontier"], ["leaderboard"], ["leaderboard", "--class", "cpu-tiny"], ["show", "{better}"],
    ["diff", "{baseline}", "{better}"], ["checkout", "{better}", "-o", "{out}"], ["log"], ["log", "--search", "matrix"],
    ["submit", "{train}", "-m", "from the docs"], ["post", "results", "hello"], ["read", "results"],
    ["hypothesis", "wider helps"], ["hypothesis"], ["insight"], ["credits"],
]


@pytest.mark.slow
async def test_agent_forms_with_options_before_and_after(tmp_path: Path) -> None:
    async with _swarm(tmp_path, with_hub=True) as s:
        train = tmp_path / "train.py"
        train.write_text(s.source.replace("SCALAR_LR = 0.5", "SCALAR_LR = 0.45"))
        values = {"better": s.better.hex()[:12], "baseline": s.baseline.hex()[:8], "train": str(train)}
        home = str(s.kit.home)
        for i, form in enumerate(AGENT_FORMS):
            args = [w.format(**values, out=tmp_path / f"out{i}.py") for w in form]
            for argv in (["--home", home, "--json", *args], [*args, "--json", "--home", home]):
                _edit(train)  # a file submitted twice changes nothing the second time
                done = await asyncio.to_thread(node, *argv, home=tmp_path / "unused")
                assert done.returncode == 0 and "Traceback" not in done.stderr, (argv, done.stderr)
                json.loads(done.stdout)
            _edit(train)
            text = await asyncio.to_thread(node, *args, home=s.kit.home)  # the home from AUTOSWARM_HOME, as text
            assert text.returncode == 0 and text.stdout.strip() and text.stderr == "", (args, text.stderr)


def _edit(train: Path) -> None:
    train.write_text(train.read_text() + "# again\n")
