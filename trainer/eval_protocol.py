"""Frames between the harness and the sandboxed eval worker: a kind byte, a length, a payload.

The harness side reads and writes with deadlines on non-blocking pipes and checks every frame's
kind and exact size before it looks at the bytes, because the other end runs candidate code. The
worker side blocks: it is killed from outside when it takes too long.

Frames, harness -> worker: H header (JSON), B batch (uint16 tokens [B, T+1]), R rows request
(int32 [K, 2] of (row, position)), Q quit. Worker -> harness: K ready (JSON), L log-probs of the
targets (float32 [B, T]), G logits rows (float32 [K, V]), E error ("reject: ..." or "crash: ...").
"""
from __future__ import annotations

import os
import select
import struct
import time

from trainer.errors import TrainerError

HEADER = struct.Struct("<cQ")
MAX_FRAME_BYTES = 256 << 20
MAX_ERROR_BYTES = 8 << 10

HEADER_FRAME, BATCH, ROWS_REQUEST, QUIT = b"H", b"B", b"R", b"Q"
READY, LOGPROBS, ROWS, ERROR = b"K", b"L", b"G", b"E"


class ProtocolError(TrainerError):
    """The other end sent a frame of the wrong kind or size, or closed the pipe."""


class ProtocolTimeout(ProtocolError):
    """The other end did not answer before the deadline."""


class PeerClosed(ProtocolError):
    """The pipe reached its end: the other process exited or closed it."""


class WorkerError(ProtocolError):
    """The worker reported an error frame (its text is untrusted: it may come from candidate code)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _wait(fd: int, *, write: bool, deadline: float | None) -> None:
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ProtocolTimeout("deadline passed")
    ready = select.select([], [fd], [], remaining) if write else select.select([fd], [], [], remaining)
    if not any(ready):
        raise ProtocolTimeout("deadline passed")


def write_all(fd: int, data: bytes, deadline: float | None = None) -> None:
    view = memoryview(data)
    while view:
        _wait(fd, write=True, deadline=deadline)
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            continue
        except BrokenPipeError:
            raise PeerClosed("the other end closed its input") from None
        view = view[n:]


def read_exact(fd: int, n: int, deadline: float | None = None) -> bytes:
    chunks, got = [], 0
    while got < n:
        _wait(fd, write=False, deadline=deadline)
        try:
            chunk = os.read(fd, min(n - got, 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise PeerClosed(f"pipe closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def send(fd: int, kind: bytes, payload: bytes = b"", deadline: float | None = None) -> None:
    write_all(fd, HEADER.pack(kind, len(payload)) + payload, deadline)


def receive(fd: int, deadline: float | None = None, *, max_bytes: int = MAX_FRAME_BYTES) -> tuple[bytes, bytes]:
    kind, length = HEADER.unpack(read_exact(fd, HEADER.size, deadline))
    limit = MAX_ERROR_BYTES if kind == ERROR else max_bytes
    if length > limit:
        raise ProtocolError(f"frame {kind!r} of {length} bytes exceeds {limit}")
    return kind, read_exact(fd, length, deadline)


def expect(fd: int, kind: bytes, size: int | None, deadline: float | None) -> bytes:
    """Receives one frame that must be `kind` (of exactly `size` bytes when given)."""
    got, payload = receive(fd, deadline, max_bytes=size if size is not None else MAX_ERROR_BYTES)
    if got == ERROR:
        raise WorkerError(payload.decode("utf-8", "replace"))
    if got != kind:
        raise ProtocolError(f"expected frame {kind!r}, got {got!r}")
    if size is not None and len(payload) != size:
        raise ProtocolError(f"frame {kind!r} has {len(payload)} bytes, expected {size}")
    return payload
