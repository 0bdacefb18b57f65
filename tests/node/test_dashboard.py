"""The dashboard over hubkit's real Backend, served on 127.0.0.1 port 0 and read with aiohttp.

The numbers on the page and in its JSON are compared with the ledger's own fold; a new entry
must reach a live stream; untrusted text must come back escaped; /metrics must parse.
"""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from ledger.bodies import Post, Verify
from ledger.keys import Identity
from swarm import gitrepo
from tests.ledger.factory import identity
from tests.node.hubkit import CLASS, KitBackend, backend

from node.web import charts
from node.web import dashboard
from node.web import views as dashview
from node.research.verifier import record_mint, verification_mint

TIMEOUT_S = 10.0
SCRIPT = "<script>alert('x')</script>"
SCRIPT_ESCAPED = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"


@dataclass
class Dash:
    kit: KitBackend
    url: str
    app: web.Application
    other: Identity
    better_claim: bytes
    rival_claim: bytes
    better: bytes


async def verify(kit: KitBackend, claim_id: bytes, commit: bytes, value: float) -> None:
    """A trusted verifier's re-run of a claim, its fee, and the record mint where there is one."""
    entry = await kit.publish_as(kit.verifier, Verify(claim=claim_id, commit=commit, platform_class=CLASS,
                                                     status="ok", val_bpb=value, num_steps=10, seed=0,
                                                     training_s=1.0))
    fee = verification_mint(kit.ledger.state, kit.verifier.public_key, entry.id)
    if fee is not None:
        await kit.publish_as(kit.verifier, fee)
    mint, _ = record_mint(kit.ledger.state, kit.verifier.public_key, claim_id)
    if mint is not None:
        await kit.publish_as(kit.verifier, mint)


