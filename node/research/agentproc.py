"""One run of an operator's coding-agent command, bounded in time, that leaves no process behind.

Theory of operation. The command is a shell line (`/bin/sh -c`), started in its own session, so
its process group is its own and a terminal's Ctrl-C reaches only the node. Its output goes to a
log file (never a pipe: an agent that prints a lot cannot stall on a full pipe while we wait).
When the run passes its timeout, or the owning task is cancelled (the node stops on SIGTERM,
SIGINT or SIGHUP: node/wiring.py, node/cli.py), every process of the tree is stopped: first
SIGTERM to the group and to every descendant found under /proc (an agent's tool may start its
own session, which a group signal misses), then after a grace period SIGKILL the same way.

What it does not cover: a SIGKILLed node runs no code, so an agent of its then lives on until it
exits by itself (the trainer watches its parent for that; an arbitrary agent cannot be made to).

Knows nothing of git, the ledger or the brief.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from node.errors import NodeError

TERM_GRACE_S = 5.0          # between SIGTERM and SIGKILL: an agent may save its session
REAP_WAIT_S = 10.0          # for the SIGKILLed shell to be reaped
LOG_TAIL_BYTES = 2000       # of the agent's output, kept for the node's event line


class AgentFailed(NodeError):
    """The agent's command could not be started at all (no shell, a bad folder)."""


@dataclass(frozen=True, slots=True)
class AgentExit:
    timed_out: bool
    returncode: int | None      # None when it was killed for time
    wall_s: float
    log_tail: str               # the end of its stdout and stderr, for the operator


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, found by parent links in /proc (children before their children)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue   # gone meanwhile, or not ours to read
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def signal_tree(pid: int, sig: signal.Signals, known: list[int] | None = None) -> list[int]:
    """`sig` to the process group led by `pid` and to every descendant (those in other groups too),
    and to `known` ones found before (an exited parent's children no longer hang below it); returns
    every process it signalled besides the group."""
    below = list(dict.fromkeys([*(known or []), *descendants(pid)]))
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for child in below:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, sig)
    return below


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the tree, a grace period, then SIGKILL to whatever is left; bounded."""
    tree = signal_tree(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(TERM_GRACE_S):
            await proc.wait()
    signal_tree(proc.pid, signal.SIGKILL, tree)   # the shell may have exited while its children did not
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REAP_WAIT_S):
            await proc.wait()


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


async def run_agent(command: str, cwd: Path, env: Mapping[str, str], timeout_s: float, log: Path) -> AgentExit:
    """Runs `command` in `cwd` until it exits or `timeout_s` passes; cancelling the caller stops the
    whole tree before the cancellation goes on."""
    started = time.monotonic()
    try:
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", command, cwd=cwd, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        raise AgentFailed(f"cannot start the agent command: {exc}") from None
    try:
        async with asyncio.timeout(timeout_s):
            returncode = await proc.wait()
    except TimeoutError:
        await _stop(proc)
        return AgentExit(True, None, time.monotonic() - started, _tail(log))
    except BaseException:
        await asyncio.shield(_stop(proc))   # the node is stopping: the agent must not outlive it
        raise
    # the shell is gone; children it left running in the background go with it
    if descendants(proc.pid) or _group_alive(proc.pid):
        signal_tree(proc.pid, signal.SIGKILL)
    return AgentExit(False, returncode, time.monotonic() - started, _tail(log))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
