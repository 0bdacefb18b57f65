"""Wiring: from a NodeConfig to running workers, and back down again cleanly.

Order of setup (each step idempotent, so a restart walks the same path and finds what exists):
lock the home, load or create both identities, find the devices, prepare the data (a trainer
subprocess), open the git repository and write the baseline commit, find or sign the solo
spec, open the ledger, publish the profile, then one worker task per device and the display
task, all owned by one TaskGroup.

Shutdown is cancellation: SIGINT or SIGTERM cancels the serving task, the TaskGroup cancels every
worker, a worker's trainer child is killed (node/experiment.py), and the `async with` blocks
close the ledger (after its queued writes) and the repository. Every step is bounded.
"""
from __future__ import annotations

import asyncio
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path

from ledger.keys import short_id
from ledger.store import Ledger
from swarm.gitrepo import Repository

from node import home
from node.config import NodeConfig
from node.display import Display
from node.home import Layout
from node.platform import Device, detect
from node.research import Research


def summary(research: Research) -> str:
    state = research.ledger.state
    best = ", ".join(f"{cls} {value:.4f}" for cls, value in sorted(state.best.items())) or "none yet"
    mine = sum(state.balances.get(k.public_key, 0) for k in (research.researcher, research.verifier))
    last = " ".join(research.stats.last) or "-"
    return (f"best {best} | last {last} | experiments {research.stats.experiments} | "
            f"verified {research.stats.verifications} | credits {mine / 1e6:.3f} | peers 0")


async def run_node(config: NodeConfig, display: Display) -> Research:
    """Runs until every worker is done (only with max_experiments) or the task is cancelled."""
    layout = Layout(config.home)
    lock = home.lock_home(config.home)
    try:
        researcher, verifier_id = home.load_identities(layout)
        devices = await detect(config.profile)
        display.event(f"node {short_id(researcher.public_key)} in {config.home}: "
                      + ", ".join(f"{d.label} ({d.platform_class})" for d in devices))
        data = await home.prepare_data(config.home)
        async with Repository.open(layout.repo) as repo:
            baseline = await home.ensure_baseline(repo)
            fields = home.solo_spec_fields(config, researcher, verifier_id, data, baseline, devices)
            slug, spec = home.load_or_create_spec(layout, fields, researcher, int(time.time() * 1000))
            async with Ledger.open(layout.ledger(slug), spec) as ledger:
                scratch = Path(tempfile.mkdtemp(prefix="autoswarm-node-"))
                try:
                    research = Research(config, ledger, repo, layout, data, researcher, verifier_id, display,
                                        scratch, random.Random())
                    await research.history.sync(ledger)
                    display.event(f"swarm {slug} ({spec.swarm_id.hex()[:16]}): {await ledger.count()} entries, "
                                  f"{len(research.history.claims)} claims; budget "
                                  f"{', '.join(f'{d.label} {config.budget_s(d.device)} s' for d in devices)}")
                    await research.publish_profile(devices[0])
                    if owed := await research.catch_up():
                        display.event(f"published {owed} mints owed from before the last stop")
                    display.summary = lambda: summary(research)
                    await _work(research, devices, display, config.refresh_s)
                    return research
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
    finally:
        lock.close()


async def _work(research: Research, devices: list[Device], display: Display, refresh_s: float) -> None:
    async with asyncio.TaskGroup() as tg:
        screen = tg.create_task(display.run(refresh_s), name="display")
        workers = [tg.create_task(research.run_worker(d), name=f"worker-{d.label}") for d in devices]
        try:
            for worker in workers:
                await worker
        finally:
            screen.cancel()


async def serve(config: NodeConfig, display: Display) -> Research | None:
    """run_node under signal handlers: SIGINT/SIGTERM stop it cleanly; returns None when stopped so."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stopping: list[str] = []

    def stop(name: str) -> None:
        if not stopping and task is not None:
            stopping.append(name)
            display.event(f"{name}: stopping (killing the running trainer, closing the ledger)")
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        return await run_node(config, display)
    except asyncio.CancelledError:
        if stopping:
            display.event("stopped cleanly")
            return None
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
