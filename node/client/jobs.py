"""`python -m node job submit|list|show|cancel`: buy GPU time from the swarm with earned credits.

    job submit FILE --max-gpu-s N --price UCR [--steps N] [--seed N] [--class C] [--expires-s S]
    job list [--limit N] | job show ID | job cancel ID

node/cli.py parses them (`--home` and `--json` before or after the command; this module adds the
`job` subparser). Like the agent commands (node/client/agent.py; both use node/client/http.py)
every command is one call to the running node's local API (/api/node/jobs...). A job's log tail
was written by another node's run: it is shown indented, after an `[untrusted: ...]` mark. Errors
are one line on stderr; exit 0 done, 1 the node failed, 2 bad input (a refused request, such as a
price that is not positive).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.contract import MIN_PREFIX_HEX
from node.client.http import BadInput, Endpoint, NodeClient, block, clean, line, read_train_py, session

SUMMARY = "spend credits on other nodes' GPU time: job submit|list|show|cancel"


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


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def add_commands(subs: Any, common: argparse.ArgumentParser, parser_class: type[argparse.ArgumentParser]) -> None:
    """`job` and its four commands as subparsers of node/cli.py's tree."""
    job = subs.add_parser("job", parents=[common], help=SUMMARY, description="Buy GPU time from the swarm with credits.")
    sub = job.add_subparsers(dest="job_command", required=True, metavar="{submit,list,show,cancel}",
                             parser_class=parser_class)
    s = sub.add_parser("submit", parents=[common], help="run FILE (a train.py) on another node for credits")
    s.add_argument("target", metavar="FILE")
    s.add_argument("--max-gpu-s", type=_int, required=True, help="GPU-seconds at most (also the run's time budget)")
    s.add_argument("--price", type=_int, required=True, help="the most you pay per GPU-second, in ucr")
    s.add_argument("--steps", type=_int, default=None, help="train exactly N steps")
    s.add_argument("--seed", type=_int, default=None)
    s.add_argument("--class", dest="platform_class", default=None)
    s.add_argument("--expires-s", type=_int, default=None, help="seconds the job stays open (default 3600)")
    sub.add_parser("list", parents=[common], help="jobs, newest first").add_argument("--limit", type=_int, default=None)
    sub.add_parser("show", parents=[common], help="a job, its receipt and settlement").add_argument("target", metavar="ID")
    sub.add_parser("cancel", parents=[common], help="cancel an open job").add_argument("target", metavar="ID")


def invocation(a: argparse.Namespace, home: Path, as_json: bool) -> JobInvocation:
    return JobInvocation(command=a.job_command, home=home, as_json=as_json, target=getattr(a, "target", None),
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
    body: dict[str, Any] = {"train_py": read_train_py(inv.target or ""), "max_gpu_s": inv.max_gpu_s,
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
    runner = f" by {clean(str(j['executor']))[:14]}" if j.get("executor") else ""
    return line(f"{str(j['job'])[:12]} {mine}{j['status']:<9} {j['job_type']} {j['platform_class']} "
                f"<= {j['max_gpu_s']} GPU-s at {j['price_ucr_per_gpu_s']} ucr{runner}{used}{paid}")


def render_list(data: Mapping[str, Any]) -> list[str]:
    jobs = data["jobs"]
    return [job_line(j) for j in jobs] or ["no jobs yet"]


def render_show(data: Mapping[str, Any]) -> list[str]:
    lines = [job_line(data), f"  commit {data['commit']}  args {' '.join(map(str, data['args'])) or '-'}",
             f"  payer {clean(str(data['payer']))}  offers {data['offers']}  held {_amount(data.get('held_ucr'))}"]
    receipt = data.get("receipt")
    if receipt:
        lines.append(line(f"  receipt {receipt['status']} {receipt['gpu_s']} GPU-s  metrics "
                          + json.dumps(receipt["metrics"], sort_keys=True)))
        lines.append(f"  log tail [untrusted: from node {clean(str(receipt['author']))}]")
        lines += block(str(receipt.get("log_tail", "")), "    | ")[-20:]
    settle = data.get("settle")
    if settle:
        lines.append(line(f"  settled {settle['outcome']}: {_amount(settle['amount_ucr'])} to the executor; "
                          f"{settle['reason']}"))
    return lines


async def run(inv: JobInvocation, endpoint: Endpoint) -> tuple[Any, Any]:
    async with session() as http:
        client = NodeClient(endpoint, inv.home, http)
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
    if not MIN_PREFIX_HEX <= len(t) <= 64 or any(c not in "0123456789abcdef" for c in t):
        raise BadInput(f"not a job id: {clean(str(text))[:80]!r} ({MIN_PREFIX_HEX} to 64 hex digits)")
    return t
