"""Dashboard benchmark: a ledger of N experiments, the dashboard on 127.0.0.1, headless Chromium.

    .venv/bin/python scripts/bench_dashboard.py --experiments 10000

Prints one JSON object per line:
  setup      the ledger: entries, claims, verifications, records; seconds to write it and to index it
  server     server-side times of `/` and `/dashboard/state.json` (each past the 0.5 s page cache), an
             experiment page, the charts (first: drawn; then cached) and `/metrics` (median of --reps)
  paint      in Chromium, fresh context each load: time to first byte, first contentful paint (the page
             is rendered on the server, so that is the first meaningful paint), DOM ready and load with
             the chart images (median and max of --reps)
  storm      --rate entries/s published for --storm-s seconds with one live page open: the page's
             main-thread stalls (a 20 ms timer's lateness, long tasks), how long a marker post takes
             from publish to the page's DOM, and CPU: this process with the dashboard and a browser
             connected minus the same storm with no dashboard at all (the node's cost of serving it),
             and the browser's own CPU; --streams N adds N more live clients (plain SSE readers)
Chromium is Debian's /usr/bin/chromium (scripts/setup.sh); --no-browser measures the server only.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger import fold  # noqa: E402
from ledger.bodies import Body, Claim, Post, Verify  # noqa: E402
from ledger.entry import Entry, sign_entry  # noqa: E402
from ledger.keys import Identity  # noqa: E402
from ledger.spec import SignedSpec, SwarmSpec, sign_spec  # noqa: E402
from ledger.store import Ledger  # noqa: E402
from swarm.gitrepo import Repository  # noqa: E402

from node.web import dashboard  # noqa: E402
from node.web.backend import Submission  # noqa: E402
from node.research.history import History  # noqa: E402
from node.research.verifier import record_mint, verification_mint  # noqa: E402

CLASS = "cpu-tiny"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
APPEND_BATCH = 1_000
EXPERIMENT_GAP_MS = 30_000   # the seeded history: one experiment every 30 s, ending now
LAG_TICK_MS = 20             # the page-side timer whose lateness measures main-thread stalls


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps({"bench": "dashboard", **obj}, sort_keys=True), flush=True)


def ident(n: int) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"bench-dashboard-%d" % n).digest())


def spec_for(creator: Identity, verifiers: list[Identity]) -> SignedSpec:
    return sign_spec(creator, SwarmSpec(
        name="bench", creator=creator.public_key, created_ms=0, harness_hash=b"h" * 32, dataset_hash=b"d" * 32,
        tokenizer_hash=b"t" * 32, time_budget_s=300, metric="val_bpb", direction="min", baseline_commit=b"\x00" * 20,
        allowed_files=["train.py"], platform_classes=[CLASS], verifiers=[v.public_key for v in verifiers],
        quorum=1, noise_bpb={CLASS: 0.01}, record_ucr_per_bpb=10**9, verify_ucr=1000))


@dataclass
class Seeder:
    """Signs a valid research history, consulting the fold as honest nodes and verifiers would."""

    spec: SignedSpec
    rng: random.Random
    start_ms: int
    state: fold.State = field(init=False)
    entries: list[Entry] = field(default_factory=list)
    heads: dict[bytes, tuple[int, bytes | None]] = field(default_factory=dict)
    clock_ms: int = 0

    def __post_init__(self) -> None:
        self.state = fold.initial(self.spec.spec)
        self.clock_ms = self.start_ms

    def add(self, who: Identity, body: Body) -> Entry:
        seq, prev = self.heads.get(who.public_key, (0, None))
        entry = sign_entry(who, swarm=self.spec.swarm_id, seq=seq + 1, prev=prev, body=body, time_ms=self.clock_ms)
        self.heads[who.public_key] = (entry.seq, entry.id)
        fold.apply(self.state, entry)
        self.entries.append(entry)
        return entry

    def experiment(self, i: int, n: int, who: Identity, verifier: Identity) -> None:
        rng = self.rng
        value = round(1.10 - 0.15 * i / n + rng.gauss(0, 0.02), 4)
        ok = rng.random() > 0.1
        knob = rng.choice(["MATRIX_LR", "EMBED_LR", "DEPTH", "WARMUP_RATIO", "WEIGHT_DECAY"])
        claim = self.add(who, Claim(
            commit=hashlib.sha1(b"c%d" % i).digest(), parent=hashlib.sha1(b"c%d" % (i - 1)).digest(),
            platform_class=CLASS, status="ok" if ok else "crash", val_bpb=value if ok else None,
            num_steps=950 if ok else 12, planned_steps=1000, seed=i, training_s=300.0, wall_s=312.5,
            peak_vram_mb=40_000.0, loss_curve=[round(4.0 * 0.97 ** k + rng.uniform(0, 0.05), 3) for k in range(64)],
            diff_summary=f"{knob} 0.04 -> 0.05", message=f"try {knob} one notch up", bundle=None))
        if ok and i % 3 == 0:
            verify = self.add(verifier, Verify(claim=claim.id, commit=hashlib.sha1(b"c%d" % i).digest(),
                                               platform_class=CLASS, status="ok",
                                               val_bpb=round(value + rng.gauss(0, 0.004), 4), num_steps=950, seed=i,
                                               training_s=300.0))
            fee = verification_mint(self.state, verifier.public_key, verify.id)
            if fee is not None:
                self.add(verifier, fee)
            mint, _ = record_mint(self.state, verifier.public_key, claim.id)
            if mint is not None:
                self.add(verifier, mint)
        if i % 20 == 0:
            self.add(who, Post(channel="results", text=f"{knob}: <b>{value}</b> after {i} runs", reply_to=None))
        self.clock_ms += EXPERIMENT_GAP_MS


@dataclass
class BenchBackend:
    """The Backend the dashboard needs, over a real ledger and repository; nothing runs the queue."""

    home: Path
    ledger: Ledger
    repo: Repository
    me: Identity
    history: History = field(default_factory=History)
    platform_classes: list[str] = field(default_factory=lambda: [CLASS])

    @property
    def node_id(self) -> str:
        return self.me.node_id

    async def publish(self, body: Body) -> Entry:
        return await self.ledger.publish(self.me, body, time_ms=int(time.time() * 1000))

    async def submit(self, commit: bytes, agent: str) -> Submission:
        raise NotImplementedError("the benchmark submits nothing")

    def queued(self) -> list[Submission]:
        return []

    def snapshot(self) -> dict[str, Any]:
        return {"workers": [{"worker": "cpu", "busy": True, "running": "MATRIX_LR 0.04 -> 0.05"}],
                "peers": [{"node": f"peer{i}", "received": i * 10, "sent": i * 7} for i in range(8)]}


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


async def timed_get(session: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    started = time.perf_counter()
    async with session.get(url) as response:
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")
    return (time.perf_counter() - started) * 1000, len(body)


async def bench_server(url: str, reps: int, claim: bytes) -> None:
    async with aiohttp.ClientSession() as session:
        for name, path in (("index", "/"), ("state_json", "/dashboard/state.json"),
                           ("experiment", f"/experiment/{claim.hex()}"),
                           ("progress_svg", f"/dashboard/chart/progress/{CLASS}.svg"),
                           ("residuals_svg", f"/dashboard/chart/residuals/{CLASS}.svg"), ("metrics", "/metrics")):
            times, size = [], 0
            for _ in range(reps):
                if name in ("index", "state_json"):  # past the page cache: every load computes its summary
                    await asyncio.sleep(dashboard.SUMMARY_INTERVAL_S + 0.1)
                ms, size = await timed_get(session, url + path)
                times.append(ms)
            emit({"figure": "server", "path": path, "name": name, "first_ms": round(times[0], 2),
                  "median_ms": median(times), "max_ms": round(max(times), 2), "bytes": size})


def cpu_of_descendants() -> float:
    """CPU seconds (user + system) of every live process below this one: the browser's."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fields = pid_dir.joinpath("stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(pid_dir.name)] = int(fields[1])
        cpu[int(pid_dir.name)] = (int(fields[11]) + int(fields[12])) / tick
    me, total = os.getpid(), 0.0
    for pid in cpu:
        p = pid
        while p in parents and p not in (0, 1, me):
            p = parents[p]
        if p == me and pid != me:
            total += cpu[pid]
    return total


