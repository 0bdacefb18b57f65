"""The local API as an attacker on the same machine sees it (issue 14): the real server of
node/web/server.py on 127.0.0.1 port 0 over a real node backend, and the agent registry's bounds.

Each abuse that issue 14 measured is one assertion here: registering without the operator, acting
with a self-issued key, spending with an agent's key, DNS rebinding (a foreign Host), CSRF (a
foreign Origin, a text/plain form), flooding the registry, and registrations that outlive their use.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.contract import API_FILE
from node.errors import NodeError
from node.web.agents import AGENT_IDLE_EXPIRY_S, OPERATOR, AgentRegistry, BadAgent, RegistryFull
from node.web.server import serve_api
from tests.node.hubkit import backend

TIMEOUT_S = 30.0
CLI_TIMEOUT_S = 120.0  # a Python start on a loaded 2-core machine


def read_api_file(home: Path) -> tuple[str, str]:
    api = json.loads((home / API_FILE).read_text())
    return api["url"], api["token"]


async def agent_key(home: Path, name: str) -> tuple[int, str, str]:
    """The operator's `python -m node agent-key NAME`, as a real process: (exit status, out, err)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "--home", str(home), "agent-key", name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
    return proc.returncode or 0, out.decode(), err.decode()


def creds_of(shell: str) -> dict[str, str]:
    """The `export NAME="value"` lines agent-key prints (what ~/.agenthub_creds holds)."""
    found = dict(re.findall(r'^export (\w+)="([^"]*)"$', shell, re.M))
    assert list(found) == ["HUB", "HUB_KEY", "AGENT_ID"], shell
    return found
JSON = {"Content-Type": "application/json"}
# every route that spends, publishes or submits, with a body it would accept
ACTING_ROUTES = [
    ("POST", "/api/register", {"id": "intruder"}),
    ("POST", "/api/git/push", None),
    ("POST", "/api/channels", {"name": "spam"}),
    ("POST", "/api/channels/results/posts", {"content": "spam"}),
    ("POST", "/api/node/submit", {"train_py": "print(1)\n"}),
    ("POST", "/api/node/hypotheses", {"text": "spam"}),
    ("POST", "/api/node/insights", {"text": "spam"}),
    ("POST", "/api/node/jobs", {"train_py": "print(1)\n", "max_gpu_s": 10, "price_ucr_per_gpu_s": 1}),
    ("POST", "/api/node/jobs/" + "ab" * 32 + "/cancel", {}),
]
SPENDING = {"/api/register", "/api/node/jobs", "/api/node/jobs/" + "ab" * 32 + "/cancel"}


