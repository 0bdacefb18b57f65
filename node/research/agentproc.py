"""One run of an operator's coding-agent command, bounded in time, that leaves no process behind.

Theory of operation. The command is a shell line (`/bin/sh -c`), started under a small watchdog
(this module run as `python -m node.research.agentproc`) in a session of its own, so its process
group is its own and a terminal's Ctrl-C reaches only the node. Its output goes to a
log file (never a pipe: an agent that prints a lot cannot stall on a full pipe while we wait).
When the run passes its timeout, or the owning task is cancelled (the node stops on SIGTERM,
SIGINT or SIGHUP: node/wiring.py, node/cli.py), every process of the tree is stopped: first
SIGTERM to the group and to every descendant found under /proc (an agent's tool may start its
own session, which a group signal misses), then after a grace period SIGKILL the same way.

A SIGKILLed node runs no code, so the watchdog stands in for it: Linux sends the watchdog SIGTERM
when the node dies (prctl PR_SET_PDEATHSIG; a node gone before that is seen by its parent pid),
and the watchdog, a child subreaper (PR_SET_CHILD_SUBREAPER: every orphan of the tree, even one
that left the session, becomes its child and stays findable), stops the tree the same way: SIGTERM,
the grace period, SIGKILL. Death signals only cover the process that asked, which is why the
shell and the agent need a watchdog rather than asking themselves. The watchdog also kills what
the shell left running in the background when it exits, then exits with the shell's status.

Knows nothing of git, the ledger or the brief.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from node.errors import NodeError

TERM_GRACE_S = 5.0          # between SIGTERM and SIGKILL: an agent may save its session
REAP_WAIT_S = 10.0          # for the SIGKILLed shell to be reaped
LOG_TAIL_BYTES = 2000       # of the agent's output, kept for the node's event line
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36    # linux/prctl.h
WATCHDOG = "node.research.agentproc"                # run with -m from PROJECT_ROOT
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where `node` is importable from, installed or not
EXIT_NODE_GONE = 70         # the watchdog's status when the node died before it could watch it


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
                sys.executable, "-m", WATCHDOG, str(os.getpid()), str(cwd), command, cwd=PROJECT_ROOT,
                env=dict(env), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True)
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
    # the watchdog is gone (it killed what the shell left running); a backstop if it was killed itself
    if descendants(proc.pid) or _group_alive(proc.pid):
        signal_tree(proc.pid, signal.SIGKILL)
    return AgentExit(False, returncode, time.monotonic() - started, _tail(log))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# -- the watchdog: a process of its own between the node and the agent's shell


class _Stop(Exception):
    """SIGTERM, SIGINT or SIGHUP reached the watchdog: the node died, or is stopping the tree."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop(signum)


def _reap() -> None:
    """Collects exited children (orphans reparented to us included), without waiting."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _kill_below(sig: signal.Signals) -> None:
    for pid in descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_tree(shell: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Until the shell and every process below us exited, or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap()
        if shell.poll() is not None and not descendants(os.getpid()):
            return
        time.sleep(0.05)


def _ignore_stops() -> None:
    # from here on the tree is being stopped anyway: a late signal must not cut the cleanup short
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def watch(argv: Sequence[str]) -> int:
    """`PARENT_PID CWD COMMAND`: runs COMMAND under /bin/sh in CWD and returns its status (128 + the
    signal that killed it); on SIGTERM (the node's death or its stop), stops the tree first."""
    parent_pid, cwd, command = int(argv[0]), argv[1], argv[2]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:
        return EXIT_NODE_GONE   # the node died before the death signal was asked for: start nothing
    shell: subprocess.Popen[bytes] | None = None
    try:
        shell = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, stdin=subprocess.DEVNULL)
        code = shell.wait()
        _ignore_stops()
    except _Stop:
        _ignore_stops()
        _kill_below(signal.SIGTERM)
        if shell is not None:
            _wait_tree(shell, TERM_GRACE_S)
        code = 128 + signal.SIGTERM
    _kill_below(signal.SIGKILL)   # what is left: a stopped tree's stragglers, a finished shell's background jobs
    if shell is not None:
        _wait_tree(shell, REAP_WAIT_S)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(watch(sys.argv[1:]))
