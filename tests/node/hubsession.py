"""The agent's side of the AgentHub tests: the seed's shell snippets verbatim, an agent with its own
HOME and checkout that runs them with bash, curl and git, and a hub (the real routes over a real
node backend) on 127.0.0.1. Shared by tests/node/test_agenthub*.py and test_node_run.py."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from node.web.agenthub import add_routes
from node.web.server import write_api_file
from tests.ledger.factory import identity
from tests.node.hubkit import OPERATOR_TOKEN, KitBackend, backend

SHELL_TIMEOUT_S = 60.0   # one snippet takes well under a second; 5x headroom and more for a busy machine
HTTP_TIMEOUT_S = 30.0
OTHER_NODE = identity(7)
JSON = {"Content-Type": "application/json"}

# -- the seed's commands, verbatim

REGISTER = r"""if [ -f ~/.agenthub_creds ]; then
  source ~/.agenthub_creds
else
  # Pick a unique agent name and register
  RESP=$(curl -s -X POST "$HUB/api/register" \
    -H "Content-Type: application/json" \
    -d '{"id":"YOUR_AGENT_NAME"}')
  echo "$RESP"
  # Returns: {"id":"...","api_key":"..."}
  # Save credentials for future sessions
  API_KEY=$(echo "$RESP" | python3 -c "import sys,json; print(json.load(sys.stdin)['api_key'])")
  AGENT_ID=$(echo "$RESP" | python3 -c "import sys,json; print(json.load(sys.stdin)['id'])")
  echo "export HUB_KEY=\"$API_KEY\"" > ~/.agenthub_creds
  echo "export AGENT_ID=\"$AGENT_ID\"" >> ~/.agenthub_creds
  source ~/.agenthub_creds
fi"""
PUSH = r"""git bundle create /tmp/push.bundle HEAD
curl -s -X POST "$HUB/api/git/push" \
  -H "Authorization: Bearer $HUB_KEY" \
  --data-binary @/tmp/push.bundle"""
FETCH = r"""curl -s "$HUB/api/git/fetch/<hash>" \
  -H "Authorization: Bearer $HUB_KEY" \
  -o /tmp/fetch.bundle
git bundle unbundle /tmp/fetch.bundle
git checkout <hash>"""
COMMITS = r"""curl -s "$HUB/api/git/commits?limit=20" -H "Authorization: Bearer $HUB_KEY" """
LEAVES = r"""curl -s "$HUB/api/git/leaves" -H "Authorization: Bearer $HUB_KEY" """
CHILDREN = r"""curl -s "$HUB/api/git/commits/<hash>/children" -H "Authorization: Bearer $HUB_KEY" """
DIFF = r"""curl -s "$HUB/api/git/diff/<hash_a>/<hash_b>" -H "Authorization: Bearer $HUB_KEY" """
CREATE_CHANNEL = r"""curl -s -X POST "$HUB/api/channels" \
  -H "Authorization: Bearer $HUB_KEY" \
  -H "Content-Type: application/json" \
  -d '{"name":"results","description":"experiment results"}' """
POST = r"""curl -s -X POST "$HUB/api/channels/results/posts" \
  -H "Authorization: Bearer $HUB_KEY" \
  -H "Content-Type: application/json" \
  -d '{"content":"your message here"}' """
READ = r"""curl -s "$HUB/api/channels/results/posts?limit=50" -H "Authorization: Bearer $HUB_KEY" """
ORPHAN_SETUP = r"""git checkout --orphan agenthub
git reset
git add train.py prepare.py pyproject.toml uv.lock
git commit -m "baseline" """
COMMIT_CHANGE = r"""git add train.py && git commit -m "short description of change" """
REVERT = r"""git reset --hard HEAD~1"""


@dataclass
class Hub:
    kit: KitBackend
    url: str
    root: Path

    def agent(self, name: str) -> Agent:
        return Agent(self, name, self.root / name)


@dataclass
class Agent:
    """One agent's machine: its own HOME (credentials), scratch folder and git checkout."""

    hub: Hub
    name: str
    home: Path

    @property
    def checkout(self) -> Path:
        return self.home / "autoresearch"

    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home), "HUB": self.hub.url, "LANG": "C.UTF-8",
            # python3 for the register snippet: this interpreter, not a shim that wants the real HOME
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "GIT_AUTHOR_NAME": self.name, "GIT_AUTHOR_EMAIL": f"{self.name}@agents",
            "GIT_COMMITTER_NAME": self.name, "GIT_COMMITTER_EMAIL": f"{self.name}@agents",
            "GIT_CONFIG_NOSYSTEM": "1",
        }

    async def sh(self, script: str, **fill: str) -> str:
        """Runs a seed snippet in the checkout, after loading the saved credentials as the seed says."""
        for key, value in fill.items():
            script = script.replace(f"<{key}>", value)
        script = script.replace("YOUR_AGENT_NAME", self.name).replace("/tmp/", f"{self.home}/scratch/")
        (self.home / "scratch").mkdir(parents=True, exist_ok=True)
        self.checkout.mkdir(parents=True, exist_ok=True)
        prelude = "set -e\nif [ -f ~/.agenthub_creds ]; then source ~/.agenthub_creds; fi\n"
        done = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", prelude + script], cwd=self.checkout, env=self.env(),
            capture_output=True, text=True, timeout=SHELL_TIMEOUT_S)
        assert done.returncode == 0, f"{script}\n-> {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    async def json(self, script: str, **fill: str) -> Any:
        return json.loads(await self.sh(script, **fill))

    async def key(self) -> str:
        return (await self.sh('echo "$HUB_KEY"')).strip()


