"""`python -m node job submit|list|show|cancel`: buy GPU time from the swarm with earned credits.

    job submit FILE --max-gpu-s N --price UCR [--steps N] [--seed N] [--class C] [--expires-s S]
    job list [--limit N] | job show ID | job cancel ID

Each takes `--home HOME` (default $AUTOSWARM_HOME, else ~/.autoswarm) and `--json`. Like the agent
CLI (node/client/agent.py, whose HTTP client and output rules it shares) every command is one call to
the running node's local API (/api/node/jobs...). A job's log tail was written by another node's
run: it is shown indented, after an `[untrusted: ...]` mark. Errors are one line on stderr; exit
0 done, 1 the node failed, 2 bad input (a refused request, such as a price that is not positive).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import aiohttp

from node.client.agent import (REQUEST_TIMEOUT_S, BadInput, NodeClient, _block, _clean, _line, _read_train_py,
                               load_endpoint, print_answer, run_command)
from node.contract import EXIT_OK

JOB_COMMANDS = ("submit", "list", "show", "cancel")


@dataclass(frozen=True, slots=True)
class JobInvocation:
    command: str
    home: Path
    as_json: bool
    target: str | None = None        # submit FILE, show/cancel ID
    max_gpu_s: int | None = None
    price: int | None = None
    steps: int | None = None
    seed: int | None = None
    platform_class: str | None = None
    expires_s: int | None = None
    limit: int | None = None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one readable line instead of usage and exit
        raise BadInput(f"{self.prog}: {message}")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> JobInvocation:
    p = _Parser(prog="python -m node job", description="Buy GPU time from the swarm with credits.")
    p.add_argument("--home", type=Path, default=None)
    p.add_argument("--json", action="store_true", dest="as_json")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("submit", help="run FILE (a train.py) on another node for credits")
    s.add_argument("target", metavar="FILE")
    s.add_argument("--max-gpu-s", type=_int, required=True, help="GPU-seconds at most (also the run's time budget)")
    s.add_argument("--price", type=_int, required=True, help="the most you pay per GPU-second, in ucr")
    s.add_argument("--steps", type=_int, default=None, help="train exactly N steps")
    s.add_argument("--seed", type=_int, default=None)
    s.add_argument("--class", dest="platform_class", default=None)
    s.add_argument("--expires-s", type=_int, default=None, help="seconds the job stays open (default 3600)")
    for name in ("list",):
        sub.add_parser(name).add_argument("--limit", type=_int, default=None)
    for name in ("show", "cancel"):
        sub.add_parser(name).add_argument("target", metavar="ID")
    for parser in list(sub.choices.values()):
        parser.add_argument("--json", action="store_true", dest="as_json_sub")
        parser.add_argument("--home", type=Path, default=None, dest="home_sub")
    a = p.parse_args(list(argv))
    home = a.home_sub or a.home or Path(env.get("AUTOSWARM_HOME") or Path.home() / ".autoswarm")
    return JobInvocation(command=a.command, home=Path(home).expanduser().absolute(),
                         as_json=a.as_json or a.as_json_sub, target=getattr(a, "target", None),
                         max_gpu_s=getattr(a, "max_gpu_s", None), price=getattr(a, "price", None),
                         steps=getattr(a, "steps", None), seed=getattr(a, "seed", None),
                         platform_class=getattr(a, "platform_class", None), expires_s=getattr(a, "expires_s", None),
                         limit=getattr(a, "limit", None))


def submit_body(inv: JobInvocation) -> dict[str, Any]:
    args: list[str] = []
    if inv.steps is not None:
        args += ["--steps", str(inv.steps)]
    if inv.seed is not None:
        args += ["--seed", str(inv.seed)]
    body: dict[str, Any] = {"train_py": _read_train_py(inv.target or ""), "max_gpu_s": inv.max_gpu_s,
                            "price_ucr_per_gpu_s": inv.price, "args": args}
    if inv.platform_class:
        body["platform_class"] = inv.platform_class
    if inv.expires_s is not None:
        body["expires_s"] = inv.expires_s
    return body


# -- rendering


def _amount(value: Any) -> str:
    return f"{value} ucr" if isinstance(value, int) else "-"


def job_line(j: Mapping[str, Any]) -> str:
    mine = "mine " if j.get("mine") else ""
    used = f" used {j['gpu_s']} GPU-s" if j.get("gpu_s") is not None else ""
    paid = f" paid {_amount(j.get('paid_ucr'))}" if j.get("paid_ucr") is not None else ""
    runner = f" by {_clean(str(j['executor']))[:14]}" if j.get("executor") else ""
    return _line(f"{str(j['job'])[:12]} {mine}{j['status']:<9} {j['job_type']} {j['platform_class']} "
                 f"<= {j['max_gpu_s']} GPU-s at {j['price_ucr_per_gpu_s']} ucr{runner}{used}{paid}")


def render_list(data: Mapping[str, Any]) -> list[str]:
    jobs = data["jobs"]
    return [job_line(j) for j in jobs] or ["no jobs yet"]


def render_show(data: Mapping[str, Any]) -> list[str]:
    lines = [job_line(data), f"  commit {data['commit']}  args {' '.join(map(str, data['args'])) or '-'}",
             f"  payer {_clean(str(data['payer']))}  offers {data['offers']}  held {_amount(data.get('held_ucr'))}"]
    receipt = data.get("receipt")
    if receipt:
        lines.append(_line(f"  receipt {receipt['status']} {receipt['gpu_s']} GPU-s  metrics "
                           + json.dumps(receipt["metrics"], sort_keys=True)))
        lines.append(f"  log tail [untrusted: from node {_clean(str(receipt['author']))}]")
        lines += _block(str(receipt.get("log_tail", "")), "    | ")[-20:]
    settle = data.get("settle")
    if settle:
        lines.append(_line(f"  settled {settle['outcome']}: {_amount(settle['amount_ucr'])} to the executor; "
                           f"{settle['reason']}"))
    return lines


async def run(inv: JobInvocation) -> tuple[Any, Any]:
    endpoint = load_endpoint(inv.home)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = NodeClient(endpoint, inv.home, session)
        if inv.command == "submit":
            return await client.post("/api/node/jobs", submit_body(inv)), lambda d: [job_line(d)]
        if inv.command == "list":
            return await client.get("/api/node/jobs", limit=inv.limit), render_list
        target = _job_id(inv.target)
        if inv.command == "show":
            return await client.get(f"/api/node/jobs/{target}"), render_show
        return await client.post(f"/api/node/jobs/{target}/cancel", {}), lambda d: [job_line(d)]


def _job_id(text: str | None) -> str:
    t = (text or "").strip().lower()
    if not 4 <= len(t) <= 64 or any(c not in "0123456789abcdef" for c in t):
        raise BadInput(f"not a job id: {_clean(str(text))[:80]!r} (4 to 64 hex digits)")
    return t


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    def body() -> int:
        inv = parse_args(argv, os.environ if env is None else env)
        data, render = asyncio.run(run(inv))
        print_answer(data, render, inv.as_json)
        return EXIT_OK
    return run_command(body)
