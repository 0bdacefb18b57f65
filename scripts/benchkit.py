"""What the benchmark scripts share: one JSON object per line, the time and load they ran at, and the
`--hours --seeds --only` choice of simulated configurations.

A module beside them, imported as `scripts.benchkit` once a script has put the repository root on
sys.path (as each does for ledger/, swarm/ and node/); not a package of its own.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

Config = TypeVar("Config")


def emit(obj: Mapping[str, object]) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def now_utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages: docs/benchmarks.md states them beside every figure."""
    return [round(x, 2) for x in os.getloadavg()]


def sim_parser(description: str, *, hours: float, seeds: int = 5) -> argparse.ArgumentParser:
    """A parser with the options every simulated comparison takes: its script adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--hours", type=float, default=hours)
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--only", default=None, help="run one configuration by name")
    return parser


def parse_sim(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
              configs: Callable[[float], dict[str, Config]]) -> tuple[argparse.Namespace, dict[str, Config]]:
    """The arguments, and the configurations to run (all, or the one --only names); a bad value is
    the parser's one-line error."""
    args = parser.parse_args(argv)
    if args.hours <= 0 or args.seeds < 1:
        parser.error("--hours must be positive and --seeds at least 1")
    every = configs(args.hours)
    if args.only is not None and args.only not in every:
        parser.error(f"--only must be one of {', '.join(every)}")
    return args, {n: c for n, c in every.items() if args.only is None or n == args.only}
