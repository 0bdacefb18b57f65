"""The node's live dashboard: aiohttp routes over a Backend, and the follower that feeds them.

Knows nothing about workers, peers or the trainer beyond `Backend`; what the page shows comes
from node/web/views.py (pure view model) and node/web/charts.py (pure SVG), and this module only
does the IO around them: HTML, the live stream, static files, `/metrics`.

Theory of operation. One `Hub` per app, owned by the app's `cleanup_ctx`, follows the ledger
with `entries_since` every POLL_INTERVAL_S, turns new entries into feed items and keeps the
newest MAX_FEED_ITEMS. Each browser holds one Server-Sent Events stream (`/dashboard/events`)
with a bounded queue: a poll that found entries sends one message (the new items, plus the
summary when SUMMARY_INTERVAL_S has passed), so 100 entries a second become about four
messages a second, not a hundred. A client whose queue is full is dropped and counted; its
browser reconnects with `Last-Event-ID` and gets what it missed from the ring, or the whole
ring. The first page is rendered on the server with the same view model (readable without
script), and names the row it shows, so the stream starts exactly after it.

Escaping. Every string reaches HTML through node/web/pages.py's `_e` (html.escape); the script sets `textContent`
only; charts are `<img>` SVGs; and every response carries a Content-Security-Policy with no
inline script, so a commit message or a post can never become markup or code.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ledger.bodies import Claim, Verify
from ledger.entry import Entry
from ledger.errors import LedgerError
from ledger.keys import parse_node_id
from swarm import gitrepo
from swarm.errors import SwarmError

from node.web import charts, pages
from node.web import views as dashview
from node.web.backend import Backend
from node.web.feedring import FeedRing
from node.web.posts import valued_authors
from node.research.history import ClaimRecord

_log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.25         # how often the ledger is asked for new entries
SUMMARY_INTERVAL_S = 0.5       # the summary (stats, tables) is recomputed at most this often
IDLE_SUMMARY_INTERVAL_S = 2.0  # ... and this often when only the live snapshot can have changed
MAX_ENTRIES_PER_POLL = 2_000
BACKLOG_ROWS = 500             # rows read at start to fill the feed
MAX_FEED_ITEMS = 200           # kept in memory and shown
MAX_FEED_BYTES = 64 << 10      # ... their JSON, all together (node/web/feedring.py)
MAX_FEED_PER_AUTHOR = 20       # ... of one stranger's entries
MAX_CREDIT_ITEMS = 50
MAX_CREDIT_BYTES = 16 << 10
MAX_CREDIT_PER_AUTHOR = 10
MAX_CLIENTS = 64               # live streams at once; more get 503
CLIENT_QUEUE_MAX = 64          # messages a slow client may lag before it is dropped
KEEPALIVE_S = 15.0             # an SSE comment line keeps proxies and browsers from timing out
RETRY_MS = 1_000               # the browser's reconnect delay
MAX_CHART_CACHE = 64           # cached SVG documents
CHART_MAX_AGE_S = 2.0          # a chart is redrawn at most this often (10,000 points take ~30 ms), however many ask
STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"  # a chart's own <style>; images never run script


def _secure(response: web.StreamResponse, csp: str = CSP) -> web.StreamResponse:
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


class _Client:
    """One live stream: a bounded queue of encoded SSE messages; None closes it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=CLIENT_QUEUE_MAX)


