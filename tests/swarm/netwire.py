"""The emulated link layer of tests/swarm/netns.py: a userspace switch between TAP devices.

The wire holds every node's TAP file descriptor, learns MAC addresses, floods broadcasts, and
gives each node's access link a one-way delay, a loss rate and a bit rate, the same both ways; a
frame from node i to node j crosses i's link and then j's. Each direction is a FIFO with a
drop-tail backlog bound, so frames are never reordered (netns.py's docstring says why not netem).
"""
from __future__ import annotations

import asyncio
import collections
import ctypes
import fcntl
import functools
import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

MAX_BACKLOG_S = 2.0          # drop-tail bound of a rate-limited direction, in seconds of sending
TAP_NAME = "sw0"

_IFF_TAP, _IFF_NO_PI, _TUNSETIFF, _CLONE_NEWNET = 0x0002, 0x1000, 0x400454CA, 0x40000000


class WireError(Exception):
    """The wire or a peer process answered wrongly, ended, or did not answer in time."""



@dataclass(frozen=True, slots=True)
class Link:
    """One node's access link, the same both ways. A path between two nodes crosses two links."""

    delay_s: float = 0.0
    loss: float = 0.0        # probability that a frame is lost on this link, each way
    rate_bps: float = 0.0    # 0: unlimited
    up: bool = True
    group: int = 0           # frames between links of different groups are dropped (a partition)

    def __post_init__(self) -> None:
        if self.delay_s < 0 or not 0 <= self.loss <= 1 or self.rate_bps < 0:
            raise ValueError(f"bad link {self}")


def per_link(path_delay_s: float, path_loss: float) -> Link:
    """The link that gives a path of two such links the stated one-way delay and loss."""
    return Link(delay_s=path_delay_s / 2, loss=1 - (1 - path_loss) ** 0.5)


@dataclass(slots=True)
class _Direction:
    """One direction of one link: a FIFO of (due time, frame), serialized at the link's rate."""

    queue: collections.deque[tuple[float, bytes]] = field(default_factory=collections.deque)
    busy_until_s: float = 0.0
    timer: asyncio.TimerHandle | None = None

    def admit(self, now_s: float, size: int, link: Link) -> float | None:
        """Pure scheduling: when the frame is due at the far end, or None if the backlog is full."""
        start_s = max(now_s, self.busy_until_s)
        if link.rate_bps:
            if start_s - now_s > MAX_BACKLOG_S:
                return None
            self.busy_until_s = start_s + size * 8 / link.rate_bps
            return self.busy_until_s + link.delay_s
        return start_s + link.delay_s


@dataclass(slots=True)
class _Port:
    fd: int
    link: Link = Link()
    up: _Direction = field(default_factory=_Direction)     # node -> switch
    down: _Direction = field(default_factory=_Direction)   # switch -> node
    counts: collections.Counter[str] = field(default_factory=collections.Counter)


class Wire:
    """The switch. Runs in its own process; all state is owned by one event loop."""

    def __init__(self, fds: list[int], rng: random.Random) -> None:
        self.ports = [_Port(fd) for fd in fds]
        self.rng = rng
        self.macs: dict[bytes, int] = {}
        self.loop = asyncio.get_running_loop()
        for i, port in enumerate(self.ports):
            self.loop.add_reader(port.fd, self._read, i)

    def close(self) -> None:
        for port in self.ports:
            self.loop.remove_reader(port.fd)
            for d in (port.up, port.down):
                if d.timer:
                    d.timer.cancel()

    def _read(self, i: int) -> None:
        port = self.ports[i]
        for _ in range(64):  # a bounded batch per wakeup, so one busy port cannot starve the rest
            try:
                frame = os.read(port.fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                port.counts["read_error"] += 1
                return
            port.counts["frames_in"] += 1
            self._enqueue(port, port.up, frame, functools.partial(self._switch, i))

    def _enqueue(self, port: _Port, d: _Direction, frame: bytes, then: Callable[[bytes], None]) -> None:
        link = port.link
        if not link.up:
            port.counts["dropped_down"] += 1
            return
        if link.loss and self.rng.random() < link.loss:
            port.counts["dropped_loss"] += 1
            return
        due_s = d.admit(self.loop.time(), len(frame), link)
        if due_s is None:
            port.counts["dropped_backlog"] += 1
            return
        d.queue.append((due_s, frame))
        if d.timer is None:
            d.timer = self.loop.call_at(due_s, self._pump, d, then)

    def _pump(self, d: _Direction, then: Callable[[bytes], None]) -> None:
        d.timer = None
        now_s = self.loop.time()
        while d.queue and d.queue[0][0] <= now_s + 0.0005:
            then(d.queue.popleft()[1])
        if d.queue:
            d.timer = self.loop.call_at(d.queue[0][0], self._pump, d, then)

    def _switch(self, i: int, frame: bytes) -> None:
        if len(frame) < 14:
            return
        dst, src = frame[0:6], frame[6:12]
        if not src[0] & 1:
            self.macs[src] = i
        known = self.macs.get(dst)
        targets = [known] if known is not None and not dst[0] & 1 else range(len(self.ports))
        group = self.ports[i].link.group
        for j in targets:
            if j == i:
                continue
            port = self.ports[j]
            if port.link.group != group:
                port.counts["dropped_partition"] += 1
                continue
            self._enqueue(port, port.down, frame, functools.partial(self._deliver, port))

    def _deliver(self, port: _Port, frame: bytes) -> None:
        try:
            os.write(port.fd, frame)
            port.counts["frames_out"] += 1
        except OSError:  # the node's interface is down or its queue full: the frame is lost
            port.counts["write_error"] += 1

    def command(self, op: dict[str, Any]) -> dict[str, Any]:
        if op["op"] == "set":
            port = self.ports[op["port"]]
            port.link = replace(port.link, **op["link"])
            return {"ok": True}
        if op["op"] == "stats":
            return {"ok": True, "ports": [dict(p.counts) for p in self.ports]}
        raise WireError(f"unknown op {op['op']!r}")


def open_tap(netns: str, name: str) -> int:
    """Creates a TAP device inside `netns` and returns its file descriptor (non-blocking)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TAP | _IFF_NO_PI))
        finally:
            if libc.setns(home, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home")
    finally:
        os.close(home)
        os.close(target)
    return fd
