"""A claim's bundle is served only once the claim is sealed (node/bundlegate.py, issue 12): real
peers on 127.0.0.1 port 0, real ledgers, the seal arriving by gossip."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ledger.bodies import Job
from ledger.entry import Entry
from node.bundlegate import SealedBundles
from swarm.errors import PeerUnavailable
from tests.ledger import factory
from tests.swarm.swarmkit import SWARM, VERIFIER, Node, open_node, wait_connected, wait_heads

ALICE = factory.identity(501)
DIGEST, OTHER, JOB_DIGEST = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
KEPT = {DIGEST: b"the claim's bundle", OTHER: b"kept before its claim", JOB_DIGEST: b"a job's bundle"}


async def _kept(digest: bytes) -> bytes | None:
    return KEPT.get(digest)


@contextlib.asynccontextmanager
async def _pair(tmp_path: Path, wait_s: float) -> AsyncIterator[tuple[Node, Node, SealedBundles]]:
    """(server, fetcher, gate): the server serves KEPT through the gate; the fetcher dials it."""
    holder: list[SealedBundles] = []

    async def source(digest: bytes) -> bytes | None:
        return await holder[0](digest)

    async with open_node(tmp_path, bundle_source=source) as server:
        holder.append(SealedBundles(server.ledger, _kept, wait_s=wait_s))
        async with open_node(tmp_path, bootstrap=(server.address,)) as fetcher:
            yield server, fetcher, holder[0]


def _claim_with_bundle(feeds: factory.Feeds) -> Entry:
    body = dataclasses.replace(factory.claim(1, 1.5), bundle=DIGEST)
    return feeds.sign(ALICE, body)


async def test_a_claims_bundle_is_refused_until_its_seal_arrives_then_served(tmp_path: Path) -> None:
    async with _pair(tmp_path, wait_s=0.2) as (server, fetcher, _):
        await wait_connected(fetcher, 1, 10)
        feeds = factory.Feeds(SWARM)
        claim = _claim_with_bundle(feeds)
        await fetcher.ledger.append(claim)
        await wait_heads(server, {ALICE.public_key: 1}, 10)
        with pytest.raises(PeerUnavailable, match="404"):
            await fetcher.peer.fetch_bundle(server.address, DIGEST)  # claimed, not sealed
        with pytest.raises(PeerUnavailable, match="404"):
            await fetcher.peer.fetch_bundle(server.address, OTHER)   # kept, named by no claim
        seal = feeds.sign(VERIFIER, factory.seal(claim))            # the anchor's seal, by gossip
        await fetcher.ledger.append(seal)
        await wait_heads(server, {VERIFIER.public_key: 1}, 10)
        assert await fetcher.peer.fetch_bundle(server.address, DIGEST) == KEPT[DIGEST]


async def test_a_request_waits_for_a_seal_that_arrives_during_it(tmp_path: Path) -> None:
    async with _pair(tmp_path, wait_s=10.0) as (server, fetcher, gate):
        feeds = factory.Feeds(SWARM)
        claim = _claim_with_bundle(feeds)
        await server.ledger.append(claim)
        fetch = asyncio.create_task(fetcher.peer.fetch_bundle(server.address, DIGEST), name="fetch")
        async with asyncio.timeout(10):
            while not gate.claims:  # the request has indexed the claim and is waiting for its seal
                await asyncio.sleep(0.05)
        assert not fetch.done()
        await server.ledger.append(feeds.sign(VERIFIER, factory.seal(claim)))
        async with asyncio.timeout(10):
            assert await fetch == KEPT[DIGEST]


async def test_a_jobs_bundle_is_served_without_a_seal(tmp_path: Path) -> None:
    async with _pair(tmp_path, wait_s=0.2) as (server, fetcher, gate):
        job = Job(job_type="train", commit=factory.commit(9), bundle=JOB_DIGEST, args=[], platform_class=factory.CLASS,
                  max_gpu_s=60, price_ucr_per_gpu_s=1, expires_ms=10**13)
        await server.ledger.append(factory.Feeds(SWARM).sign(ALICE, job))
        assert await fetcher.peer.fetch_bundle(server.address, JOB_DIGEST) == KEPT[JOB_DIGEST]
        assert gate.refused == 0


async def test_a_node_holding_no_entries_serves_nothing(tmp_path: Path) -> None:
    async with _pair(tmp_path, wait_s=0.0) as (server, fetcher, gate):
        for digest in KEPT:
            with pytest.raises(PeerUnavailable):
                await fetcher.peer.fetch_bundle(server.address, digest)
        assert gate.refused == len(KEPT)