def _sse(event: str, data: dict[str, Any], event_id: int) -> bytes:
    # json.dumps writes no newline, so the payload is one `data:` line
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Hub:
    """Follows the ledger for the dashboard and fans updates out to the live streams."""

    def __init__(self, backend: Backend, clock_s: Callable[[], float],
                 monotonic_s: Callable[[], float] = time.monotonic) -> None:
        # clock_s: wall time shown to people ("3 min ago"); monotonic_s: the ages of caches
        self.backend, self.clock_s, self.monotonic_s = backend, clock_s, monotonic_s
        self.row = 0                                   # the last ledger row turned into items
        self.feed = FeedRing(MAX_FEED_ITEMS, MAX_FEED_BYTES, MAX_FEED_PER_AUTHOR)
        self.credit_feed = FeedRing(MAX_CREDIT_ITEMS, MAX_CREDIT_BYTES, MAX_CREDIT_PER_AUTHOR)
        self.clients: set[_Client] = set()
        self.counters = {"clients_dropped_total": 0, "messages_total": 0, "poll_errors_total": 0}
        self._announced: set[bytes] = set()   # record claims already in the feed
        self._summary: dict[str, Any] | None = None
        self._summary_at = -1e9
        self._dirty = False                            # entries arrived since the last summary
        self._page_cache: tuple[int, float, dict[str, Any]] | None = None  # (row, at, summary) for page loads
        self._charts: dict[tuple[str, str], tuple[int, float, str]] = {}  # (kind, class) -> (row, drawn at, svg)
        try:
            self._me: bytes | None = parse_node_id(backend.node_id)
        except ValueError:
            self._me = None

    def heading(self) -> pages.Heading:
        return pages.Heading(self.backend.ledger.spec.spec.name, self.backend.node_id)

    # -- lifetime (aiohttp cleanup_ctx)

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        task = asyncio.get_running_loop().create_task(self._follow(), name="dashboard-follow")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.close_clients()

    async def on_shutdown(self, app: web.Application) -> None:
        self.close_clients()  # lets every stream handler return before the server waits on them

    def close_clients(self) -> None:
        for client in list(self.clients):
            self._drop(client)

    async def start(self) -> None:
        """Fills the feed from the newest BACKLOG_ROWS rows; older records are not announced as new."""
        ledger = self.backend.ledger
        self.row = max(0, await ledger.count() - BACKLOG_ROWS)
        await self.backend.history.sync(ledger)
        await self.poll()
        self._announced.update(r.claim for r in ledger.state.records)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            try:
                await self.poll()
            except (LedgerError, SwarmError, OSError) as exc:
                self.counters["poll_errors_total"] += 1
                _log.warning("dashboard: reading the ledger failed: %s", exc)

    # -- following

    async def poll(self) -> None:
        """Reads entries after `row`, extends the feed and tells every client what changed."""
        ledger = self.backend.ledger
        if await ledger.count() - self.row > MAX_ENTRIES_PER_POLL:
            # far behind (a peer's bulk sync): the feed shows recent entries, so skip to them
            self.row = await ledger.count() - BACKLOG_ROWS
            self._announced.update(r.claim for r in ledger.state.records)
        batch = await ledger.entries_since(self.row, dashview.FEED_KINDS, MAX_ENTRIES_PER_POLL)
        items: list[dict[str, Any]] = []
        if batch:
            if any(isinstance(entry.body, Claim) for _, entry in batch):
                await self.backend.history.sync(ledger)
            pairs = self._items(batch)
            self.row = batch[-1][0]
            protected = self._protected()
            self.feed.extend(pairs, protected)
            self.credit_feed.extend(((i, a) for i, a in pairs if dashview.is_credit(i)), protected)
            items = self.feed.kept(i for i, _ in pairs)   # a stranger's flood past its cap is not sent either
        self._dirty = self._dirty or bool(items)
        now = self.monotonic_s()
        summary = None
        # the ledger moved: a fresh summary soon; else only the snapshot (workers, peers) may have
        interval = SUMMARY_INTERVAL_S if self._dirty else IDLE_SUMMARY_INTERVAL_S
        if self.clients and now - self._summary_at >= interval:  # nobody watching: no work
            fresh = await self.summary()
            if items or fresh != self._summary:
                summary = fresh
            self._summary, self._summary_at, self._dirty = fresh, now, False
        if items or summary is not None:
            self._broadcast(_sse("update", {"items": items[-MAX_FEED_ITEMS:], "summary": summary}, self.row))

    def _items(self, batch: list[tuple[int, Entry]]) -> list[tuple[dict[str, Any], bytes | None]]:
        """Feed items for a batch, each with its author (None for a record's line); a record is
        announced right after the first verify of its claim that this hub reads (records that
        were old when the hub started are never announced)."""
        state, claims = self.backend.ledger.state, self.backend.history.claims
        records = {r.claim: r for r in state.records if r.claim not in self._announced}
        items: list[tuple[dict[str, Any], bytes | None]] = []
        for row, entry in batch:
            items.append((dashview.feed_item(row, entry, state), entry.author))
            body = entry.body
            if isinstance(body, Verify) and body.claim in records:
                items.append((dashview.record_item(row, entry.time_ms, records.pop(body.claim), claims), None))
                self._announced.add(body.claim)
        return items

    def _protected(self) -> Callable[[bytes], bool]:
        """Whose feed items are kept before any stranger's: ours and the authors the swarm valued."""
        valued = valued_authors(self.backend.ledger.state)
        return lambda author: author == self._me or author in valued

    def inputs(self, entries: int) -> dashview.Inputs:
        b = self.backend
        return dashview.Inputs(b.ledger.state, b.history.claims, b.snapshot(), len(b.queued()), self._me, entries,
                               int(self.clock_s() * 1000))

    async def summary(self) -> dict[str, Any]:
        return dashview.summary(self.inputs(await self.backend.ledger.count()))

    async def page_summary(self) -> dict[str, Any]:
        """The summary for a page load or a new stream: shared for SUMMARY_INTERVAL_S at one row,
        so a burst of reloads costs one computation (~13 ms at 10,000 experiments), not one each."""
        now = self.monotonic_s()
        cached = self._page_cache
        if cached is not None and cached[0] == self.row and now - cached[1] < SUMMARY_INTERVAL_S:
            return cached[2]
        fresh = await self.summary()
        self._page_cache = (self.row, now, fresh)
        return fresh

    # -- clients

    def connect(self, after: int | None, summary: dict[str, Any]) -> _Client:
        """A new stream, primed with the items after row `after` and the current summary."""
        client = _Client()
        self.clients.add(client)
        backlog = [i for i in self.feed if after is None or i["row"] > after]
        oldest = self.feed.oldest()
        first = {"items": backlog[-MAX_FEED_ITEMS:], "summary": summary,
                 "reset": after is None or oldest is not None and oldest["row"] > after + 1}
        client.queue.put_nowait(_sse("update", first, self.row))
        return client

    def disconnect(self, client: _Client) -> None:
        self.clients.discard(client)

    def _drop(self, client: _Client) -> None:
        self.clients.discard(client)
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(None)

    def _broadcast(self, message: bytes) -> None:
        self.counters["messages_total"] += 1
        for client in list(self.clients):
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                # a client this far behind is better served by a reconnect than by a longer queue
                self.counters["clients_dropped_total"] += 1
                self._drop(client)

    # -- charts, cached per ledger row

    def chart(self, kind: str, cls: str) -> str:
        """One chart's SVG; redrawn only when the ledger moved and the last drawing is CHART_MAX_AGE_S old."""
        cached = self._charts.get((kind, cls))
        now = self.monotonic_s()
        if cached is not None and (cached[0] == self.row or now - cached[1] < CHART_MAX_AGE_S):
            return cached[2]
        state, claims = self.backend.ledger.state, self.backend.history.claims
        if kind == "progress":
            points, best, marks, times = dashview.progress(state, claims, cls)
            labels = (("#1 · " + dashview.utc(times[0]), f"#{len(times)} · " + dashview.utc(times[-1]))
                      if times else ("", ""))
            svg = charts.progress_svg(f"progress · {cls}", points, best, records=marks, x_labels=labels)
        else:
            svg = charts.residual_svg(f"residuals · {cls}", dashview.residuals(state, cls))
        if len(self._charts) >= MAX_CHART_CACHE:
            self._charts.clear()
        self._charts[(kind, cls)] = (self.row, now, svg)
        return svg


