"""Ed25519 signature checks spread over every core.

One core checks roughly 9-15k signatures/s; replication batches and audits need more, so wires
are checked in chunks by a process pool. Small batches stay in-process: a round trip to a worker
costs more than a few checks.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType

from ledger.entry import check_signature
from ledger.errors import InvalidEntry

INLINE_BELOW = 64  # batches smaller than this are checked in the caller's process
CHUNK = 512


def _check_chunk(wires: Sequence[bytes]) -> list[str | None]:
    out: list[str | None] = []
    for wire in wires:
        try:
            check_signature(wire)
            out.append(None)
        except InvalidEntry as exc:
            out.append(str(exc))
    return out


class SignaturePool:
    """A process pool for signature checks; `check` returns None per good wire, else the reason."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> SignaturePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> SignaturePool:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        return self._pool

    def _chunks(self, wires: Sequence[bytes]) -> list[Sequence[bytes]]:
        size = max(1, min(CHUNK, -(-len(wires) // self.workers)))
        return [wires[i : i + size] for i in range(0, len(wires), size)]

    def check(self, wires: Sequence[bytes]) -> list[str | None]:
        if self.workers == 1 or len(wires) < INLINE_BELOW:
            return _check_chunk(wires)
        results: list[str | None] = []
        for part in self._executor().map(_check_chunk, self._chunks(wires)):
            results.extend(part)
        return results

    async def acheck(self, wires: Sequence[bytes]) -> list[str | None]:
        if self.workers == 1 or len(wires) < INLINE_BELOW:
            return await asyncio.to_thread(_check_chunk, wires)
        loop = asyncio.get_running_loop()
        pool = self._executor()
        parts = await asyncio.gather(*(loop.run_in_executor(pool, _check_chunk, c) for c in self._chunks(wires)))
        return [r for part in parts for r in part]