@contextlib.asynccontextmanager
async def node_api(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    async with backend(tmp_path) as kit, serve_api("127.0.0.1:0", kit.home, kit, "127.0.0.1:1") as url:
        yield url, kit.home


async def call(url: str, method: str, path: str, *, key: str | None = None, body: Any = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    sent = {**JSON, **(headers or {})}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        async with session.request(method, url + path, data=data, headers=sent) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if resp.content_type == "application/json" else text


async def test_only_the_operator_and_its_agents_act_for_the_node(tmp_path: Path) -> None:
    async with node_api(tmp_path) as (url, home):
        assert (home / API_FILE).stat().st_mode & 0o777 == 0o600
        hub, token = read_api_file(home)
        assert hub == url
        # nobody without a key the node issued: 100% of acting routes refused
        for method, path, body in ACTING_ROUTES:
            for key in (None, "ash_self-issued", "", token + "x"):
                status, answer = await call(url, method, path, key=key, body=body)
                assert status == 401 and answer["error"], (path, key, status)
        # an agent the operator let in acts (publishes, submits) but neither spends nor lets others in
        code, out, err = await agent_key(home, "claude-1")
        assert code == 0, err
        creds = creds_of(out)
        assert creds["HUB"] == url and creds["AGENT_ID"] == "claude-1"
        for method, path, body in ACTING_ROUTES:
            status, answer = await call(url, method, path, key=creds["HUB_KEY"], body=body)
            assert (status == 403) == (path in SPENDING), (path, status, answer)
        status, answer = await call(url, "POST", "/api/node/hypotheses", key=creds["HUB_KEY"],
                                    body={"text": "try warmup"})
        assert status == 201 and answer["text"] == "claude-1: try warmup"
        # the operator does all of it (the market is absent here: 503, not a refusal)
        assert (await call(url, "POST", "/api/node/jobs", key=token, body=ACTING_ROUTES[7][2]))[0] == 503
        code, _, err = await agent_key(home, "claude-1")  # a name is one agent's
        assert code == 2 and "taken" in err and "Traceback" not in err


async def test_foreign_hosts_and_origins_are_refused_everywhere(tmp_path: Path) -> None:
    async with node_api(tmp_path) as (url, home):
        _, token = read_api_file(home)
        port = url.rsplit(":", 1)[1]
        reads = ["/", "/dashboard/state.json", "/metrics", "/api/git/leaves", "/api/node/status"]
        for path in reads:
            assert (await call(url, "GET", path, key=token))[0] == 200, path
            # DNS rebinding: evil.example resolves to 127.0.0.1, the browser sends its own name
            for host in ("evil.example", f"evil.example:{port}", f"localhost:{int(port) + 1}"):
                status, _ = await call(url, "GET", path, key=token, headers={"Host": host})
                assert status == 403, (path, host)
            assert (await call(url, "GET", path, key=token, headers={"Host": f"localhost:{port}"}))[0] == 200
        # CSRF: a page elsewhere posting to the node, as JSON or as a preflight-free text/plain form
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                        {"Origin": "http://evil.example", "Content-Type": "text/plain"}):
            status, _ = await call(url, "POST", "/api/register", key=token, body={"id": "csrf"}, headers=headers)
            assert status == 403, headers
        assert (await call(url, "POST", "/api/register", key=token, body={"id": "form"},
                           headers={"Content-Type": "text/plain"}))[0] == 415
        status, _ = await call(url, "POST", "/api/register", key=token, body={"id": "mine"},
                               headers={"Origin": f"http://127.0.0.1:{port}"})
        assert status == 201  # the node's own dashboard origin


async def test_registration_flood_is_bounded(tmp_path: Path) -> None:
    async with node_api(tmp_path) as (url, home):
        _, token = read_api_file(home)
        answers = [await call(url, "POST", "/api/register", key=token, body={"id": f"a{i}"}) for i in range(12)]
        assert [s for s, _ in answers] == [201] * 10 + [429] * 2


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000_000

    def __call__(self) -> int:
        return self.ms


def test_registry_quotas_and_expiry(tmp_path: Path) -> None:
    path, clock = tmp_path / "agents.json", Clock()
    agents = AgentRegistry.load(path, "op", clock_ms=clock, max_agents=3, max_per_min=2)
    a, b = agents.register("a"), agents.register("b")
    with pytest.raises(RegistryFull):
        agents.register("c")  # a third within the minute
    clock.ms += 60_000
    agents.register("c")
    with pytest.raises(RegistryFull):
        agents.register("d")  # the registry is full
    with pytest.raises(BadAgent):
        agents.register(OPERATOR)

    # "a" is used now and then; "b" and "c" never again
    expiry_ms = AGENT_IDLE_EXPIRY_S * 1000
    clock.ms += expiry_ms // 2
    assert agents.authenticate(f"Bearer {a}") == "a"
    clock.ms += expiry_ms // 2 + 1
    again = AgentRegistry.load(path, "op", clock_ms=clock)  # a restart after "b" and "c" expired
    assert again.names() == ["a"] and again.authenticate(f"Bearer {b}") is None
    assert again.authenticate(f"Bearer {a}") == "a"
    # an agent that expires while the node runs stops working, and the file forgets it
    clock.ms += expiry_ms + 1
    assert again.authenticate(f"Bearer {a}") is None and again.names() == []
    assert AgentRegistry.load(path, "new-op", clock_ms=clock).names() == []
    assert path.stat().st_mode & 0o077 == 0 and a not in path.read_text()


def test_registrations_from_before_the_operator_token_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({f"squatter{i}": "ab" * 32 for i in range(1100)}))
    assert AgentRegistry.load(path, "op").names() == []
    path.write_text(json.dumps({"version": 2, "agents": {"x": {"digest": "short"}}}))
    with pytest.raises(NodeError):
        AgentRegistry.load(path, "op")


async def test_agent_key_without_a_running_node(tmp_path: Path) -> None:
    code, _, err = await agent_key(tmp_path, "claude-1")
    assert code == 2 and "no node is running" in err and "Traceback" not in err
    (tmp_path / API_FILE).write_text('{"url": "http://127.0.0.1:9", "token": "t"}')
    code, _, err = await agent_key(tmp_path, "claude-1")
    assert code == 2 and "no node is running" in err and "Traceback" not in err


async def test_a_planted_temporary_file_does_not_leak_the_token(tmp_path: Path) -> None:
    """A world-readable api.tmp left in the home (by a crash, or planted) is replaced, not reused."""
    async with backend(tmp_path) as kit:
        planted = kit.home / "api.tmp"
        planted.write_text("")
        planted.chmod(0o644)
        async with serve_api("127.0.0.1:0", kit.home, kit, "127.0.0.1:1"):
            assert (kit.home / API_FILE).stat().st_mode & 0o777 == 0o600
            assert not planted.exists()


async def test_a_strangers_push_is_refused_before_its_body(tmp_path: Path) -> None:
    """`Expect: 100-continue` (curl's way with a large bundle): no key, no `100 Continue`."""
    async with node_api(tmp_path) as (url, _home):
        host, port = url[len("http://"):].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(f"POST /api/git/push HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 500000\r\n"
                         "Expect: 100-continue\r\n\r\n".encode())
            await writer.drain()
            async with asyncio.timeout(TIMEOUT_S):
                status_line = await reader.readline()
            assert status_line.startswith(b"HTTP/1.1 401"), status_line
        finally:
            writer.close()
