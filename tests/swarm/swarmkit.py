"""Shared helpers for swarm tests: a test swarm, nodes (ledger + peer) in tmp dirs, convergence waits."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.keys import Identity
from ledger.store import Ledger
from swarm.peer import BundleSource, Peer, PeerConfig
from tests.ledger import factory

CREATOR = factory.identity(0)
VERIFIER = factory.identity(1)
SPEC = factory.make_spec(CREATOR, [VERIFIER])
SWARM = SPEC.swarm_id
_counter = itertools.count(100)

# Fast test timings: anti-entropy and dialing every fraction of a second. Every test node dials
# from 127.0.0.1, so the per-address and per-subnet slot limits are lifted here, and so is the
# ban of a banned peer's address (it would refuse every later test peer); the tests of those
# limits (test_admission.py, test_flood_ban.py) set them back to the defaults.
FAST = dict(anti_entropy_interval_s=0.5, dial_interval_s=0.1, ping_interval_s=1.0, ingest_batch_wires=63,
            max_inbound_per_addr=64, max_inbound_per_subnet=64, max_half_open=32, addr_ban_s=0.0)
PORT_DEFAULTS = dict(max_inbound_per_addr=4, max_inbound_per_subnet=8, max_half_open=48)


@dataclass
class Node:
    peer: Peer
    ledger: Ledger
    identity: Identity

    @property
    def address(self) -> str:
        return self.peer.address


@contextlib.asynccontextmanager
async def open_node(tmp: Path, *, identity: Identity | None = None, bundle_source: BundleSource | None = None,
                    **config: Any) -> AsyncIterator[Node]:
    identity = identity or factory.identity(next(_counter))
    settings = dict(FAST)
    settings.update(config)
    path = tmp / f"{identity.node_id[:12]}.ledger"
    async with (Ledger.open(path, SPEC) as ledger,
                Peer.open(PeerConfig(**settings), ledger, identity, bundle_source=bundle_source) as peer):
        yield Node(peer, ledger, identity)


async def wait_heads(node: Node, expected: dict[bytes, int], timeout_s: float) -> None:
    """Waits until the node's ledger holds at least `expected` {author: seq}."""

    async def holds() -> bool:
        heads = await node.ledger.heads()
        return all(heads.get(a, 0) >= s for a, s in expected.items())

    await node.peer.wait_until(holds, timeout_s)


async def wait_all(nodes: list[Node], expected: dict[bytes, int], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        await asyncio.gather(*(wait_heads(n, expected, timeout_s) for n in nodes))


async def wait_connected(node: Node, count: int, timeout_s: float) -> None:
    await node.peer.wait_until(lambda: len(node.peer.connected()) >= count, timeout_s)


# -- big posts, as in a flood (test_spam.py, test_flood_ban.py)

POST_TEXT = "x" * 8000   # an 8 KB post, as in issue 14's flood


def big_posts(keys: list[Identity], per_key: int) -> list[bytes]:
    """`per_key` signed 8 KB posts by each key, as wires, round-robin over the keys."""
    feeds = factory.Feeds(SWARM)
    return [feeds.sign(k, factory.post(POST_TEXT)).wire for _ in range(per_key) for k in keys]


async def hold_big_posts(node: Node, author: Identity, count: int) -> None:
    """Puts `count` 8 KB posts by `author` in the node's ledger, as if gossiped before."""
    feeds = factory.Feeds(SWARM)
    for _ in range(count):
        result = await node.ledger.append(feeds.sign(author, factory.post(POST_TEXT)))
        assert result.status.value == "appended", result
