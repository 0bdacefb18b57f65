"""The cost of paired replays (issue 13): prints one JSON object per line.

    python scripts/bench_paired.py [--runs N] [--budget-s S | --steps N]

A real ledger file, git repository and sandboxed CPU trainer in a temporary folder, driven by the
node's own verifier (node/research/replay.py's Replays.verify). First one timed run of the genesis
train.py at the budget (the default test budget, 2 s) fixes the step count and horizon every
replay uses, as a claim's would; --steps N fixes them instead (a machine too loaded for a 2 s run
to start within its allowance). The genesis claim is verified first (unpaired: it has no parent),
which makes it the class's best. Then, --runs times, interleaved so a load change hits all kinds:
  unpaired   one trainer run of the genesis on a fresh seed: what an unpaired replay runs (the first
             one is the genesis claim's real verify), what every replay cost before issue 13
  paired     the verify of a no-op edit of the genesis (a comment) claimed as a gain: the candidate
             and its parent on the drawn seed, parent not cached (two trainer runs)
  paired_hit a second no-op edit sealed with the first: the same seed and rows (both name the
             parent), so the parent run comes from the cache (one trainer run)
Lines: {"bench": "paired_replay", "kind": ..., "wall_s": ...} per verify, then "summary" with the
medians, and whether every paired no-op edit differed from its parent by exactly 0.
"""
from __future__ import annotations

import argparse
import asyncio
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

from ledger.bodies import Claim, Seal, Verify  # noqa: E402
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
# what each no-op edit claims to gain over the best: more than the screen's one run sd (0.04 / 3),
# less than a refutation's four, so every claim gets its round 0
NO_OP_CLAIMED_GAIN = 0.03
DEVICE = Device(None, "cpu", 0, "", CLASS)


def emit(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


async def bench(args: argparse.Namespace, tmp: Path) -> None:
    data = synthetic(tmp / "data", n_train=60_000, n_val=20_000, seed=5)
    genesis = ROOT / "trainer" / "train.py"
    if args.steps is None:
        timed = run_experiment(genesis, None, data, profile="cpu", budget_s=args.budget_s, seed=0)
        if timed.status != "ok" or timed.num_steps is None:
            raise SystemExit(f"the timed genesis run failed ({timed.reason}); on a loaded machine give --steps")
        steps, horizon, claimed = timed.num_steps, timed.planned_steps or timed.num_steps, float(timed.val_bpb or 0.0)
        emit({"bench": "timed_genesis", "budget_s": args.budget_s, "num_steps": steps, "planned_steps": horizon,
              "val_bpb": claimed})
    else:
        own = run_experiment(genesis, None, data, profile="cpu", budget_s=300, steps=args.steps, horizon=args.steps,
                             seed=0)
        if own.status != "ok" or own.val_bpb is None:
            raise SystemExit(f"the genesis run of {args.steps} steps failed ({own.reason})")
        steps, horizon, claimed = args.steps, args.steps, own.val_bpb
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

            async def claim(parent: bytes | None, value: float) -> bytes:
                nonlocal n
                n += 1
                commit = baseline if parent is None else await gitrepo.commit_file(
                    repo, baseline, {"train.py": source + b"\n# no-op %d\n" % n}, "no-op", "bench <b@autoswarm>", n)
                body = Claim(commit=commit, parent=parent, platform_class=CLASS, status="ok", val_bpb=value,
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
            # the baseline first: its verify is unpaired (no parent) and makes it the class's best
            base = await claim(None, claimed)
            await publish(verifier, Seal(claims=[base]))
            await timed_verify("unpaired", base)
            best = ledger.state.best.get(CLASS)
            if best is None:
                raise SystemExit("the baseline's replay disagreed with its own run: no best to pair against")
            cand, _ = await runs.materialize(DEVICE, baseline, None)
            for i in range(args.runs):
                if i:  # an unpaired replay's cost again: one trainer run on a fresh seed
                    started = time.monotonic()
                    await runs.run(DEVICE, "unpaired", cand, None, steps=steps, seed=1000 + i, horizon=horizon,
                                   eval_seed=i)
                    walls["unpaired"].append(time.monotonic() - started)
                    emit({"bench": "paired_replay", "kind": "unpaired", "wall_s": round(walls["unpaired"][-1], 2),
                          "load_1m": os.getloadavg()[0]})
                # two no-op edits claimed as a gain, sealed together: the same seed and rows, so the
                # second one's parent run comes from the cache (ledger/assign.py names the parent)
                batch = [await claim(baseline, best - NO_OP_CLAIMED_GAIN) for _ in range(2)]
                await publish(verifier, Seal(claims=batch))
                for kind, claim_id in zip(("paired", "paired_hit"), batch):
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
    args = p.parse_args(argv)
    if args.runs < 1 or args.budget_s < 1 or args.steps is not None and args.steps < 1:
        p.error("--runs, --budget-s and --steps must be positive")
    with tempfile.TemporaryDirectory(prefix="bench-paired-") as tmp:
        asyncio.run(bench(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
