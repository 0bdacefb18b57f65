"""Nodes sharing one machine take turns for the trainer, in the order they asked."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from node.research.experiment import LOCK_POLL_S, machine_slot


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


async def test_two_slots_run_two_at_once_in_the_order_they_asked(tmp_path: Path) -> None:
    lock = tmp_path / "cpu.lock"
    inside, most, order = 0, 0, []
    release = asyncio.Event()

    async def run(n: int, asked: asyncio.Event, after: asyncio.Event | None) -> None:
        nonlocal inside, most
        if after is not None:
            await after.wait()
        async with machine_slot(lock, 2):
            inside += 1
            most = max(most, inside)
            order.append(n)
            asked.set()
            if n < 2:
                await release.wait()  # the first two hold their slots until a third has queued
            inside -= 1

    queued = [asyncio.Event() for _ in range(3)]
    async with asyncio.timeout(60):
        tasks = [asyncio.create_task(run(n, queued[n], queued[n - 1] if 0 < n < 2 else None)) for n in range(2)]
        await queued[1].wait()   # 0 and 1 both inside
        assert inside == 2
        third = asyncio.create_task(run(2, queued[2], None))
        await asyncio.sleep(10 * LOCK_POLL_S)  # ten polls: a third must not get in while two hold the slots
        assert inside == 2 and not queued[2].is_set()
        release.set()
        await asyncio.gather(*tasks, third)
    assert most == 2 and order == [0, 1, 2]
    assert not any((tmp_path / "cpu.lock.queue").iterdir())
