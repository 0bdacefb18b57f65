"""Credits market latency on an idle loopback swarm; one JSON object per line, medians last.

    .venv/bin/python scripts/bench_market.py --rounds 10            # the market's own latency
    .venv/bin/python scripts/bench_market.py --rounds 3 --trainer   # with real CPU trainer runs

Two users and three executors, each a real ledger file and a real peer on 127.0.0.1 (the kit of
tests/node/marketkit.py). Each round a user submits a job (users alternate); figures:
  start_s     submission -> an executor starts the run: offers, the accept window, the escrow
              payment, its witnessing by peers (Peer.held_by) and the quiet time for fork proofs
              (goal <= 2 s)
  settle_s    the receipt's publication -> the job shows "settled" on every node (goal <= 5 s)
  total_s     submission -> settled everywhere
Without --trainer the executors' worker returns a result after --run-s seconds, so the figures
are the market's, not the trainer's. Rounds run one after another; the swarm is otherwise idle.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.bodies import Receipt  # noqa: E402
from node.research.experiment import RunResult  # noqa: E402
from node.market.loop import MarketConfig, Runner  # noqa: E402
from tests.ledger import factory  # noqa: E402
from tests.node.marketkit import MarketNode, earned_credits, make_spec, market_node, trainer_runner  # noqa: E402

GOALS = {"start_s": 2.0, "settle_s": 5.0}
WAIT_S = 600.0


def sleeping_runner(run_s: float) -> Runner:
    async def run(train_py: Path, budget_s: int, steps: int | None, seed: int, horizon: int | None) -> RunResult:
        await asyncio.sleep(run_s)
        return RunResult(status="ok", reason="", val_bpb=2.0, seed=seed, num_steps=steps or 1,
                         planned_steps=steps or 1, training_s=run_s, total_s=run_s, peak_vram_mb=0.0, loss_curve=(),
                         log_tail="", harness_hash="", wall_s=run_s)
    return run


async def wait_all(nodes: list[MarketNode], job: bytes, status: str) -> None:
    def seen(n: MarketNode) -> bool:
        info = n.ledger.state.jobs.get(job)
        return info is not None and info.status == status
    await asyncio.gather(*(n.peer.wait_until(lambda n=n: seen(n), WAIT_S) for n in nodes))  # type: ignore[misc]


async def bench(args: argparse.Namespace) -> None:
    users = [factory.identity(910), factory.identity(911)]
    execs = [factory.identity(920 + i) for i in range(3)]
    creator, verifier = factory.identity(900), factory.identity(901)
    with tempfile.TemporaryDirectory(prefix="bench-market-") as tmp_text:
        tmp = Path(tmp_text)
        if args.trainer:
            from trainer.data_format import synthetic
            data = synthetic(tmp / "data", n_train=60_000, n_val=20_000, seed=5)
            runner = trainer_runner(data.root, tmp / "scratch", tmp)
        else:
            runner = sleeping_runner(args.run_s)
        spec = await make_spec(tmp, creator, verifier)
        seed = await earned_credits(spec, verifier, users)
        pays = MarketConfig(offer=False, spot_check_rate=0.0)
        sells = MarketConfig(offer=True, price_ucr_per_gpu_s=50, spot_check_rate=0.0)
        async with contextlib.AsyncExitStack() as stack:
            nodes: list[MarketNode] = []
            for n, (who, config) in enumerate([(u, pays) for u in users] + [(e, sells) for e in execs]):
                boot = (nodes[0].peer.address,) if nodes else ()
                nodes.append(await stack.enter_async_context(market_node(
                    tmp, f"n{n}", who, spec, seed, config, bootstrap=boot,
                    runner=runner if config is sells else None)))
            await asyncio.gather(*(n.peer.wait_until(lambda n=n: len(n.peer.connected()) >= 2, 30)  # type: ignore[misc]
                                   for n in nodes))
            results: dict[str, list[float]] = {"start_s": [], "settle_s": [], "total_s": []}
            for r in range(args.rounds):
                user = nodes[r % 2]
                submitted = time.time()
                job = await user.submit(max_gpu_s=60, steps=5)
                await wait_all(nodes, job, "settled")
                settled = time.time()
                state = user.ledger.state
                receipt = await user.ledger.get(state.jobs[job].receipt)  # type: ignore[arg-type]
                executor = next(n for n in nodes if job in n.market.started)
                assert receipt is not None and isinstance(receipt.body, Receipt)
                row = {"round": r, "start_s": executor.market.started[job] - submitted,
                       "settle_s": settled - receipt.time_ms / 1000, "total_s": settled - submitted}
                for key, values in results.items():
                    values.append(row[key])
                print(json.dumps({"figure": "round", **{k: round(v, 4) if isinstance(v, float) else v
                                                        for k, v in row.items()}}), flush=True)
            for key, values in results.items():
                median = statistics.median(values)
                print(json.dumps({"figure": key, "median": round(median, 4), "max": round(max(values), 4),
                                  "runs": len(values), "goal": GOALS.get(key), "trainer": args.trainer,
                                  "ok": median <= GOALS[key] if key in GOALS else None,
                                  "python": platform.python_version()}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--run-s", type=float, default=0.5, help="the stub worker's run time (without --trainer)")
    p.add_argument("--trainer", action="store_true", help="run the real CPU trainer (5 steps) for each job")
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
