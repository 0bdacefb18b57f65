"""The command line: `python -m node [run|status] [options]`.

Thin: build the NodeConfig, hand it to node/wiring.py or node/status.py, and turn every error a
person can cause or fix (bad arguments, a bad config, a busy home, a missing sandbox, a broken
ledger file) into one line on stderr. Exit statuses: 0 done or stopped cleanly, 1 a failure
while running, 2 bad input. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence

from ledger.errors import LedgerError
from swarm.errors import SwarmError

from node.client import agent as agentcli
from node.sim import demo
from node.client import jobs as jobcli
from node import status
from node.config import load_config
from node.display import Display
from node.errors import ConfigError, NodeError
from node.wiring import serve

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
_READABLE = (NodeError, LedgerError, SwarmError, OSError)


def _readable(exc: BaseException) -> BaseException | None:
    """The first error in `exc` (or in its exception groups) that reads as one line."""
    if isinstance(exc, _READABLE):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _readable(inner)
            if found is not None:
                return found
    return None


def _agent_command(args: list[str]) -> bool:
    """`python -m node frontier ...` or `python -m node --home H frontier ...`: the agent CLI's."""
    first = args[2] if args[:1] == ["--home"] and len(args) > 2 else args[0] if args else ""
    return first in agentcli.AGENT_COMMANDS


def _fail(exc: BaseException) -> int:
    print(f"node: {exc}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT if isinstance(exc, ConfigError) else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["demo"]:
            return demo.main(args[1:])
        if args[:1] == ["job"] or (args[:1] == ["--home"] and args[2:3] == ["job"]):
            return jobcli.main(args[:2] + args[3:] if args[:1] == ["--home"] else args[1:])
        if _agent_command(args):
            return agentcli.main(args)
        config = load_config(args, os.environ)
        if config.command == "status":
            print(json.dumps(asyncio.run(status.collect(config)), indent=1, sort_keys=True))
            return EXIT_OK
        display = Display()
        research = asyncio.run(serve(config, display))
        if research is not None:
            overheads = research.stats.overheads_s
            mean = sum(overheads) / len(overheads) if overheads else 0.0
            display.event(f"done: {research.stats.experiments} experiments, {research.stats.verifications} "
                          f"verifications, node overhead {mean:.2f} s per experiment")
        return EXIT_OK
    except KeyboardInterrupt:  # before the loop installed its handlers
        print("node: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:
        found = _readable(exc)
        if found is None:
            raise
        return _fail(found)
