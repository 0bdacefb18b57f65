"""A swarm node in its own process, for the two-process test. Prints JSON lines on stdout.

    python -m tests.swarm.peer_process LEDGER SEED COUNT TOTAL [BOOTSTRAP]

Publishes COUNT posts, then reports once its ledger holds TOTAL entries, then serves until killed.
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from ledger.store import Ledger
from swarm.peer import Peer, PeerConfig
from tests.ledger import factory
from tests.swarm.swarmkit import FAST, SPEC


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(path: str, seed: int, count: int, total: int, bootstrap: tuple[str, ...]) -> None:
    config = PeerConfig(bootstrap=bootstrap, **FAST)  # type: ignore[arg-type]
    async with Ledger.open(Path(path), SPEC) as ledger, Peer.open(config, ledger, factory.identity(seed)) as peer:
        say(address=peer.address)
        for i in range(count):
            await peer.publish(factory.post(f"process {seed} post {i}"))

        async def full() -> bool:
            return await ledger.count() >= total

        await peer.wait_until(full, 60.0)
        heads = await ledger.heads()
        say(converged=await ledger.count(), heads={a.hex(): s for a, s in heads.items()})
        await asyncio.Event().wait()  # serve until SIGKILL


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], int(a[1]), int(a[2]), int(a[3]), tuple(a[4:])))
