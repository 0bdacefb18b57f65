"""The SIGKILL test's victim: appends to a ledger until killed, printing every acknowledged entry.

    python -m tests.ledger.crash_writer PATH RUN

Four tasks publish posts concurrently (group commit) and one appends its own signed batches with
`append_wires` (the replication path). A line `ack <id hex> <seq>` is printed, flushed, only after
the append returned APPENDED, i.e. after its transaction committed.
"""
from __future__ import annotations

import asyncio
import sys

from ledger.entry import sign_entry
from ledger.store import Ledger, Status
from tests.ledger.factory import identity, make_spec, post

SPEC = make_spec(identity(400), [identity(401)])
PUBLISHERS = [identity(410 + k) for k in range(4)]
BATCHER = identity(420)
BATCH_ENTRIES = 16


def ack(entry_id: bytes, seq: int) -> None:
    sys.stdout.write(f"ack {entry_id.hex()} {seq}\n")
    sys.stdout.flush()


async def publish_forever(ledger: Ledger, run: str, k: int) -> None:
    n = 0
    while True:
        n += 1
        entry = await ledger.publish(PUBLISHERS[k], post(f"run {run} task {k} n {n}"), time_ms=n)
        ack(entry.id, entry.seq)


async def batch_forever(ledger: Ledger, run: str) -> None:
    while True:
        head = await ledger.head(BATCHER.public_key)
        seq, prev = (head.seq, head.id) if head else (0, None)
        entries = []
        for _ in range(BATCH_ENTRIES):
            seq += 1
            entry = sign_entry(BATCHER, swarm=SPEC.swarm_id, seq=seq, prev=prev, body=post(f"run {run}"), time_ms=seq)
            entries.append(entry)
            prev = entry.id
        outcomes = await ledger.append_wires([e.wire for e in entries])
        for entry, outcome in zip(entries, outcomes):
            if outcome.status is not Status.APPENDED:
                raise SystemExit(f"batch entry not appended: {outcome}")
            ack(entry.id, entry.seq)


async def main(path: str, run: str) -> None:
    async with Ledger.open(path, SPEC) as ledger, asyncio.TaskGroup() as tg:
        for k in range(len(PUBLISHERS)):
            tg.create_task(publish_forever(ledger, run, k), name=f"publisher-{k}")
        tg.create_task(batch_forever(ledger, run), name="batcher")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
