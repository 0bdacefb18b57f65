"""Wiring: from a NodeConfig to running workers, and back down again cleanly.

Order of setup (each step idempotent, so a restart walks the same path and finds what exists):
lock the home, load or create both identities, find the devices, prepare the data (a trainer
subprocess), open the git repository and write the baseline commit, find the swarm (the one
joined before, one whose spec a bootstrap peer serves, or our own, signed now), open the
ledger and the peer, publish the profile, start the local API (HOME/api.json says where), then
one worker task per device, the display, (as a creator with `[swarm] admit_keys`) the admit
loop, the seal loop (it seals claims while one of our keys is an anchor), the credits
market's loop (node/market/loop.py) and, with `[agent] command`, one coding-agent driver per
worker (node/research/agentdriver.py), all owned by one TaskGroup.

Shutdown is cancellation: SIGINT or SIGTERM cancels the serving task, the TaskGroup cancels every
worker, a worker's trainer child is killed (node/research/experiment.py), an agent's whole process
tree is stopped (node/research/agentproc.py), and the `async with` blocks stop the API, close the
peer's connections, close the ledger (after its queued writes) and the repository. Every step is
bounded.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ledger import assign
from ledger.bodies import UCR_PER_CREDIT, Profile, Seal
from ledger.errors import LedgerError
from ledger.keys import Identity, short_id
from ledger.spec import SignedSpec
from ledger.store import Ledger
from swarm.errors import SwarmError
from swarm.gitrepo import Repository
from swarm.join import fetch_spec
from swarm.peer import Peer, PeerConfig

from node import home
from node.bundlegate import SealedBundles
from node.research.admission import due_admissions
from node.web.server import serve_api
from node.config import NodeConfig
from node.display import Display
from node.errors import SetupError
from node.research.fetch import CommitFetcher, read_bundle
from node.home import Layout
from node.market.loop import Market, MarketConfig
from node.live import LiveBackend
from node.platform import Device, detect
from node.research import verifier
from node.research.agentdriver import AgentDriver, AgentSettings
from node.research.loop import Research


ADMIT_INTERVAL_S = 2.0   # the creator looks for new profiles to admit this often
SEAL_INTERVAL_S = 3.0    # an anchor node seals the claims that have no seal this often (replays wait for it)
JOIN_SYNC_S = 60.0       # a joining node waits this long to hold its peers' ledger before working


def summary(research: Research, peer: Peer) -> str:
    state = research.ledger.state
    best = ", ".join(f"{cls} {value:.4f}" for cls, value in sorted(state.best.items())) or "none yet"
    mine = sum(state.balances.get(k.public_key, 0) for k in (research.researcher, research.verifier))
    last = " ".join(research.stats.last) or "-"
    return (f"best {best} | last {last} | experiments {research.stats.experiments} | "
            f"verified {research.stats.verifications} | credits {mine / UCR_PER_CREDIT:.3f} | peers {len(peer.connected())}")


async def find_swarm(config: NodeConfig, layout: Layout, researcher: Identity, verifier_id: Identity,
                     data: home.DataInfo, baseline: bytes, devices: list[Device],
                     clock: Callable[[], float] = time.time) -> tuple[str, SignedSpec, NodeConfig]:
    """The swarm this node works in: the one it joined before, one fetched from a bootstrap peer,
    or its own. A joined swarm's budget replaces the configured ones (the spec pins it)."""
    if not config.bootstrap:
        fields = home.solo_spec_fields(config, researcher, verifier_id, data, baseline, devices)
        slug, spec = home.load_or_create_spec(layout, fields, researcher, int(clock() * 1000))
        return slug, spec, config
    signed = home.joined_spec(layout)
    if signed is None:
        errors = []
        for addr in config.bootstrap:
            try:
                signed = await fetch_spec(addr)
                break
            except SwarmError as exc:
                errors.append(str(exc))
        if signed is None:
            raise SetupError("no bootstrap peer gave its swarm spec: " + "; ".join(errors)[:400])
    home.check_joinable(signed, data, baseline, devices)
    slug = home.save_joined_spec(layout, signed)
    budget = signed.spec.time_budget_s
    return slug, signed, dataclasses.replace(config, cpu_budget_s=budget, gpu_budget_s=budget)


