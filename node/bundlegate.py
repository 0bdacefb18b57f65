"""The peer's bundle source, gated: a claim's bundle is served only once the claim is sealed.

Why (issue 12, the copy attack). A copier who could read an honest improvement's code the moment
its claim appears would claim a copy at once and race the original through sealing and
verification for the record. Served only after a seal, the code reaches a copier once the
original is sealed and its verifiers are assigned: the copy starts a full seal later. This narrows
the race; it does not settle it, since records still walk in decision order (ledger/facts.py), and
a copy decided first is still a record. Walking records in seal order closes that (branch h-cp:
ledger/assign.py `order_key`; not merged, see issue 12's note). What a claim's diff summary says
is not gated here (docs/architecture.md).

Theory of operation. `SealedBundles` wraps a plain source (HOME/bundles, by hash). It keeps an
index, bundle hash -> claims naming it and the bundles of market jobs, read from the ledger's
committed claim and job entries as they come (bounded batches, one reader at a time). A request:
- a job's bundle is served (the market's bundles are no claims and race for no record);
- a claim's bundle is served once one of the claims naming it is sealed in the fold; a request
  that finds it unsealed waits for the seal up to `wait_s` (the requester saw the seal, perhaps
  a moment before we did), then is refused;
- any other hash is refused: a bundle kept before its claim is published (a researcher's own,
  written first) is nobody's business yet, and nobody can know its hash before the claim names it.
A refusal is the plain 404 of swarm/bundlehttp.py, so the requester tries its other peers.
Knows nothing of HTTP: swarm/bundlehttp.py calls it as any BundleSource.
"""
from __future__ import annotations

import asyncio
import time

from ledger.bodies import Claim, Job
from ledger.store import Ledger
from swarm.peer import BundleSource

SEAL_WAIT_S = 3.0        # a request for an unsealed claim's bundle waits this long for the seal
SEAL_POLL_S = 0.1        # how often that wait looks at the fold
INDEX_BATCH = 1000       # entries read per index query
INDEX_MAX_BATCHES = 64   # per request: a long backlog is read over several requests (refusing meanwhile)


class SealedBundles:
    def __init__(self, ledger: Ledger, read: BundleSource, *, wait_s: float = SEAL_WAIT_S) -> None:
        self.ledger, self.read, self.wait_s = ledger, read, wait_s
        self.claims: dict[bytes, set[bytes]] = {}   # bundle hash -> claim ids naming it
        self.jobs: set[bytes] = set()                # bundle hashes of market jobs
        self.refused = 0                             # requests refused: counted for the operator
        self._row = 0                                # the last ledger row indexed
        self._lock = asyncio.Lock()

    async def __call__(self, digest: bytes) -> bytes | None:
        await self._catch_up()
        if digest not in self.jobs and not await self._sealed(digest):
            self.refused += 1
            return None
        return await self.read(digest)

    async def _sealed(self, digest: bytes) -> bool:
        deadline = time.monotonic() + self.wait_s
        while True:
            state = self.ledger.state
            if any(claim_id in state.seals for claim_id in self.claims.get(digest, ())):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(SEAL_POLL_S)
            await self._catch_up()  # the claim itself may have arrived meanwhile

    async def _catch_up(self) -> None:
        async with self._lock:
            for _ in range(INDEX_MAX_BATCHES):
                rows = await self.ledger.entries_since(self._row, ["claim", "job"], INDEX_BATCH)
                for row, entry in rows:
                    body = entry.body
                    if isinstance(body, Claim) and body.bundle is not None:
                        self.claims.setdefault(body.bundle, set()).add(entry.id)
                    elif isinstance(body, Job) and body.bundle is not None:
                        self.jobs.add(body.bundle)
                    self._row = row
                if len(rows) < INDEX_BATCH:
                    return
