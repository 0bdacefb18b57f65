"""A swarm node in its own process, for the two-process test. Prints JSON lines on stdout.

    python -m tests.swarm.peer_process LEDGER SEED COUNT TOTAL [BOOTSTRAP]

Publishes COUNT posts, then reports once its ledger holds TOTAL entries, then serves until killed.
Beside its ledger it keeps a git repository holding the same genesis commit as every other such
process. A process with no BOOTSTRAP also commits a one-line change of train.py, serves its thin
bundle by hash and publishes a claim naming it; a process with a BOOTSTRAP pulls that bundle from
it, checks it and applies it to its own repository, and reports the commit it now holds.
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from ledger.bodies import Claim
from ledger.store import Ledger
from swarm import gitrepo
from swarm.bundles import apply_bundle, bundle_hash, make_bundle
from swarm.peer import Peer, PeerConfig
from tests.ledger import factory
from tests.swarm.swarmkit import FAST, SPEC

GENESIS = b"".join(b"LEARNING_RATE_%d = 0.%d\n" % (i, i) for i in range(400))
CHANGED = GENESIS.replace(b"LEARNING_RATE_7 = 0.7\n", b"LEARNING_RATE_7 = 0.9\n")
AUTHOR = "peer <peer@localhost>"


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(path: str, seed: int, count: int, total: int, bootstrap: tuple[str, ...]) -> None:
    bundles: dict[bytes, bytes] = {}

    async def serve_bundle(sha256: bytes) -> bytes | None:
        return bundles.get(sha256)

    config = PeerConfig(bootstrap=bootstrap, **FAST)  # type: ignore[arg-type]
    async with Ledger.open(Path(path), SPEC) as ledger, \
            gitrepo.Repository.open(Path(path).with_suffix(".git")) as repo, \
            Peer.open(config, ledger, factory.identity(seed), bundle_source=serve_bundle) as peer:
        base = await gitrepo.commit_file(repo, None, {"train.py": GENESIS}, "genesis", AUTHOR, 1_700_000_000)
        say(address=peer.address)
        if not bootstrap:
            child = await gitrepo.commit_file(repo, base, {"train.py": CHANGED}, "tune", AUTHOR, 1_700_000_060)
            data = await make_bundle(repo, child, [base])
            bundles[bundle_hash(data)] = data
            await peer.publish(Claim(
                commit=child, parent=base, platform_class="cpu-tiny", status="ok", val_bpb=1.5, num_steps=10,
                planned_steps=10, seed=1, training_s=1.0, wall_s=2.0, peak_vram_mb=0.0, loss_curve=[],
                diff_summary="LEARNING_RATE_7: 0.7 -> 0.9", message="", bundle=bundle_hash(data)))
        for i in range(count):
            await peer.publish(factory.post(f"process {seed} post {i}"))

        async def full() -> bool:
            return await ledger.count() >= total

        await peer.wait_until(full, 60.0)
        heads = await ledger.heads()
        fetched = []
        for claim_id in list(ledger.state.claims):
            entry = await ledger.get(claim_id)
            body = entry.body if entry is not None else None
            if not bootstrap or not isinstance(body, Claim) or body.bundle is None:
                continue
            data = await peer.fetch_bundle(bootstrap[0], body.bundle)
            if bundle_hash(data) != body.bundle:
                raise SystemExit("the bundle does not hash to what the claim names")
            await apply_bundle(repo, data, expect_commit=body.commit, allowed_paths=frozenset({"train.py"}))
            fetched.append({"commit": body.commit.hex(), "bytes": len(data),
                            "train_py_matches": await gitrepo.read_file(repo, body.commit, "train.py") == CHANGED})
        say(converged=await ledger.count(), heads={a.hex(): s for a, s in heads.items()}, bundles=fetched)
        await asyncio.Event().wait()  # serve until SIGKILL


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], int(a[1]), int(a[2]), int(a[3]), tuple(a[4:])))