@contextlib.asynccontextmanager
async def running_hub(tmp_path: Path, *, claim_baseline: bool = True) -> AsyncIterator[Hub]:
    async with backend(tmp_path / "node", claim_baseline=claim_baseline) as kit:
        app = web.Application()
        add_routes(app, kit, kit.agents)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            url = f"http://{host}:{port}"
            write_api_file(kit.home, url, OPERATOR_TOKEN, "")  # what the operator's agent-key reads
            yield Hub(kit, url, tmp_path)
        finally:
            await runner.cleanup()


@pytest.fixture(autouse=True)
def no_internal_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A 500 is a bug: every bad input must be a 4xx, so nothing may be logged as an error."""
    with caplog.at_level(logging.WARNING, logger="node.web.common"):  # where `guard` logs what it answers
        yield
    assert [r.getMessage() for r in caplog.records if r.name == "node.web.common"] == []


async def http(hub: Hub, method: str, path: str, *, key: str | None = None, body: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request with aiohttp's client: status and the JSON (or text) it answered."""
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.request(method, hub.url + path, data=body, headers=sent) as response:
            text = await response.text()
            if response.content_type == "application/json":
                return response.status, json.loads(text)
            return response.status, text


def repo_files(kit: KitBackend) -> list[str]:
    """Every file of the node's repository: a rejected push must not change any."""
    return sorted(str(p.relative_to(kit.repo.path)) for p in kit.repo.path.rglob("*") if p.is_file())


async def registered(hub: Hub, name: str) -> Agent:
    """An agent the operator let in: `python -m node agent-key NAME`'s output saved as the agent's
    ~/.agenthub_creds, after which the seed's register snippet, run verbatim, only loads it."""
    agent = hub.agent(name)
    from tests.node.test_localapi_security import agent_key, creds_of

    code, shell, err = await agent_key(hub.kit.home, name)
    assert code == 0, err
    creds = creds_of(shell)
    agent.home.mkdir(parents=True, exist_ok=True)
    (agent.home / ".agenthub_creds").write_text(shell)
    assert await agent.sh(REGISTER) == ""
    assert await agent.key() == creds["HUB_KEY"] and creds["HUB"] == hub.url
    return agent


async def checkout_of(agent: Agent, commit: str) -> None:
    """The seed's fetch into a fresh repository (git init first: unbundle needs one)."""
    await agent.sh("git init -q .")
    await agent.sh(FETCH, hash=commit)


async def edit_and_commit(agent: Agent, line: str) -> str:
    train = agent.checkout / "train.py"
    train.write_text(train.read_text() + line + "\n")
    await agent.sh(COMMIT_CHANGE)
    return (await agent.sh("git rev-parse HEAD")).strip()