async def paint(browser: Any, url: str, reps: int) -> None:
    rows: dict[str, list[float]] = {"ttfb_ms": [], "fcp_ms": [], "dom_ready_ms": [], "load_ms": []}
    for _ in range(reps):
        ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await ctx.new_page()
        await page.goto(url + "/", wait_until="load")
        for _ in range(100):  # the paint entry can land a frame after the load event
            timing = await page.evaluate(
                "(() => { const n = performance.getEntriesByType('navigation')[0];"
                " const p = performance.getEntriesByName('first-contentful-paint')[0];"
                " return [n.responseStart, p ? p.startTime : -1, n.domContentLoadedEventEnd, n.loadEventEnd]; })()")
            if timing[1] >= 0 and timing[3] > 0:
                break
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError("no first-contentful-paint entry within 2 s")
        for key, value in zip(rows, timing):
            rows[key].append(value)
        await ctx.close()
    emit({"figure": "paint", "reps": reps, **{f"{k}_median": median(v) for k, v in rows.items()},
          **{f"{k}_max": round(max(v), 2) for k, v in rows.items()}})


_WATCH_PAGE = """() => {
  window.__lag = []; window.__long = []; window.__seen = {};
  let last = performance.now();
  setInterval(() => { const now = performance.now(); window.__lag.push(now - last - %d); last = now; }, %d);
  new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); })
    .observe({type: "longtask", buffered: false});
  new MutationObserver(() => {
    for (const li of document.querySelectorAll("#feed li")) {
      const m = /marker-(\\d+)/.exec(li.textContent);
      if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = Date.now();
    }
  }).observe(document.getElementById("feed"), {childList: true});
}""" % (LAG_TICK_MS, LAG_TICK_MS)


