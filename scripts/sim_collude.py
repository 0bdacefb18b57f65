"""A colluding minority against the real fold, seals and verifier policy (node/sim/collude.py).

Prints one JSON object per scenario: the share of identities colluding, the record credits minted
to colluders (all unearned: they research nothing; the goal is 0), the fees they took for vouches
they never ran and for replays they did run, and the share of GPU time spent on verification (the
goal: at most 0.15). `--no-copies` leaves out copying honest improvements (vouching and invented
claims only); `--trust-tolerance` sets the spec's trust_tolerance_bpb (default: the spec's noise).

    python scripts/sim_collude.py [--nodes 40] [--hours 8] [--share 0.1 --share 0.3] [--seed 1]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.sim.collude import CollusionConfig, simulate_collusion  # noqa: E402

MAX_VERIFICATION_SHARE = 0.15
DEFAULT_NODES = 40
DEFAULT_HOURS = 8.0
WIDE_TOLERANCE_BPB = 0.006  # about 3 sd of the difference of two runs at the simulator's noise (0.0015)


def scenario(nodes: int, hours: float, share: float, seed: int, copy: bool = True,
             tolerance: float | None = None, quorum: int = 2, assigned: int = 3) -> dict[str, object]:
    start = time.perf_counter()
    config = CollusionConfig(nodes=nodes, hours=hours, colluding=share, copy=copy,
                             trust_tolerance_bpb=tolerance, quorum=quorum, assigned=assigned)
    figures = simulate_collusion(config, random.Random(seed))
    # the goal: no record credit for an improvement they did not make (they make none), one truth;
    # fees for vouches they never ran are reported beside it (colluder_vouch_fee_ucr), not counted here
    succeeded = figures.colluder_record_ucr > 0 or not figures.folds_equal
    return {"attack": "colluding_minority", "level": "fold", "share": share, "copies": copy, "trust_tolerance_bpb": tolerance, "quorum": quorum,
            "assigned": assigned, "nodes": nodes, "hours": hours,
            "seed": seed, "succeeded": succeeded, "attacker_ucr": figures.colluder_record_ucr,
            "verification_share_ok": figures.verification_share <= MAX_VERIFICATION_SHARE,
            **dataclasses.asdict(figures), "elapsed_s": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES)
    parser.add_argument("--hours", type=float, default=DEFAULT_HOURS)
    parser.add_argument("--share", type=float, action="append")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trust-tolerance", type=float, default=None,
                        help="the spec's trust_tolerance_bpb (default: none, so its noise_bpb)")
    parser.add_argument("--quorum", type=int, default=2)
    parser.add_argument("--assigned", type=int, default=3)
    parser.add_argument("--no-copies", action="store_true", help="only vouching and invented claims")
    args = parser.parse_args(argv)
    failed = 0
    for share in args.share or [0.1, 0.3]:
        row = scenario(args.nodes, args.hours, share, args.seed, not args.no_copies,
                       args.trust_tolerance, args.quorum, args.assigned)
        failed += bool(row["succeeded"]) or not row["verification_share_ok"]
        print(json.dumps(row), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
