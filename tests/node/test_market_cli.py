"""`python -m node job ...` against a real local API over a real market node on loopback.

The CLI runs as a real process (`python -m node`, --home before or after `job`) while the test's
loop serves the routes and runs the market. The executor here is a lying runner (no trainer): this file is about the
CLI and the routes; test_market_swarm.py runs the real trainer.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ledger.bodies import Body
from ledger.entry import Entry
from tests.ledger import factory
from tests.node.marketkit import MarketNode, earned_credits, lying_runner, make_spec, market_node

from node.web.agents import AgentRegistry
from node.research.history import History
from node.market.loop import MarketConfig
from node.web.nodeapi import add_routes

TOKEN = "operator-test-token"
WAIT_S = 30.0
USER, EXEC, OTHER = factory.identity(810), factory.identity(811), factory.identity(812)
CREATOR, VERIFIER = factory.identity(800), factory.identity(801)


@dataclass
class NodeBackend:
    """The Backend the local API reads (node/web/backend.py), over a market node of marketkit."""

    node: MarketNode
    history: History = field(default_factory=History)
    platform_classes: list[str] = field(default_factory=lambda: ["cpu-tiny"])

    def __post_init__(self) -> None:
        self.home, self.ledger, self.repo, self.market = self.node.home, self.node.ledger, self.node.repo, self.node.market

    @property
    def node_id(self) -> str:
        return self.node.identity.node_id

    async def publish(self, body: Body) -> Entry:
        return await self.market.publish(self.node.identity, body)

    async def submit(self, commit: bytes, agent: str) -> Any:
        raise NotImplementedError("no research here")

    def queued(self) -> list[Any]:
        return []

    def snapshot(self) -> dict[str, Any]:
        return {"workers": [], "peers": []}


@contextlib.asynccontextmanager
async def api(tmp_path: Path) -> AsyncIterator[tuple[MarketNode, list[MarketNode]]]:
    spec = await make_spec(tmp_path, CREATOR, VERIFIER)
    seed = await earned_credits(spec, VERIFIER, [USER, OTHER])
    pays = MarketConfig(offer=False, spot_check_rate=0.0)
    sells = MarketConfig(offer=True, price_ucr_per_gpu_s=50, spot_check_rate=0.0)
    async with market_node(tmp_path, "user", USER, spec, seed, pays) as user, \
            market_node(tmp_path, "exec", EXEC, spec, seed, sells, bootstrap=(user.peer.address,),
                        runner=lying_runner(1.7)) as execnode, \
            market_node(tmp_path, "other", OTHER, spec, seed, pays, bootstrap=(user.peer.address,)) as other:
        nodes = [user, execnode, other]
        for n in nodes:
            await n.peer.wait_until(lambda n=n: len(n.peer.connected()) >= 2, WAIT_S)  # type: ignore[misc]
        app = web.Application()
        add_routes(app, NodeBackend(user), AgentRegistry.load(tmp_path / "agents.json", TOKEN))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        (user.home / "api.json").write_text(json.dumps({"url": f"http://{host}:{port}", "token": TOKEN}))
        try:
            yield user, nodes
        finally:
            await runner.cleanup()


_PLACES = itertools.cycle(("before", "after", "equals"))  # where `job` puts --home: every form in turn


async def job(user: MarketNode, *args: str) -> tuple[int, str, str]:
    """`python -m node job ...` through the real entry point, --home before or after the command."""
    home = str(user.home)
    place = next(_PLACES)
    argv = {"before": ["--home", home, "job", *args], "after": ["job", *args, "--home", home],
            "equals": [f"--home={home}", "job", *args]}[place]
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "node", *argv], capture_output=True,
                                   text=True, timeout=WAIT_S)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


@pytest.mark.slow
async def test_submit_list_show_cancel_and_bad_requests(tmp_path: Path) -> None:
    train_py = tmp_path / "train.py"
    train_py.write_text((Path(__file__).resolve().parents[2] / "trainer" / "train.py").read_text() + "\n# mine\n")
    async with api(tmp_path) as (user, nodes):
        code, out, err = await job(user, "submit", str(train_py), "--max-gpu-s", "10", "--price", "100",
                                   "--steps", "5", "--json")
        assert code == 0, err
        job_id = json.loads(out)["job"]
        for n in nodes:
            await n.peer.wait_until(lambda n=n: n.ledger.state.jobs.get(bytes.fromhex(job_id)) is not None and  # type: ignore[misc]
                                    n.ledger.state.jobs[bytes.fromhex(job_id)].status == "settled", WAIT_S)
        code, out, _ = await job(user, "list", "--json")
        (row,) = json.loads(out)["jobs"]  # before the second job
        assert row["status"] == "settled" and row["mine"] and row["paid_ucr"] == 50 and row["gpu_s"] == 1.0
        code, out, _ = await job(user, "show", job_id[:10])
        assert code == 0 and "settled" in out and "[untrusted: from node" in out and "    | trust me" in out
        # the executor's worker is free again: it takes the next job too
        code, out, err = await job(user, "submit", str(train_py), "--max-gpu-s", "10", "--price", "100", "--json")
        assert code == 0, err
        again = bytes.fromhex(json.loads(out)["job"])
        await user.peer.wait_until(lambda: user.ledger.state.jobs[again].status == "settled", WAIT_S)
        # cancel: a price no executor takes gets no offer, so the job stays open until cancelled
        code, out, err = await job(user, "submit", str(train_py), "--max-gpu-s", "10", "--price", "1", "--json")
        assert code == 0, err
        open_id = json.loads(out)["job"]
        code, out, err = await job(user, "cancel", open_id, "--json")
        assert code == 0 and json.loads(out)["status"] == "cancelled", err
        code, _, err = await job(user, "cancel", open_id)
        assert code == 2 and "only an open job can be cancelled" in err
        for args, says in [(("--max-gpu-s", "10", "--price", "-1"), "price must be positive"),
                           (("--max-gpu-s", "80000", "--price", "100000"), "more than the balance of"),
                           (("--max-gpu-s", "10", "--price", "5", "--steps", "x"), "not a whole number")]:
            code, out, err = await job(user, "submit", str(train_py), *args)
            assert code == 2 and says in err and err.count("\n") == 1, (args, err)
        code, _, err = await job(user, "show", "zz")
        assert code == 2 and "not a job id" in err


@pytest.mark.parametrize("body, says", [
    ({"job_type": "mine-coins", "max_gpu_s": 10, "price_ucr_per_gpu_s": 10}, "unknown job type 'mine-coins'"),
    ({"max_gpu_s": 10, "price_ucr_per_gpu_s": 10, "args": ["--data", "/etc"]}, "is not allowed for a train job"),
    ({"max_gpu_s": "ten", "price_ucr_per_gpu_s": 10}, "max_gpu_s must be a whole number"),
])
async def test_the_api_refuses_bad_job_requests_in_one_line(tmp_path: Path, body: dict[str, Any], says: str) -> None:
    import aiohttp
    async with api(tmp_path) as (user, _):
        endpoint = json.loads((user.home / "api.json").read_text())
        request = {"commit": user.ledger.spec.spec.baseline_commit.hex(), **body}
        async with aiohttp.ClientSession() as http, http.post(endpoint["url"] + "/api/node/jobs", json=request,
                                                              headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            data = await resp.json()
        assert resp.status == 400 and says in data["error"] and "\n" not in data["error"]
