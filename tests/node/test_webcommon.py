"""node/web/common.py: the one guard, body reader, limit and prefix rule, against a real server on
127.0.0.1 (the guard) and as pure functions with property tests (the rest)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from node.errors import NodeError
from node.web.agents import AgentRegistry
from node.web.common import (Access, ApiError, NotFound, guard, host_allowed, match_prefix, origin_allowed,
                             read_json)

TIMEOUT_S = 30.0
TOKEN = "operator-token"


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, routes: dict[str, Any]) -> AsyncIterator[tuple[str, AgentRegistry]]:
    agents = AgentRegistry.load(tmp_path / "agents.json", TOKEN)
    app = web.Application()
    for path, (handler, access) in routes.items():
        app.router.add_route("*", path, guard(agents, handler, access))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}", agents
    finally:
        await runner.cleanup()


async def call(url: str, method: str = "GET", *, key: str | None = TOKEN, **kwargs: Any) -> tuple[int, str, Any]:
    headers = dict(kwargs.pop("headers", {}))
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        async with session.request(method, url, headers=headers, **kwargs) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, resp.content_type, body


async def _bug(request: web.Request, agent: str) -> web.Response:
    raise RuntimeError("a bug")


async def _disk(request: web.Request, agent: str) -> web.Response:
    raise OSError(28, "No space left on device")


async def _node(request: web.Request, agent: str) -> web.Response:
    raise NodeError("the ledger is busy")


async def _refused(request: web.Request, agent: str) -> web.Response:
    raise NotFound("nothing here")


async def _echo(request: web.Request, agent: str) -> web.Response:
    return web.json_response({"agent": agent, "body": await read_json(request)})


async def test_every_failure_is_one_json_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    routes = {"/bug": (_bug, Access.AGENT), "/disk": (_disk, Access.AGENT), "/node": (_node, Access.AGENT),
              "/refused": (_refused, Access.AGENT), "/echo": (_echo, Access.AGENT),
              "/operator": (_echo, Access.OPERATOR), "/open": (_echo, None)}
    async with serve(tmp_path, routes) as (url, agents):
        with caplog.at_level(logging.WARNING, logger="node.web.common"):
            status, kind, body = await call(url + "/bug")
        # the catch-all: JSON, not aiohttp's plain-text 500, and the traceback is in the log
        assert (status, kind) == (500, "application/json") and "internal error" in body["error"]
        assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)
        assert (await call(url + "/disk"))[0] == 503
        assert (await call(url + "/node"))[0] == 503
        assert (await call(url + "/refused"))[:2] == (404, "application/json")

        json_headers = {"Content-Type": "application/json"}
        assert (await call(url + "/echo", "POST", data=b'{"a":1}', headers=json_headers))[2] == {
            "agent": "operator", "body": {"a": 1}}
        # a browser form can send text/plain cross-site without a preflight: only JSON is read
        assert (await call(url + "/echo", "POST", data=b'{"a":1}', headers={"Content-Type": "text/plain"}))[0] == 415
        assert (await call(url + "/echo", "POST", data=b'[1]', headers=json_headers))[0] == 400
        assert (await call(url + "/echo", key=None))[0] == 401
        assert (await call(url + "/echo", key="wrong"))[0] == 401
        agent_key = agents.register("worker-1")
        assert (await call(url + "/operator", "POST", key=agent_key, data=b"{}", headers=json_headers))[0] == 403
        assert (await call(url + "/echo", "POST", key=agent_key, data=b"{}", headers=json_headers))[2]["agent"] == \
            "worker-1"
        assert (await call(url + "/open", "POST", key=None, data=b"{}", headers=json_headers))[0] == 200


async def test_foreign_host_and_origin_are_refused(tmp_path: Path) -> None:
    async with serve(tmp_path, {"/echo": (_echo, None)}) as (url, _agents):
        port = int(url.rsplit(":", 1)[1])
        base = {"Content-Type": "application/json"}
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"LOCALHOST:{port}"):
            assert (await call(url + "/echo", "POST", headers={**base, "Host": host}, data=b"{}"))[0] == 200, host
        for host in ("evil.example", f"evil.example:{port}", f"localhost:{port + 1}", "localhost", "",
                     f"127.0.0.1.evil.example:{port}"):
            status, _, body = await call(url + "/echo", "POST", headers={**base, "Host": host}, data=b"{}")
            assert status == 403 and "Host" in body["error"], host
        for origin in ("http://evil.example", f"http://evil.example:{port}", "null", f"https://localhost:{port}",
                       f"http://localhost:{port + 1}"):
            status, _, body = await call(url + "/echo", "POST", headers={**base, "Origin": origin}, data=b"{}")
            assert status == 403, origin
        own = {**base, "Origin": f"http://localhost:{port}"}  # the node's own pages
        assert (await call(url + "/echo", "POST", headers=own, data=b"{}"))[0] == 200


def test_host_rule() -> None:
    assert host_allowed("localhost:8080", "127.0.0.1", 8080)
    assert host_allowed("[::1]:8080", "::1", 8080)
    assert host_allowed("127.0.0.2:8080", "127.0.0.1", 8080)  # all of 127/8 is loopback
    assert host_allowed("10.0.0.5:8080", "10.0.0.5", 8080)    # the listening address itself
    assert not host_allowed("10.0.0.5:8080", "127.0.0.1", 8080)
    assert not host_allowed("localhost:8080@evil", "127.0.0.1", 8080)
    assert not host_allowed(None, "127.0.0.1", 8080)
    assert origin_allowed(None, "127.0.0.1", 8080)


@given(st.text(max_size=40), st.integers(1, 65535))
def test_no_foreign_name_passes(name: str, port: int) -> None:
    """Whatever a DNS name resolves to, only loopback names and addresses pass."""
    allowed = host_allowed(f"{name}:{port}", "127.0.0.1", port)
    if allowed:
        assert name.strip().lower() == "localhost" or name.strip().startswith("127.")


@given(st.lists(st.binary(min_size=20, max_size=20), min_size=1, max_size=20, unique=True), st.data())
def test_prefix_names_one_or_refuses(candidates: list[bytes], data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(candidates))
    length = data.draw(st.integers(7, 40))
    prefix = target.hex()[:length]
    matching = [c for c in candidates if c.hex().startswith(prefix)]
    if len(matching) == 1:
        assert match_prefix(prefix, candidates, "commit", 40) == target
        assert match_prefix(prefix.upper(), candidates, "commit", 40) == target
    else:
        with pytest.raises(ApiError):
            match_prefix(prefix, candidates, "commit", 40)
    with pytest.raises(ApiError):
        match_prefix(target.hex()[:6], candidates, "commit", 40)  # shorter than git's short hash


async def test_a_client_that_hangs_up_mid_body_is_not_an_error(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A body cut short by the client's own disconnect is the client's fault: no 500, no traceback."""
    async with serve(tmp_path, {"/echo": (_echo, Access.AGENT)}) as (url, _agents):
        host, port = url[len("http://"):].rsplit(":", 1)
        with caplog.at_level(logging.INFO):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"POST /echo HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":".encode())
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            # the server is still answering, and the next request is served normally
            json_type = {"Content-Type": "application/json"}
            status, _, body = await call(url + "/echo", "POST", data=b"{}", headers=json_type)
            assert status == 200 and body["body"] == {}
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