async def seed(kit: KitBackend) -> tuple[Identity, bytes, bytes, bytes]:
    """Baseline (verified), a verified record, a rival's unverified claim with markup, a crash, a post."""
    baseline = kit.baseline
    source = (await gitrepo.read_file(kit.repo, baseline, "train.py")).decode()
    (base_claim,) = kit.history.by_commit[baseline]
    await verify(kit, base_claim, baseline, 1.5)
    better = await kit.commit(baseline, source.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05").encode(), "lr")
    record = await kit.claim(better, baseline, 1.2, message="raise the matrix lr")
    await verify(kit, record.id, better, 1.205)  # within the class noise (0.01) of the claim
    other = identity(502)
    rival = await kit.commit(better, source.replace("DEPTH = 8", "DEPTH = 9").encode(), "deeper")
    rival_claim = await kit.claim(rival, better, 1.1, who=other, message=f"deeper {SCRIPT}")
    await verify(kit, rival_claim.id, rival, 1.3)                   # off by more than the noise: refuted
    crash = await kit.commit(better, source.replace("HEAD_DIM = 128", "HEAD_DIM = 7").encode(), "odd heads")
    await kit.claim(crash, better, None, status="crash", message="odd head dim")
    await kit.publish_as(other, Post(channel="general", text=f"hello {SCRIPT}", reply_to=None))
    return other, record.id, rival_claim.id, better


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def dash(tmp_path: Path) -> AsyncIterator[Dash]:
    async with backend(tmp_path) as kit:
        other, better_claim, rival_claim, better = await seed(kit)
        app = web.Application()
        dashboard.add_routes(app, kit)
        runner, url = await serve(app)
        try:
            yield Dash(kit, url, app, other, better_claim, rival_claim, better)
        finally:
            await runner.cleanup()


async def get(url: str) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        async with session.get(url) as response:
            return response.status, dict(response.headers), await response.text()


def expected_stats(kit: KitBackend) -> dict[str, int]:
    state = kit.ledger.state
    ok = sum(1 for c in state.claims.values() if c.claimed is not None)
    return {"experiments": len(state.claims), "completed": ok, "failed": len(state.claims) - ok,
            "verified": len(state.verified), "refuted": len(state.refuted), "records": len(state.records)}


# -- the numbers


async def test_state_json_matches_the_ledger(dash: Dash) -> None:
    status, _, text = await get(f"{dash.url}/dashboard/state.json")
    assert status == 200
    summary = json.loads(text)["summary"]
    state = dash.kit.ledger.state
    stats = summary["stats"]
    for key, value in expected_stats(dash.kit).items():
        assert stats[key] == value, key
    assert stats == {**stats, "experiments": 4, "completed": 3, "failed": 1, "verified": 2, "refuted": 1, "records": 2}
    assert stats["entries"] == await dash.kit.ledger.count()
    (best_row,) = summary["tables"]["best"]["rows"]
    assert best_row[0]["text"] == CLASS
    assert best_row[1]["text"] == f"{state.best[CLASS]:.4f}" == "1.2050"
    assert best_row[2]["text"] == dash.better.hex()[:10]
    assert best_row[2]["href"] == f"/experiment/{dash.better_claim.hex()}"
    assert best_row[3]["text"] == dash.kit.me.node_id[:12]
    sota = summary["tables"]["sota"]["rows"]
    assert [r[2]["text"] for r in sota] == ["1.2050", "1.5000"]  # newest first
    assert sota[0][3]["text"] == "-0.2950"                        # delta to the record before
    assert sota[0][6]["text"] == "1"                              # verifications in the quorum
    mine = state.balances.get(dash.kit.me.public_key, 0)
    assert mine > 0 and summary["credits"]["balance_ucr"] == mine
    assert summary["credits"]["minted_ucr"] == state.total_minted_ucr
    earners = summary["tables"]["earners"]["rows"]
    assert [r[0]["text"] for r in earners][0] == dash.kit.me.node_id[:12]  # two records beat one verifier's fees


async def test_index_page_shows_the_numbers_and_escapes_untrusted_text(dash: Dash) -> None:
    status, headers, html = await get(f"{dash.url}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    for key, value in expected_stats(dash.kit).items():
        assert f'id="s-{key}">{value}</dd>' in html, key
    assert "1.2050" in html
    assert SCRIPT not in html and "<script>alert" not in html
    assert html.count("<script") == 1 and '<script src="/dashboard/static/dashboard.js" defer>' in html
    assert f"hello {SCRIPT_ESCAPED}" in html                       # the post, as text
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_experiment_page(dash: Dash) -> None:
    status, headers, html = await get(f"{dash.url}/experiment/{dash.rival_claim.hex()}")
    assert status == 200 and "unsafe-inline" not in headers["Content-Security-Policy"]
    assert f"deeper {SCRIPT_ESCAPED}" in html and SCRIPT not in html
    assert "+DEPTH = 9" in html and "-DEPTH = 8" in html            # the diff against its parent
    assert "1.1000" in html and dash.other.node_id[:12] in html
    assert "refuted: verifiers measured 1.3000" in html
    status, _, html = await get(f"{dash.url}/experiment/{dash.better_claim.hex()}")
    assert "1.2050" in html and "trusted" in html                    # the verification row
    status, headers, svg = await get(f"{dash.url}/experiment/{dash.better_claim.hex()}/loss.svg")
    assert status == 200 and headers["Content-Type"].startswith("image/svg+xml") and "<path" in svg
    assert (await get(f"{dash.url}/experiment/{'ab' * 32}"))[0] == 404
    assert (await get(f"{dash.url}/experiment/not-hex"))[0] == 404


async def test_charts_are_served_per_class(dash: Dash) -> None:
    for kind in ("progress", "residuals"):
        status, headers, svg = await get(f"{dash.url}/dashboard/chart/{kind}/{CLASS}.svg")
        assert status == 200 and svg.startswith("<svg") and headers["Content-Type"].startswith("image/svg+xml")
    _, _, residual = await get(f"{dash.url}/dashboard/chart/residuals/{CLASS}.svg")
    assert "n 3 · median 0.0050" in residual                        # 1.5 - 1.5, 1.205 - 1.2, 1.3 - 1.1
    assert (await get(f"{dash.url}/dashboard/chart/progress/no-such-class.svg"))[0] == 404


async def test_static_files_are_served(dash: Dash) -> None:
    status, headers, js = await get(f"{dash.url}/dashboard/static/dashboard.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert "innerHTML" not in js and "eval(" not in js
    status, headers, _ = await get(f"{dash.url}/dashboard/static/dashboard.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")


# -- live


async def read_events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The `update` messages of an SSE stream, decoded."""
    event, data = "", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            if event == "update":
                yield json.loads(data)
            event, data = "", ""


async def test_a_new_entry_reaches_a_live_stream(dash: Dash) -> None:
    row = dash.app[dashboard.HUB_KEY].row
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        async with session.get(f"{dash.url}/dashboard/events?after={row}") as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            events = read_events(response)
            first = await anext(events)
            assert first["items"] == [] and first["summary"]["stats"]["experiments"] == 4
            await dash.kit.publish_as(dash.other, Post(channel="general", text="live one", reply_to=None))
            async with asyncio.timeout(5.0):
                while True:
                    message = await anext(events)
                    if any(i["kind"] == "post" and "live one" in i["text"] for i in message["items"]):
                        break


async def test_a_reconnect_gets_what_it_missed(dash: Dash) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        async with session.get(f"{dash.url}/dashboard/events", headers={"Last-Event-ID": "2"}) as response:
            first = await anext(read_events(response))
    rows = [i["row"] for i in first["items"]]
    assert rows and min(rows) == 3 and not first["reset"]
    kinds = {i["kind"] for i in first["items"]}
    assert {"claim", "verify", "mint", "post", "record"} <= kinds


async def test_a_client_that_falls_behind_is_dropped(dash: Dash) -> None:
    hub = dash.app[dashboard.HUB_KEY]
    client = hub.connect(None, await hub.summary())
    for _ in range(dashboard.CLIENT_QUEUE_MAX + 1):
        hub._broadcast(b"data: {}\n\n")
    assert client not in hub.clients and hub.counters["clients_dropped_total"] == 1
    assert client.queue.get_nowait() is None                        # its stream ends at once


async def test_shutdown_ends_open_streams(tmp_path: Path) -> None:
    """Stopping the server ends every live stream cleanly and at once: the runner's shutdown does
    not wait out its 60 s grace on handlers that would stream forever."""
    async with backend(tmp_path) as kit:
        app = web.Application()
        dashboard.add_routes(app, kit)
        runner, url = await serve(app)
        hub = app[dashboard.HUB_KEY]
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
                async with session.get(f"{url}/dashboard/events") as one, session.get(f"{url}/dashboard/events") as two:
                    streams = [read_events(one), read_events(two)]
                    for stream in streams:
                        await anext(stream)
                    assert len(hub.clients) == 2
                    async with asyncio.timeout(10.0):  # far below the runner's 60 s shutdown_timeout
                        await runner.cleanup()
                    assert hub.clients == set()
                    for stream, response in zip(streams, (one, two)):
                        async with asyncio.timeout(5.0):
                            assert [event async for event in stream] == []  # the stream's clean end, no error
                        assert response.content.at_eof()
        finally:
            await runner.cleanup()


# -- /metrics

_SAMPLE = re.compile(r'^(autoswarm_[a-z_]+)(\{platform_class="(?:[^"\\]|\\.)*"\})? (-?[0-9.e+]+)$')


def parse_metrics(text: str) -> dict[str, float]:
    """A strict reader of the text format: every line is HELP, TYPE or one sample."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert kind in ("gauge", "counter"), line
            typed.add(name)
            continue
        found = _SAMPLE.match(line)
        assert found, f"not a sample line: {line!r}"
        assert found.group(1) in typed, f"sample before its TYPE: {line!r}"
        samples[found.group(1) + (found.group(2) or "")] = float(found.group(3))
    return samples


async def test_metrics_parse_and_match_the_ledger(dash: Dash) -> None:
    status, headers, text = await get(f"{dash.url}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse_metrics(text)
    for key, value in expected_stats(dash.kit).items():
        assert samples[f"autoswarm_{key}"] == value, key
    assert samples[f'autoswarm_best_val_bpb{{platform_class="{CLASS}"}}'] == pytest.approx(1.205)
    assert samples["autoswarm_minted_ucr"] == dash.kit.ledger.state.total_minted_ucr
    assert samples["autoswarm_entries"] == await dash.kit.ledger.count()
    assert "autoswarm_dashboard_clients_dropped_total" in samples


# -- the pure parts


def test_charts_escape_their_text() -> None:
    svg = charts.progress_svg(f"progress {SCRIPT}", [(0, 1.5), (60_000, 1.2)], [(0, 1.5), (60_000, 1.2)])
    assert SCRIPT not in svg and "&lt;script&gt;" in svg
    svg = charts.residual_svg(f"r {SCRIPT}", [0.01, -0.02, 0.0])
    assert SCRIPT not in svg and "median 0.0000" in svg
    assert "no verifications yet" in charts.residual_svg("r", [])
    assert "no finished experiments yet" in charts.progress_svg("p", [], [])


def test_progress_draws_every_point_up_to_its_bound() -> None:
    points = [(i * 1000, 2.0 - i / 1e5) for i in range(charts.MAX_POINTS + 10)]
    svg = charts.progress_svg("p", points, [(0, 2.0)])
    assert svg.count("h0") == charts.MAX_POINTS
    assert f"{len(points)} experiments (newest {charts.MAX_POINTS} drawn)" in svg


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=200), st.floats(0, 1), st.floats(0, 1))
def test_quantiles_stay_in_range_and_order(values: list[float], q1: float, q2: float) -> None:
    ordered = sorted(values)
    lo, hi = sorted((q1, q2))
    a, b = charts.quantile(ordered, lo), charts.quantile(ordered, hi)
    assert ordered[0] - 1e-9 <= a <= b + 1e-9 and b <= ordered[-1] + 1e-9


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=200), st.integers(1, 60))
def test_histogram_counts_every_value(values: list[float], bins: int) -> None:
    _, _, counts = charts.histogram(values, bins)
    assert len(counts) == bins and sum(counts) == len(values)


@given(st.text(max_size=400))
def test_clip_is_one_bounded_line(text: str) -> None:
    line = dashview.clip(text, 50)
    assert len(line) <= 50 and "\n" not in line and "\r" not in line


async def test_workers_and_peers_come_from_the_live_snapshot(tmp_path: Path) -> None:
    # the shape node/live.py's LiveBackend.snapshot() gives
    snapshot = {
        "workers": [{"worker": "gpu0", "busy": True, "running": "MATRIX_LR 0.04 -> 0.05", "seconds_left": 12.5},
                    {"worker": "gpu1", "busy": True, "running": "verify 0a1b2c3d", "seconds_left": 40.0},
                    {"worker": "gpu2", "busy": False, "running": None, "seconds_left": None}],
        "peers": [{"node": "asabc", "received": 10, "rejected": 1, "note": SCRIPT},
                  {"node": "asdef", "received": 3, "sent": 7}],
    }
    async with backend(tmp_path) as kit:
        inputs = dashview.Inputs(kit.ledger.state, kit.history.claims, snapshot, 2, kit.me.public_key,
                                 await kit.ledger.count(), kit.clock_ms)
        stats = dashview.stats(inputs)
        assert (stats["running"], stats["workers_busy"], stats["workers"], stats["peers"], stats["queued"]) == (
            1, 2, 3, 2, 2)
        assert stats["per_hour"] == 1                                   # the baseline claim, one clock tick ago
        peers = dashview.summary(inputs)["tables"]["peers"]
        assert peers["columns"] == ["node", "received", "rejected", "note", "sent"]
        assert peers["rows"][1][4]["text"] == "7" and peers["rows"][0][3]["text"] == SCRIPT  # text, escaped later
        assert peers["rows"][1][2]["text"] == ""
        assert dashview.dicts_table("not a list", 10) == {"columns": [], "rows": []}


async def test_a_hub_far_behind_skips_to_recent_entries(dash: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = dash.app[dashboard.HUB_KEY]
    monkeypatch.setattr(dashboard, "MAX_ENTRIES_PER_POLL", 5)
    monkeypatch.setattr(dashboard, "BACKLOG_ROWS", 3)
    for i in range(12):
        await dash.kit.publish_as(dash.other, Post(channel="general", text=f"bulk {i}", reply_to=None))
    await hub.poll()
    count = await dash.kit.ledger.count()
    assert hub.row == count
    assert [i["text"].split(": ")[-1] for i in list(hub.feed)[-3:]] == ["bulk 9", "bulk 10", "bulk 11"]
    assert [i["row"] for i in list(hub.feed)[-3:]] == [count - 2, count - 1, count]


async def test_too_many_live_streams_get_503(dash: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard, "MAX_CLIENTS", 1)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        async with session.get(f"{dash.url}/dashboard/events") as first:
            await anext(read_events(first))
            async with session.get(f"{dash.url}/dashboard/events") as second:
                assert second.status == 503 and second.headers["Retry-After"] == "5"


async def test_peer_counters_are_shown_as_text(dash: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = {"workers": [], "peers": [{"node": f"evil{SCRIPT}", "received": 5}]}
    monkeypatch.setattr(dash.kit, "snapshot", lambda: snapshot)
    _, _, html = await get(f"{dash.url}/")
    assert f"evil{SCRIPT_ESCAPED}" in html and SCRIPT not in html
    assert 'id="s-peers">1</dd>' in html