async def storm(ledger: Ledger, rate: float, seconds: float, rng: random.Random) -> dict[int, float]:
    """Publishes `rate` entries a second for `seconds`; every second one is a marker post. Returns marker -> ms."""
    writers = [ident(900 + i) for i in range(16)]
    markers: dict[int, float] = {}
    count = int(rate * seconds)
    started = time.perf_counter()
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        who = writers[i % len(writers)]
        now_ms = int(time.time() * 1000)
        if i % int(rate) == 0:
            markers[i] = time.time() * 1000
            body: Body = Post(channel="bench", text=f"marker-{i}", reply_to=None)
        else:
            value = round(rng.uniform(0.95, 1.05), 4)
            body = Claim(commit=hashlib.sha1(b"s%d" % i).digest(), parent=hashlib.sha1(b"s%d" % (i - 1)).digest(),
                         platform_class=CLASS, status="ok", val_bpb=value, num_steps=950, planned_steps=1000, seed=i,
                         training_s=300.0, wall_s=312.5, peak_vram_mb=1.0, loss_curve=[3.0, 2.0], diff_summary="",
                         message=f"storm {i}", bundle=None)
        await ledger.publish(who, body, time_ms=now_ms)
    return markers


async def drain_stream(url: str, stop: asyncio.Event) -> int:
    """One more live client (no browser): reads the SSE stream until `stop`; returns bytes read."""
    read = 0
    async with aiohttp.ClientSession() as session, session.get(url + "/dashboard/events") as response:
        while not stop.is_set():
            try:
                chunk = await asyncio.wait_for(response.content.readany(), 0.5)
            except TimeoutError:
                continue
            if not chunk:
                break
            read += len(chunk)
    return read


