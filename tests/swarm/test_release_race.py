"""The replicator's ingest and repair loops both release waiting entries; run them hard together.

Many feeds arrive out of order (every seq after the first, then the firsts), from several
concurrent senders, while the repair loop runs every millisecond: both loops keep finding the
same released slots. Nothing may fail (a failed loop is logged and restarted by the peer), and
every entry must reach a third node.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from swarm import gossip
from tests.ledger import factory
from tests.swarm.swarmkit import SWARM, open_node, wait_all, wait_connected

AUTHORS = 24
SEQS = 12


@pytest.mark.slow
async def test_ingest_and_repair_release_together_without_errors(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gossip, "REPAIR_INTERVAL_S", 0.001)
    feeds = factory.Feeds(SWARM)
    authors = [factory.identity(700 + i) for i in range(AUTHORS)]
    chains = [[feeds.sign(x, factory.post(f"{i}")) for i in range(SEQS)] for x in authors]
    slow = dict(anti_entropy_interval_s=300.0)  # only the release paths may deliver the tails
    caplog.set_level(logging.ERROR)
    async with (open_node(tmp_path, **slow) as a, open_node(tmp_path, **slow) as b,
                open_node(tmp_path, **slow) as c):
        await b.peer.connect(a.address)
        await c.peer.connect(b.address)
        await wait_connected(b, 2, 10)
        conn = b.peer.replicator.conns[a.identity.public_key]

        async def send(chain_group: list[list[bytes]]) -> None:
            for wires in chain_group:
                await b.peer.replicator.on_entries(conn, tuple(wires))
                await asyncio.sleep(0)

        tails = [[e.wire for e in chain[1:]] for chain in chains]
        heads = [[chain[0].wire] for chain in chains]
        await asyncio.gather(*(send(tails[i::4]) for i in range(4)))
        await asyncio.gather(*(send(heads[i::4]) for i in range(4)))
        await wait_all([b, c], {x.public_key: SEQS for x in authors}, 60)
        assert b.peer.stats()["released"] >= AUTHORS * (SEQS - 1) // 2
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert failures == [], [r.getMessage() for r in failures]
