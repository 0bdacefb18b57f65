"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Against hubkit's real Backend with a seeded ledger on 127.0.0.1: the page loads with no console
errors, its numbers match the ledger, a newly published entry shows up within a second (waited
for on the DOM, never slept for), and markup in a post or a commit message stays text.

Screenshots of each view at desktop and phone sizes are taken every run (into the test's folder);
with DASHBOARD_SCREENSHOTS=DIR they are also written to DIR (docs/screenshots for the docs).

Chromium is not optional: without it this test fails and says how to install it
(scripts/setup.sh does, as root, as in CI). Playwright never downloads a browser here.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ledger.bodies import Post
from swarm import gitrepo
from tests.ledger.factory import identity
from tests.node.hubkit import CLASS, KitBackend, backend
from tests.node.test_dashboard import SCRIPT, seed, serve, verify

from node.web import dashboard

try:  # a missing package fails the browser fixture with a clear message, not the whole collection
    from playwright.async_api import expect
except ImportError:
    expect = None

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
LIVE_WITHIN_MS = 1_000      # a new entry must be on the page within this
STATS_WITHIN_MS = 3_000     # the summary is throttled (dashboard.SUMMARY_INTERVAL_S)
LOAD_TIMEOUT_MS = 10_000
EXPERIMENTS = 48            # seeded on top of test_dashboard's seed, 5 minutes apart
STEP_MS = 5 * 60_000


def live_snapshot() -> dict[str, Any]:
    """What node/live.py's LiveBackend.snapshot() gives for a node with two workers and two peers."""
    peer = {"addr": "127.0.0.1:7001", "inbound": False, "connected_ms": 1_700_000_000_000, "entries_in": 812,
            "entries_out": 95, "duplicates_in": 40, "pending_in": 0, "frames_in": 300, "frames_out": 120,
            "bytes_in": 912_345, "bytes_out": 101_002, "dropped_out": 0, "rtt_ms": 3.2, "score": 1.0, "rejects": {}}
    return {
        "workers": [{"worker": "cpu0", "platform_class": CLASS, "busy": True, "running": "MATRIX_LR 0.04 -> 0.06",
                     "seconds_left": 212.0},
                    {"worker": "cpu1", "platform_class": CLASS, "busy": True, "running": "verify 0a7449f0",
                     "seconds_left": 31.5}],
        "peers": [{**peer, "node": identity(530 + i).node_id, "rtt_ms": 3.2 + i} for i in range(2)],
    }


@dataclass
class Site:
    kit: KitBackend
    url: str
    shots: Path


async def seed_history(kit: KitBackend) -> None:
    """A few hours of research: a slow descent with noise, every third claim verified."""
    source = (await gitrepo.read_file(kit.repo, kit.baseline, "train.py")).decode()
    others = [identity(510 + i) for i in range(3)]
    parent = kit.baseline
    for i in range(EXPERIMENTS):
        commit = await kit.commit(parent, source.replace("MATRIX_LR = 0.04", f"MATRIX_LR = 0.{40 + i:03d}").encode(),
                                  f"matrix lr step {i}")
        wobble = ((i * 37) % 11 - 5) / 100
        value = 1.19 - 0.004 * i + wobble
        crashed = i % 9 == 4
        record = await kit.claim(commit, parent, None if crashed else value, who=others[i % 3],
                                 status="crash" if crashed else "ok", message=f"MATRIX_LR 0.{40 + i:03d}")
        if not crashed and i % 3 == 0:
            await verify(kit, record.id, commit, value + ((i * 13) % 7 - 3) / 400)
        kit.clock_ms += STEP_MS


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with backend(tmp_path) as kit:
        kit.clock_ms = int(time.time() * 1000) - (EXPERIMENTS + 4) * STEP_MS  # hours of history up to now
        await seed(kit)
        await seed_history(kit)
        kit.snapshot = live_snapshot  # type: ignore[method-assign]  # the kit has no workers or peers
        app = web.Application()
        dashboard.add_routes(app, kit)
        runner, url = await serve(app)
        try:
            yield Site(kit, url, tmp_path / "screenshots")
        finally:
            await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh as root (it installs Debian's chromium, as CI does)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: run scripts/setup.sh (pip install -e '.[test]')")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


class Watch:
    """Console errors, page errors and dialogs of one page: any of them fails the test."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("dialog", lambda d: self.problems.append(f"dialog: {d.message}"))


async def shoot(page: Any, site: Site, name: str) -> None:
    site.shots.mkdir(exist_ok=True)
    path = site.shots / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("DASHBOARD_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


async def loaded(page: Any) -> None:
    """Waits for the load event, then checks every chart image decoded."""
    await page.wait_for_load_state("load", timeout=LOAD_TIMEOUT_MS)
    broken = await page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length")
    assert broken == 0


async def open_live(browser: Any, site: Site, **context: Any) -> tuple[Any, Any, Watch]:
    ctx = await browser.new_context(**context)
    page = await ctx.new_page()
    watch = Watch(page)
    await page.goto(site.url + "/", timeout=LOAD_TIMEOUT_MS)
    await expect(page.locator("#live")).to_have_text("live", timeout=LOAD_TIMEOUT_MS)
    return ctx, page, watch


async def test_page_numbers_match_the_ledger_and_markup_stays_text(browser: Any, site: Site) -> None:
    ctx, page, watch = await open_live(browser, site, viewport=DESKTOP)
    state = site.kit.ledger.state
    ok = sum(1 for c in state.claims.values() if c.claimed is not None)
    expected = {"experiments": len(state.claims), "completed": ok, "failed": len(state.claims) - ok,
                "verified": len(state.verified), "refuted": len(state.refuted), "records": len(state.records),
                "entries": await site.kit.ledger.count(), "running": 1, "workers_busy": 2, "peers": 2}
    for key, value in expected.items():
        assert await page.text_content(f"#s-{key}") == str(value), key
    assert await page.text_content("#t-best tbody tr td:nth-child(2)") == f"{state.best[CLASS]:.4f}"
    assert await page.locator("#t-sota tbody tr").count() == len(state.records)
    assert await page.text_content("#t-peers tbody tr td") == identity(530).node_id[:12]
    # the post and the commit message carry <script>: on the page they are text, and nothing ran
    assert await page.locator("#feed li", has_text=f"hello {SCRIPT}").count() == 1
    assert await page.evaluate("document.querySelectorAll('script').length") == 1
    await loaded(page)
    await shoot(page, site, "dashboard-desktop")
    await page.goto(site.url + "/experiment/" + _rival(site).hex(), timeout=LOAD_TIMEOUT_MS)
    assert await page.text_content("#message") == f"deeper {SCRIPT}"
    assert "+DEPTH = 9" in (await page.text_content("#diff") or "")
    await shoot(page, site, "experiment-desktop")
    assert watch.problems == []
    await ctx.close()


def _rival(site: Site) -> bytes:
    return next(r.id for r in site.kit.history.claims.values() if SCRIPT in r.body.message)


async def test_a_new_entry_appears_within_a_second(browser: Any, site: Site) -> None:
    ctx, page, watch = await open_live(browser, site, viewport=DESKTOP)
    text = f"fresh result {SCRIPT} <b>bold</b>"
    started = time.monotonic()
    await site.kit.publish_as(identity(520), Post(channel="general", text=text, reply_to=None))
    await page.locator("#feed li .text", has_text=text).wait_for(timeout=LIVE_WITHIN_MS)
    assert time.monotonic() - started < LIVE_WITHIN_MS / 1000
    assert await page.evaluate("document.querySelectorAll('#feed b, #feed script').length") == 0
    # a new claim moves the headline numbers too
    claims = len(site.kit.ledger.state.claims)
    commit = await site.kit.commit(site.kit.baseline, b"# a new train.py\n", "new")
    await site.kit.claim(commit, site.kit.baseline, 1.05, message="a live claim")
    await expect(page.locator("#s-experiments")).to_have_text(str(claims + 1), timeout=STATS_WITHIN_MS)
    assert watch.problems == []
    await ctx.close()


async def test_phone_and_dark_views(browser: Any, site: Site) -> None:
    ctx, page, watch = await open_live(browser, site, viewport=PHONE, device_scale_factor=2, is_mobile=True,
                                       has_touch=True)
    # readable on a phone: nothing makes the page wider than the screen
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await loaded(page)
    await shoot(page, site, "dashboard-phone")
    await page.goto(site.url + "/experiment/" + _rival(site).hex(), timeout=LOAD_TIMEOUT_MS)
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await shoot(page, site, "experiment-phone")
    assert watch.problems == []
    await ctx.close()
    ctx, page, watch = await open_live(browser, site, viewport=DESKTOP, color_scheme="dark")
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"
    await loaded(page)
    await shoot(page, site, "dashboard-dark")
    assert watch.problems == []
    await ctx.close()
