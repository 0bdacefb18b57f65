"""The command line: one argparse tree behind `python -m node`.

    python -m node [run] [--home H] [--profile P] [--budget-s S] [--max-experiments N]
                         [--bootstrap HOST:PORT]... [--listen HOST:PORT] [--advertise HOST:PORT] [--api HOST:PORT]
    python -m node status | demo | job {submit,list,show,cancel} | agent-key NAME | frontier | ...

`run` is the command when none is given. `--home` and `--json` go before or after any command
(their defaults are left out of the namespace, so a subcommand's parser never overwrites what the
top one read); the run options are refused on the other commands. The commands' arguments are
defined beside their code: config.py (run), client/agent.py, client/jobs.py, sim/demo.py.

Thin: build the NodeConfig, hand it to node/wiring.py or node/status.py, or call a client, and turn
every error a person can cause or fix (bad arguments, a bad config, a busy home, a missing sandbox,
an unreachable bootstrap peer, a broken ledger file) into one line on stderr that says what to do.
Exit statuses: 0 done or stopped cleanly, 1 a failure while running, 2 bad input. Anything else is
a bug and keeps its traceback. The heavy modules (wiring, status, demo) are imported only by the
commands that use them, so an agent's `python -m node frontier` starts quickly.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ledger.errors import LedgerError
from swarm.errors import SwarmError

from node import home
from node.client import agent, jobs
from node.contract import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from node.client.http import CliError, Endpoint, load_endpoint, print_answer, say_error
from node.config import RUN_OPTIONS, Args, add_run_options, configure, run_args
from node.display import Display
from node.errors import ConfigError, NodeError, SetupError

BOOTSTRAP_PROBE_S = 10.0   # a bootstrap address that takes longer to accept a connection is unreachable
_READABLE = (NodeError, LedgerError, SwarmError, OSError)
DESCRIPTION = ("Run an autoswarm node (the default command) and read or drive it: the agent commands, "
               "the credits market, a demo swarm. --home and --json go before or after the command.")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one readable line instead of usage and exit
        raise ConfigError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--home", type=Path, default=argparse.SUPPRESS,
                        help="the node's folder (default $AUTOSWARM_HOME, else ~/.autoswarm)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    top = _Parser(prog="python -m node", description=DESCRIPTION, parents=[common])
    add_run_options(top)
    subs = top.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=_Parser)
    add_run_options(subs.add_parser("run", parents=[common], help="research forever (the default command)",
                                    description="Research forever; Ctrl-C stops cleanly and a restart resumes."))
    subs.add_parser("status", parents=[common], help="the ledger's state as JSON: best per class, records, balances",
                    description="The home's ledger as JSON, read beside a running node or without one.")
    agent.add_commands(subs, common)
    jobs.add_commands(subs, common, _Parser)
    _add_demo(subs.add_parser("demo", help="a swarm of nodes on loopback until a verified, minted record",
                              description="A local swarm of N nodes until one verified, minted record and a "
                                          "settled job (node/sim/demo.py)."))
    return top


def _add_demo(p: argparse.ArgumentParser) -> None:
    # here rather than in node/sim/demo.py, whose imports (the fold, the web server) would slow every command
    p.add_argument("--nodes", type=_bounded(2, 8), default=3, help="nodes to start (default 3)")
    p.add_argument("--budget-s", dest="demo_budget_s", type=_bounded(1, 300), default=20,
                   help="the demo swarm's training budget in seconds (default 20): each run trains 18 steps within it")
    p.add_argument("--timeout-s", type=_bounded(60, 24 * 3600), default=1800, help="give up after this long")
    p.add_argument("--dir", type=Path, default=None, help="folder for the nodes' homes (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the folder afterwards")


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value
    return parse


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


def _fail(exc: BaseException) -> int:
    if isinstance(exc, CliError):
        return say_error(exc)
    print(f"node: {exc}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT if isinstance(exc, ConfigError) else EXIT_FAILED


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if env is None else env
    try:
        try:
            a = build_parser().parse_args(args)
        except SystemExit as done:  # --help
            return done.code if isinstance(done.code, int) else EXIT_OK
        return _dispatch(a, environ)
    except KeyboardInterrupt:  # before a loop installed its handlers
        print("node: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:
        found = _readable(exc)
        if found is None:
            raise
        return _fail(found)


def _dispatch(a: argparse.Namespace, env: Mapping[str, str]) -> int:
    command = a.command or "run"
    given = [f"--{name.replace('_', '-')}" for name in RUN_OPTIONS if hasattr(a, name)]
    if command != "run" and given:
        option = "--api" if given[0] == "--api-listen" else given[0]
        raise ConfigError(f"python -m node: {option} is an option of `python -m node run`, not of `{command}`")
    folder = a.home.expanduser().absolute() if getattr(a, "home", None) else home.default_home(env)
    as_json = bool(getattr(a, "json", False))
    if command == "run":
        return _run(run_args(a, "run", folder))
    if command == "status":
        return _status(run_args(a, "status", folder))
    if command == "demo":
        from node.sim import demo
        return demo.main(a)
    if command == "job":
        inv = jobs.invocation(a, folder, as_json)
        return _client(lambda endpoint: jobs.run(inv, endpoint), folder, as_json)
    inv2 = agent.invocation(a, folder, as_json)
    return _client(lambda endpoint: agent.run(inv2, endpoint), folder, as_json)


def _client(call: Callable[[Endpoint], Coroutine[Any, Any, tuple[Any, Any]]], folder: Path, as_json: bool) -> int:
    try:
        data, render = asyncio.run(call(load_endpoint(folder)))
        print_answer(data, render, as_json)
    except CliError as exc:
        return say_error(exc)
    return EXIT_OK


def _status(args: Args) -> int:
    from node import status
    print(json.dumps(asyncio.run(status.collect(configure(args))), indent=1, sort_keys=True))
    return EXIT_OK


def _run(args: Args) -> int:
    config = configure(args)
    home.lock_home(config.home).close()  # a busy home fails here, before its peer port is chosen again
    if args.listen is None:
        config = dataclasses.replace(config, listen=home.stable_listen(config.home, config.listen))
    if config.bootstrap and home.joined_spec(home.Layout(config.home)) is None:
        asyncio.run(_reachable(config.bootstrap))
    display = Display()
    ledger = home.current_ledger(config.home)
    display.event(f"starting the node in {config.home}: finding devices, preparing data (the first start takes "
                  f"longest); its ledger: {ledger} (`python -m ledger audit {ledger}`)")
    from node.wiring import serve  # the research loop, the peer, the trainer's harness: imported for `run` only
    _hangup_stops()
    research = asyncio.run(serve(config, display))
    if research is not None:
        overheads = research.stats.overheads_s
        mean = sum(overheads) / len(overheads) if overheads else 0.0
        display.event(f"done: {research.stats.experiments} experiments, {research.stats.verifications} "
                      f"verifications, node overhead {mean:.2f} s per experiment")
    return EXIT_OK


def _hangup_stops() -> None:
    """A closed terminal (SIGHUP) stops the node as SIGTERM does: node/wiring.py's handler then
    kills the trainer and closes the ledger, where SIGHUP's default would leave the trainer running."""
    signal.signal(signal.SIGHUP, lambda signum, frame: os.kill(os.getpid(), signal.SIGTERM))


async def _reachable(addresses: Sequence[str]) -> None:
    """Fails in one line, before the data is prepared, when no bootstrap address accepts a connection."""
    problems = []
    for addr in addresses:
        host, _, port = addr.rpartition(":")
        try:
            async with asyncio.timeout(BOOTSTRAP_PROBE_S):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            writer.close()
            await writer.wait_closed()
            return
        except TimeoutError:
            problems.append(f"{addr} did not answer within {BOOTSTRAP_PROBE_S:.0f} s")
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's strerror repeats the address
            problems.append(f"{addr}: {why.lower()}")
    raise SetupError(f"cannot reach the bootstrap peer ({'; '.join(problems)}): check the address, and that a node "
                     f"runs there (it prints `peer HOST:PORT` when it starts)")