def market_config(config: NodeConfig) -> MarketConfig:
    return MarketConfig(offer=config.market_offer, price_ucr_per_gpu_s=config.market_price_ucr_per_gpu_s,
                        spot_check_rate=config.market_spot_check_rate, accept_window_s=config.market_accept_window_s,
                        holders=config.market_quorum)


def peer_config(config: NodeConfig, layout: Layout, slug: str) -> PeerConfig:
    host, _, port = config.listen.rpartition(":")
    return PeerConfig(host=host.strip("[]"), port=int(port), advertise=config.advertise, bootstrap=config.bootstrap,
                      peer_table_path=layout.swarm(slug) / "peers.json", anchors_path=layout.swarm(slug) / "anchors.json",
                      stranger_quota_bytes=config.stranger_quota_bytes)


async def run_node(config: NodeConfig, display: Display, clock: Callable[[], float] = time.time) -> Research:
    """Runs until every worker is done (only with max_experiments) or the task is cancelled. `clock`
    (seconds since the epoch) is the one every part of the node reads: entries' times, deadlines."""
    layout = Layout(config.home)
    lock = home.lock_home(config.home)
    try:
        researcher, verifier_id = home.load_identities(layout)
        devices = await detect(config.profile)
        display.event(f"node {short_id(researcher.public_key)} in {config.home}: "
                      + ", ".join(f"{d.label} ({d.platform_class})" for d in devices))
        display.event(f"preparing the data set under {config.home / 'data'} (built on the first start, then read)")
        data = await home.prepare_data(config.home)
        async with Repository.open(layout.repo) as repo:
            baseline = await home.ensure_baseline(repo)
            slug, spec, config = await find_swarm(config, layout, researcher, verifier_id, data, baseline, devices,
                                                      clock)
            async with (Ledger.open(layout.ledger(slug), spec) as ledger,
                        Peer.open(peer_config(config, layout, slug), ledger, researcher,
                                  # a claim's bundle only once it is sealed (the copy attack, issue 12)
                                  bundle_source=SealedBundles(ledger, functools.partial(read_bundle, layout.bundles)))
                        as peer):
                scratch = Path(tempfile.mkdtemp(prefix="autoswarm-node-"))
                try:
                    research = Research(config, ledger, repo, layout, data, researcher, verifier_id, display,
                                        scratch, random.Random(), clock,
                                        queue_path=layout.swarm(slug) / "submissions.json")
                    research.on_publish = peer.announce
                    research.commits = CommitFetcher(repo, research.history, spec, layout.bundles, peer, clock)
                    research.market = Market(ledger, peer, repo, config.home, researcher, [verifier_id, researcher],
                                             sorted({d.platform_class for d in devices}), market_config(config),
                                             slots=len(devices), clock=clock, on_event=display.event)
                    if config.bootstrap:
                        display.event(f"joining through {', '.join(config.bootstrap)}: fetching the swarm's ledger")
                        if not await peer.wait_synced(JOIN_SYNC_S):
                            display.event(f"not in step with any peer after {JOIN_SYNC_S:.0f} s; working anyway")
                    await research.history.sync(ledger)
                    display.event(f"swarm {slug} ({spec.swarm_id.hex()[:16]}): {await ledger.count()} entries, "
                                  f"{len(research.history.claims)} claims; budget "
                                  f"{', '.join(f'{d.label} {config.budget_s(d.device)} s' for d in devices)}")
                    kept, dropped = await research.submissions.restore()
                    if kept:
                        display.event(f"{len(kept)} submissions queued before the last stop are queued again: "
                                      + ", ".join(s.commit.hex()[:12] for s in kept))
                    for why in dropped:
                        display.event(f"a submission queued before the last stop was dropped: {why}")
                    await research.publish_profile(devices[0])
                    if owed := await research.replays.catch_up():
                        display.event(f"published {owed} mints owed from before the last stop")
                    display.summary = lambda: summary(research, peer)
                    backend = LiveBackend(research, peer, devices)
                    async with serve_api(config.api_listen, config.home, backend, peer.address) as url:
                        display.event(f"peer {peer.address}; local API and dashboard {url}/")
                        await _work(research, devices, display, config)
                    return research
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
    finally:
        lock.close()


