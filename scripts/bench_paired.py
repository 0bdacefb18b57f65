"""The cost of paired replays (issue 13): prints one JSON object per line.

    python scripts/bench_paired.py [--runs N] [--budget-s S | --steps N] [--shared-seeds]

A real ledger file, git repository and sandboxed CPU trainer in a temporary folder, driven by the
node's own verifier (node/research/replay.py's Replays.verify). First one timed run of the genesis
train.py at the budget (the default test budget, 2 s) fixes the step count and horizon every
replay uses, as a claim's would; --steps N fixes them instead (a machine too loaded for a 2 s run
to start within its allowance). Then, --runs times, interleaved so a load change hits all kinds:
  unpaired   the verify of a genesis claim (no parent: one trainer run, what every replay cost before)
  paired     the verify of a no-op edit of the genesis (a comment): the candidate and its parent on
             the drawn seed, parent not cached (two trainer runs)
  paired_hit (--shared-seeds only) a second no-op edit sealed with the first; seeds and rows are then
             drawn per (seal, parent) instead of per claim, the change proposed for ledger/assign.py,
             so the parent run comes from the cache (one trainer run)
Lines: {"bench": "paired_replay", "kind": ..., "wall_s": ...} per verify, then "summary" with the
medians, and whether every paired no-op edit differed from its parent by exactly 0.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ledger import assign  # noqa: E402
from ledger.bodies import Claim, Seal, Verify  # noqa: E402
from ledger.fold import State  # noqa: E402
from ledger.keys import Identity  # noqa: E402
from ledger.spec import SwarmSpec, sign_spec  # noqa: E402
from ledger.store import Ledger  # noqa: E402
from node import home  # noqa: E402
from node.config import load_config  # noqa: E402
from node.display import Display  # noqa: E402
from node.home import DataInfo, Layout  # noqa: E402
from node.platform import Device  # noqa: E402
from node.research.history import History  # noqa: E402
from node.research.replay import Replays  # noqa: E402
from node.research.runs import Runs, Stats  # noqa: E402
from swarm import gitrepo  # noqa: E402
from swarm.gitrepo import Repository  # noqa: E402
from trainer.data_format import synthetic  # noqa: E402
from trainer.harness import harness_hash  # noqa: E402
from trainer.runner import run_experiment  # noqa: E402

CLASS = "cpu-bench"
DEVICE = Device(None, "cpu", 0, "", CLASS)


def emit(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


def _per_parent(history: History):  # type: ignore[no-untyped-def]
    """Seeds and rows drawn from (seal, parent[, key, round]) instead of (seal, claim, ...): the
    --shared-seeds proposal (the fold's ClaimInfo has no parent, so the history gives it)."""
    def material(state: State, claim_id: bytes, domain: bytes, rest: bytes) -> bytes | None:
        seal_id = state.seals.get(claim_id)
        if seal_id is None:
            return None
        return hashlib.sha256(domain + seal_id + (history.claims[claim_id].body.parent or claim_id) + rest).digest()

    def train(state: State, claim_id: bytes, key: bytes, round_index: int) -> int | None:
        digest = material(state, claim_id, b"bench/train\x00", key + round_index.to_bytes(4, "big"))
        return None if digest is None else int.from_bytes(digest[:4], "big") >> 1

    def rows(state: State, claim_id: bytes) -> int | None:
        digest = material(state, claim_id, b"bench/rows\x00", b"")
        return None if digest is None else int.from_bytes(digest[:8], "big") >> 1
    return train, rows


async def bench(args: argparse.Namespace, tmp: Path) -> None:
    data = synthetic(tmp / "data", n_train=60_000, n_val=20_000, seed=5)
    genesis = ROOT / "trainer" / "train.py"
    if args.steps is None:
        timed = run_experiment(genesis, None, data, profile="cpu", budget_s=args.budget_s, seed=0)
        if timed.status != "ok" or timed.num_steps is None:
            raise SystemExit(f"the timed genesis run failed ({timed.reason}); on a loaded machine give --steps")
        steps, horizon, claimed = timed.num_steps, timed.planned_steps or timed.num_steps, timed.val_bpb
        emit({"bench": "timed_genesis", "budget_s": args.budget_s, "num_steps": steps, "planned_steps": horizon,
              "val_bpb": claimed})
    else:
        steps, horizon, claimed = args.steps, args.steps, 7.5
    me, verifier = Identity.from_seed(b"r" * 32), Identity.from_seed(b"v" * 32)
    async with Repository.open(tmp / "repo") as repo:
        baseline = await home.ensure_baseline(repo)
        spec = sign_spec(me, SwarmSpec(
            name="bench-paired", creator=me.public_key, created_ms=0, harness_hash=bytes.fromhex(harness_hash()),
            dataset_hash=b"d" * 32, tokenizer_hash=b"t" * 32, time_budget_s=args.budget_s, metric="val_bpb",
            direction="min", baseline_commit=baseline, allowed_files=["train.py"], platform_classes=[CLASS],
            verifiers=[verifier.public_key], quorum=1, noise_bpb={CLASS: 0.04}, record_ucr_per_bpb=10**9,
            verify_ucr=1000))
        async with Ledger.open(tmp / "ledger.sqlite", spec) as ledger:
            history, clock_ms = History(), [1_000_000]
            if args.shared_seeds:
                assign.replay_train_seed, assign.replay_eval_seed = _per_parent(history)  # type: ignore[assignment]

            async def publish(who: Identity, body: object) -> object:
                clock_ms[0] += 1
                entry = await ledger.publish(who, body, time_ms=clock_ms[0])  # type: ignore[arg-type]
                await history.sync(ledger)
                return entry

            async def have(commit: bytes) -> bool:
                return await gitrepo.has_commit(repo, commit)

            # the node's budget only bounds the replays here (their steps are fixed): generous, so a
            # loaded machine never makes one inconclusive
            config = load_config(["--home", str(tmp / "home"), "--profile", "cpu", "--budget-s", "300"], {})
            display = Display(io.StringIO(), tty=False)
            runs = Runs(config, repo, Layout(tmp / "home"), DataInfo(data.root, b"m" * 32, b"t" * 32), display,
                        tmp / "scratch", time.time, harness_hash())
            replays = Replays(config, ledger, history, me, verifier, runs, Stats(), display, publish,  # type: ignore[arg-type]
                              have, time.time)
            source = await gitrepo.read_file(repo, baseline, "train.py")
            n = 0

            async def claim(parent: bytes | None) -> bytes:
                nonlocal n
                n += 1
                commit = baseline if parent is None else await gitrepo.commit_file(
                    repo, baseline, {"train.py": source + b"\n# no-op %d\n" % n}, "no-op", "bench <b@autoswarm>", n)
                body = Claim(commit=commit, parent=parent, platform_class=CLASS, status="ok", val_bpb=claimed,
                             num_steps=steps, planned_steps=horizon, seed=0, training_s=1.0, wall_s=2.0,
                             peak_vram_mb=0.0, loss_curve=[], diff_summary="", message="", bundle=None)
                return (await publish(me, body)).id  # type: ignore[attr-defined,no-any-return]

            async def timed_verify(kind: str, claim_id: bytes) -> Verify:
                record = history.claims[claim_id]
                started = time.monotonic()
                await replays.verify(DEVICE, verifier, record)
                wall_s = time.monotonic() - started
                (vid,) = [v for v, info in ledger.state.verifies.items() if info.claim == claim_id]
                entry = await ledger.get(vid)
                assert entry is not None and isinstance(entry.body, Verify)
                walls.setdefault(kind, []).append(wall_s)
                emit({"bench": "paired_replay", "kind": kind, "wall_s": round(wall_s, 2), "seed": entry.body.seed,
                      "val_bpb": entry.body.val_bpb, "parent_val_bpb": entry.body.parent_val_bpb,
                      "load_1m": os.getloadavg()[0]})
                return entry.body

            walls: dict[str, list[float]] = {}
            diffs: list[float] = []
            for _ in range(args.runs):
                batch = [await claim(None), await claim(baseline)] + ([await claim(baseline)] if args.shared_seeds else [])
                await publish(verifier, Seal(claims=batch))
                await timed_verify("unpaired", batch[0])
                for kind, claim_id in zip(("paired", "paired_hit"), batch[1:]):
                    v = await timed_verify(kind, claim_id)
                    if v.val_bpb is not None and v.parent_val_bpb is not None:
                        diffs.append(v.val_bpb - v.parent_val_bpb)
            medians = {kind: round(statistics.median(w), 2) for kind, w in walls.items()}
            emit({"bench": "summary", "runs": args.runs, "budget_s": args.budget_s, "num_steps": steps,
                  "median_wall_s": medians, "paired_over_unpaired": round(medians["paired"] / medians["unpaired"], 2),
                  "no_op_diffs_all_zero": bool(diffs) and all(d == 0.0 for d in diffs),
                  "parent_cache_hits": replays.stats.parent_cache_hits,
                  "parent_cache_misses": replays.stats.parent_cache_misses, "machine": platform.processor() or
                  platform.machine(), "cpus": os.cpu_count(), "load_1m": os.getloadavg()[0]})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="verifies of each kind (medians over them)")
    p.add_argument("--budget-s", type=int, default=2, help="the timed genesis run's budget: fixes the replays' steps")
    p.add_argument("--steps", type=int, default=None,
                   help="replay this many steps (horizon the same) instead of timing a genesis run at --budget-s")
    p.add_argument("--shared-seeds", action="store_true",
                   help="draw seeds and rows per (seal, parent), so a second claim hits the parent cache")
    args = p.parse_args(argv)
    if args.runs < 1 or args.budget_s < 1 or args.steps is not None and args.steps < 1:
        p.error("--runs, --budget-s and --steps must be positive")
    with tempfile.TemporaryDirectory(prefix="bench-paired-") as tmp:
        asyncio.run(bench(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
