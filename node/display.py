"""Terminal progress: a status line redrawn every few seconds on a terminal, plain log lines elsewhere.

On a TTY the last line of the screen is the status (running work with time left, best val_bpb,
credits, peers); events print above it. When stdout is a pipe or a file (an agent, a service
manager, a test) only the events are written, one timestamped line each, so logs stay greppable.
Knows nothing about the ledger: the research loop tells it what happens, and `summary` is a
callable it asks for the numbers at each redraw.
"""
from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

_STEP = re.compile(r"step \d+ \((\d+)%\)")
MAX_STATUS_CHARS = 200


@dataclass(slots=True)
class Running:
    what: str                 # e.g. "experiment MATRIX_LR 0.04 -> 0.06"
    started: float            # time.monotonic()
    expected_s: float         # the budget plus the usual startup and evaluation
    percent: int | None = None


class Display:
    def __init__(self, out: TextIO | None = None, *, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._out = out or sys.stdout
        self.tty = self._out.isatty() if tty is None else tty
        self._clock = clock
        self.running: dict[str, Running] = {}
        self.summary: Callable[[], str] = lambda: ""
        self._drawn = False
        self._live = False    # the status line is drawn only while run() is active

    def event(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        if self.tty:
            self._clear()
            self._out.write(f"{stamp} {text}\n")
            if self._live:
                self._draw()
        else:
            self._out.write(f"{stamp} {text}\n")
        self._out.flush()

    def start(self, label: str, what: str, expected_s: float) -> None:
        self.running[label] = Running(what, self._clock(), expected_s)

    def stop(self, label: str) -> None:
        self.running.pop(label, None)

    def trainer_line(self, label: str, line: str) -> None:
        """A stderr line of the trainer: step lines carry the percentage done."""
        run = self.running.get(label)
        found = _STEP.search(line)
        if run is not None and found:
            run.percent = int(found.group(1))

    def status_line(self) -> str:
        parts = []
        now = self._clock()
        for label, run in sorted(self.running.items()):
            left = max(0.0, run.expected_s - (now - run.started))
            pct = f" {run.percent}%" if run.percent is not None else ""
            parts.append(f"[{label}] {run.what}{pct} ~{left:.0f}s left")
        parts.append(self.summary())
        return " | ".join(p for p in parts if p)[:MAX_STATUS_CHARS]

    async def run(self, refresh_s: float) -> None:
        """Redraws the status line until cancelled; on a non-terminal it only waits."""
        if not self.tty:
            await asyncio.Event().wait()  # nothing to redraw; cancelled at shutdown
        self._live = True
        try:
            while True:
                self._clear()
                self._draw()
                self._out.flush()
                await asyncio.sleep(refresh_s)
        finally:
            self._live = False
            self._clear()
            self._out.flush()

    def _clear(self) -> None:
        if self._drawn:
            self._out.write("\r\x1b[2K")
            self._drawn = False

    def _draw(self) -> None:
        self._out.write(self.status_line())
        self._drawn = True