async def _work(research: Research, devices: list[Device], display: Display, config: NodeConfig) -> None:
    async with asyncio.TaskGroup() as tg:
        helpers = [tg.create_task(display.run(config.refresh_s), name="display")]
        if research.market is not None:
            helpers.append(tg.create_task(research.market.run(), name="market"))
        if config.admit_keys and research.spec.spec.creator == research.researcher.public_key:
            helpers.append(tg.create_task(_admit_loop(research, config.admitted_keys()), name="admit"))
        helpers.append(tg.create_task(_seal_loop(research), name="seal"))
        if config.agent_command:  # an operator's coding agent per worker (node/research/agentdriver.py)
            driver = agent_driver(research, config)
            helpers += [tg.create_task(driver.drive(d), name=f"agent-{d.label}") for d in devices]
        workers = [tg.create_task(research.run_worker(d), name=f"worker-{d.label}") for d in devices]
        try:
            for worker in workers:
                await worker
        finally:
            for task in helpers:
                task.cancel()


def agent_driver(research: Research, config: NodeConfig) -> AgentDriver:
    settings = AgentSettings(command=config.agent_command, timeout_s=float(config.agent_timeout_s),
                             name=config.agent_name, frozen_constants=config.frozen_constants)
    return AgentDriver(settings, research.repo, research.ledger, research.history, research.submissions,
                       research.parent_here, research.display.event, research.scratch,
                       frozenset({research.researcher.public_key, research.verifier.public_key}))


async def _admit_loop(research: Research, keys: frozenset[bytes]) -> None:
    """As the swarm's creator: admits each key of `[swarm] admit_keys` once it profiles its class."""
    ledger, row = research.ledger, 0
    ours = {research.researcher.public_key, research.verifier.public_key}
    profiles: dict[bytes, str] = {}
    while True:
        for row, entry in await ledger.entries_since(row, ["profile"], 1000):
            if entry.author not in ours and isinstance(entry.body, Profile):
                profiles[entry.author] = entry.body.platform_class
        for admit in due_admissions(ledger.state, profiles, keys):
            await research.publish(research.researcher, admit)
            research.display.event(f"admitted {short_id(admit.verifier)} as a verifier of "
                                   f"{', '.join(admit.platform_classes)}")
        await asyncio.sleep(ADMIT_INTERVAL_S)


async def _seal_loop(research: Research) -> None:
    """While one of our keys is an anchor: seals the claims that have no seal, one bounded batch
    per tick. Which verifiers count for a claim then follows from this seal's id, which the
    claimant could not know when it signed (ledger/assign.py)."""
    while True:
        state = research.ledger.state
        sealer = next((k for k in (research.verifier, research.researcher) if assign.may_seal(state, k.public_key)),
                      None)
        claims = verifier.sealable(state, sealer.public_key) if sealer is not None else []
        if sealer is not None and claims:
            try:
                await research.publish(sealer, Seal(claims=claims))
            except LedgerError as exc:  # a full disk or a closing ledger: say so, try again next tick
                research.display.event(f"sealing {len(claims)} claims failed: {exc}")
        await asyncio.sleep(SEAL_INTERVAL_S)


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