HUB_KEY = web.AppKey("dashboard_hub", Hub)


# -- handlers

def _html(text: str) -> web.Response:
    response = web.Response(text=text, content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    _secure(response)
    return response


async def _index(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    summary = await hub.page_summary()
    return _html(pages.render_index(hub.heading(), summary, hub.row, hub.feed, hub.credit_feed))


async def _state(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    body = {"row": hub.row, "summary": await hub.page_summary(), "feed": list(hub.feed)}
    response = web.json_response(body)
    _secure(response)
    return response


def _claim_id(request: web.Request) -> bytes:
    text = request.match_info["claim"]
    if len(text) != 64:
        raise web.HTTPNotFound(text="not an experiment id")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise web.HTTPNotFound(text="not an experiment id") from None


async def _claim_record(hub: Hub, claim_id: bytes) -> ClaimRecord:
    record = hub.backend.history.claims.get(claim_id)
    if record is not None:
        return record
    entry = await hub.backend.ledger.get(claim_id)
    if entry is None or not isinstance(entry.body, Claim):
        raise web.HTTPNotFound(text="no such experiment in this node's ledger")
    return ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, entry.body)


async def _diff(hub: Hub, record: ClaimRecord) -> str:
    body, repo = record.body, hub.backend.repo
    if body.parent is None:
        return "(the baseline: no parent to compare with)"
    try:
        if not (await gitrepo.has_commit(repo, body.parent) and await gitrepo.has_commit(repo, body.commit)):
            return "(this node has not fetched the commit's bundle)"
        return await gitrepo.diff(repo, body.parent, body.commit) or "(no change to train.py)"
    except SwarmError as exc:
        return f"(diff unavailable: {exc})"


async def _experiment(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    record = await _claim_record(hub, _claim_id(request))
    parents = hub.backend.history.by_commit.get(record.body.parent or b"", [])
    view = dashview.experiment(record, hub.backend.ledger.state, parents[0] if parents else None)
    return _html(pages.render_experiment(hub.heading(), view, await _diff(hub, record)))


def _svg(text: str) -> web.Response:
    response = web.Response(text=text, content_type="image/svg+xml", charset="utf-8")
    response.headers["Cache-Control"] = "no-cache"
    _secure(response, SVG_CSP)
    return response


async def _loss(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    record = await _claim_record(hub, _claim_id(request))
    return _svg(charts.loss_svg(f"loss · {record.body.commit.hex()[:10]}", record.body.loss_curve))


async def _chart(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    kind, cls = request.match_info["kind"], request.match_info["cls"]
    if kind not in ("progress", "residuals") or cls not in dashview.classes(hub.backend.ledger.state):
        raise web.HTTPNotFound(text="no such chart")
    return _svg(hub.chart(kind, cls))


async def _metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    serving = {"clients": len(hub.clients), **hub.counters}
    text = dashview.metrics_text(hub.inputs(await hub.backend.ledger.count()), serving)
    response = web.Response(text=text, content_type="text/plain", charset="utf-8")
    response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    return response


def _after(request: web.Request) -> int | None:
    for raw in (request.headers.get("Last-Event-ID"), request.query.get("after")):
        if raw is not None and raw.isdigit() and len(raw) < 19:
            return int(raw)
    return None


async def _events(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    summary = await hub.page_summary()
    if len(hub.clients) >= MAX_CLIENTS:  # checked after the last await, so connects cannot race past it
        raise web.HTTPServiceUnavailable(text="too many live dashboards", headers={"Retry-After": "5"})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    _secure(response)
    client = hub.connect(_after(request), summary)
    try:
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        while True:
            try:
                message = await asyncio.wait_for(client.queue.get(), KEEPALIVE_S)
            except TimeoutError:
                message = b": keepalive\n\n"
            if message is None:
                break
            await response.write(message)
    except ConnectionResetError:
        pass  # the browser went away; its queue goes with it
    finally:
        hub.disconnect(client)
    return response


def _static_routes(app: web.Application) -> None:
    for path in sorted(STATIC.iterdir()):
        content_type = STATIC_TYPES.get(path.suffix)
        if content_type is None:
            continue
        data = path.read_bytes()  # small, read once: the node serves what it shipped with

        async def handler(request: web.Request, data: bytes = data, content_type: str = content_type) -> web.Response:
            response = web.Response(body=data, content_type=content_type, charset="utf-8")
            response.headers["Cache-Control"] = "no-cache"
            _secure(response)
            return response

        app.router.add_get(f"/dashboard/static/{path.name}", handler)


def add_routes(app: web.Application, backend: Backend, *, clock_s: Callable[[], float] = time.time) -> None:
    """Mounts the dashboard on `app`: `/`, `/experiment/{id}`, `/dashboard/...` and `/metrics`.

    The follower task lives in the app's cleanup_ctx, so it starts and stops with the app.
    """
    hub = Hub(backend, clock_s)
    app[HUB_KEY] = hub
    app.cleanup_ctx.append(hub.lifetime)
    app.on_shutdown.append(hub.on_shutdown)
    app.router.add_get("/", _index)
    app.router.add_get("/experiment/{claim}", _experiment)
    app.router.add_get("/experiment/{claim}/loss.svg", _loss)
    app.router.add_get("/dashboard/state.json", _state)
    app.router.add_get("/dashboard/events", _events)
    app.router.add_get("/dashboard/chart/{kind}/{cls}.svg", _chart)
    app.router.add_get("/metrics", _metrics)
    _static_routes(app)