async def storm_cpu(ledger: Ledger, rate: float, seconds: float, rng: random.Random) -> tuple[float, dict[int, float]]:
    cpu0 = time.process_time()
    markers = await storm(ledger, rate, seconds, rng)
    return time.process_time() - cpu0, markers


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    emit({"figure": "machine", "cpus": os.cpu_count(), "python": platform.python_version(),
          "load_avg": [round(x, 2) for x in os.getloadavg()], "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())})
    creator, verifier, me = ident(0), ident(1), ident(2)
    users = [me] + [ident(10 + i) for i in range(31)]
    spec = spec_for(creator, [verifier])
    seeder = Seeder(spec, rng, int(time.time() * 1000) - args.experiments * EXPERIMENT_GAP_MS)
    t0 = time.perf_counter()
    for i in range(args.experiments):
        seeder.experiment(i, args.experiments, users[i % len(users)], verifier)
    signed_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        home = Path(tmp)
        async with Ledger.open(home / "ledger.sqlite", spec) as ledger, Repository.open(home / "repo") as repo:
            t0 = time.perf_counter()
            wires = [e.wire for e in seeder.entries]
            for start in range(0, len(wires), APPEND_BATCH):
                await ledger.append_wires(wires[start:start + APPEND_BATCH])
            append_s = time.perf_counter() - t0
            backend = BenchBackend(home, ledger, repo, me)
            t0 = time.perf_counter()
            await backend.history.sync(ledger)
            sync_s = time.perf_counter() - t0
            state = ledger.state
            emit({"figure": "setup", "entries": await ledger.count(), "claims": len(state.claims),
                  "verified": len(state.verified), "records": len(state.records), "sign_s": round(signed_s, 2),
                  "append_s": round(append_s, 2), "history_sync_s": round(sync_s, 2)})

            # the storm with no dashboard at all: the reference for the serving cost
            ref_cpu, _ = await storm_cpu(ledger, args.rate, args.storm_s, rng)
            await backend.history.sync(ledger)

            app = web.Application()
            dashboard.add_routes(app, backend)
            runner = web.AppRunner(app, access_log=None)
            t0 = time.perf_counter()
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            emit({"figure": "start", "dashboard_start_ms": round((time.perf_counter() - t0) * 1000, 1)})
            try:
                await bench_server(url, args.reps, next(reversed(ledger.state.claims)))
                if args.no_browser:
                    cpu, _ = await storm_cpu(ledger, args.rate, args.storm_s, rng)
                    emit({"figure": "storm", "rate_per_s": args.rate, "seconds": args.storm_s, "clients": 0,
                          "serving_cpu_pct_of_one_core": round((cpu - ref_cpu) / args.storm_s * 100, 1)})
                    return
                from playwright.async_api import async_playwright
                async with async_playwright() as pw:
                    browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                    try:
                        await paint(browser, url, args.reps)
                        page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
                        await page.goto(url + "/", wait_until="load")
                        await page.wait_for_selector("#live.on")
                        await page.evaluate(_WATCH_PAGE)
                        stop = asyncio.Event()
                        async with asyncio.TaskGroup() as tg:
                            streams = [tg.create_task(drain_stream(url, stop), name=f"stream-{i}")
                                       for i in range(args.streams)]
                            while len(app[dashboard.HUB_KEY].clients) < args.streams + 1:
                                await asyncio.sleep(0.05)
                            browser_cpu0 = cpu_of_descendants()
                            cpu, markers = await storm_cpu(ledger, args.rate, args.storm_s, rng)
                            browser_cpu = cpu_of_descendants() - browser_cpu0
                            stop.set()
                        stream_bytes = sum(t.result() for t in streams)
                        await asyncio.sleep(2 * dashboard.POLL_INTERVAL_S + 0.5)  # the last marker's way to the page
                        lag, long_tasks, seen = await page.evaluate("[window.__lag, window.__long, window.__seen]")
                        items = await page.locator("#feed li").count()
                        shown = await page.text_content("#s-experiments")
                    finally:
                        await browser.close()
                latencies = sorted(seen[str(i)] - t for i, t in markers.items() if str(i) in seen)
                lag_sorted = sorted(lag)
                emit({"figure": "storm", "rate_per_s": args.rate, "seconds": args.storm_s, "clients": 1 + args.streams,
                      "stream_kb_per_client_s": round(stream_bytes / max(1, args.streams) / args.storm_s / 1024, 1)
                      if args.streams else None,
                      "markers": len(markers), "markers_seen": len(latencies),
                      "marker_latency_ms_median": median(latencies) if latencies else None,
                      "marker_latency_ms_max": round(latencies[-1], 1) if latencies else None,
                      "page_timer_late_ms_p99": round(lag_sorted[int(0.99 * (len(lag_sorted) - 1))], 1),
                      "page_timer_late_ms_max": round(lag_sorted[-1], 1),
                      "long_tasks": len(long_tasks), "long_task_ms_total": round(sum(long_tasks), 1),
                      "feed_items_in_dom": items, "experiments_shown": shown,
                      "experiments_in_ledger": len(ledger.state.claims),
                      "node_cpu_s_with_dashboard": round(cpu, 2), "node_cpu_s_without": round(ref_cpu, 2),
                      "serving_cpu_pct_of_one_core": round((cpu - ref_cpu) / args.storm_s * 100, 1),
                      "browser_cpu_pct_of_one_core": round(browser_cpu / args.storm_s * 100, 1),
                      "messages_sent": app[dashboard.HUB_KEY].counters["messages_total"],
                      "clients_dropped": app[dashboard.HUB_KEY].counters["clients_dropped_total"]})
            finally:
                await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiments", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=7, help="loads of each page and path")
    p.add_argument("--rate", type=float, default=100.0, help="entries/s during the storm")
    p.add_argument("--storm-s", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--streams", type=int, default=0, help="live clients without a browser, besides the page")
    asyncio.run(run(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
