"""Nodes sharing one machine take turns for the trainer, in the order they asked."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from node.research.experiment import machine_slot


async def test_runs_take_turns_in_order_and_a_dead_holder_does_not_block(tmp_path: Path) -> None:
    lock = tmp_path / "cpu.lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=60)
    (tmp_path / "cpu.lock.queue").mkdir()
    (tmp_path / "cpu.lock.queue" / f"{0:020d}-{int(dead.stdout)}-0").touch()  # asked first, then died
    order: list[int] = []
    inside = 0

    async def run(n: int, asked: asyncio.Event, after: asyncio.Event | None) -> None:
        nonlocal inside
        if after is not None:
            await after.wait()
        async with machine_slot(lock):
            asked.set()
            inside += 1
            assert inside == 1  # one run at a time
            order.append(n)
            await asyncio.sleep(0.05)
            inside -= 1

    events = [asyncio.Event() for _ in range(4)]
    async with asyncio.timeout(60):
        # each asks once the one before it holds the machine: the order of asking is 0, 1, 2, 3
        await asyncio.gather(*(run(n, events[n], events[n - 1] if n else None) for n in range(4)))
    assert order == [0, 1, 2, 3]
    assert not any((tmp_path / "cpu.lock.queue").iterdir())  # every ticket gone, the dead one too
    async with machine_slot(None):
        pass
