"""The running node as a Backend (node/web/backend.py): what the local API and dashboard see of it.

A thin adapter over the research loop (workers, history, submissions) and the peer (connections
and counters). Knows nothing of HTTP.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ledger.bodies import Body
from ledger.entry import Entry
from ledger.keys import node_id_text
from ledger.store import Ledger
from swarm.gitrepo import Repository
from swarm.peer import Peer

from node.web.backend import Submission
from node.research.history import History
from node.market.loop import Market
from node.platform import Device
from node.research.loop import Research


class LiveBackend:
    def __init__(self, research: Research, peer: Peer, devices: list[Device]) -> None:
        self.research, self.peer, self.devices = research, peer, devices
        self.home: Path = research.layout.home
        self.ledger: Ledger = research.ledger
        self.repo: Repository = research.repo
        self.history: History = research.history
        self.node_id = research.researcher.node_id
        self.platform_classes = sorted({d.platform_class for d in devices})
        self.started_s = research.clock()

    @property
    def market(self) -> Market | None:
        return self.research.market

    async def publish(self, body: Body) -> Entry:
        return await self.research.publish(self.research.researcher, body)

    async def submit(self, commit: bytes, agent: str) -> Submission:
        return await self.research.submissions.submit(commit, agent)

    def queued(self) -> list[Submission]:
        return self.research.submissions.queued()

    def snapshot(self) -> dict[str, Any]:
        now = self.research.clock()
        workers = []
        for d in self.devices:
            running = self.research.running.get(d.label)
            workers.append({"worker": d.label, "platform_class": d.platform_class, "busy": running is not None,
                            "running": running.what if running else None,
                            "seconds_left": max(0.0, running.expected_end_s - now) if running else None})
        stats = self.peer.stats()
        peers = [{"node": node, **counters} for node, counters in sorted(stats.pop("peers").items())]
        r = self.research
        return {
            "node": self.node_id, "verifier": node_id_text(r.verifier.public_key), "address": self.peer.address,
            "uptime_s": r.clock() - self.started_s, "workers": workers, "peers": peers, "swarm": stats,
            "experiments_started": r.stats.experiments, "verifications": r.stats.verifications,
            "queued": len(r.submissions.queued()), "last": list(r.stats.last),
            "bundles_fetched": r.commits.fetched if r.commits is not None else 0,
        }
