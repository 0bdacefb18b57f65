"""Resumable, bounded, hash-verified HTTP downloads of single files.

Theory of operation: bytes land in `NAME.part` beside the destination. Each attempt asks for
`Range: bytes=<size of .part>-`, so a dropped connection costs only what was not yet written. A 206
answer appends; a 200 (the server ignored the range) starts the file over; a 416 means the .part is
already whole (or garbage, which the hash then rejects). Network errors and 5xx/429 answers are
retried with exponential backoff; other 4xx answers fail at once. When the body is complete the
whole .part is hashed; only a file whose SHA-256 matches the expected one (when one is given) is
renamed onto the destination, so the cache never holds a half-written or wrong file. A mismatch
deletes the .part: resuming onto bad bytes would never converge.

Blocking (urllib): the trainer runs as a CLI subprocess with no event loop; callers that need
parallelism use a thread pool (see trainer.climbmix).
"""
from __future__ import annotations

import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainer.data import DataError, ShardMismatch, sha256_file
from trainer.errors import TrainerError

CHUNK_BYTES = 1 << 16
DEFAULT_TIMEOUT_S = 30.0       # per socket operation, not per file
DEFAULT_ATTEMPTS = 6
DEFAULT_BACKOFF_S = 1.0        # doubled after every failed attempt
MAX_BACKOFF_S = 60.0
DEFAULT_MAX_BYTES = 2 << 30    # climbmix shards are well under this; a runaway server is not
USER_AGENT = "autoswarm-trainer/1"


class DownloadFailed(DataError):
    """A file could not be fetched: a 4xx answer, too many failed attempts, or over the size bound."""


class TooLarge(DownloadFailed):
    """The server sent (or announced) more bytes than allowed."""


class HashMismatch(ShardMismatch):
    """The downloaded bytes do not hash to the expected SHA-256; nothing was kept."""


@dataclass(frozen=True, slots=True)
class Downloaded:
    path: Path
    sha256: str
    size_bytes: int
    resumed_from_bytes: int  # bytes already in .part before the first request of this call
    attempts: int            # requests made (0: the file was already in place)


class _Retry(TrainerError):
    """One attempt failed in a way that another attempt may fix."""


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Downloaded:
    """Fetches `url` into `dest` unless a file with the expected hash is already there.

    `sha256=None` means no pin is known: the file is kept and its hash returned, and the caller
    records it as trusted on first use.
    """
    if attempts < 1 or max_bytes < 1 or timeout_s <= 0:
        raise ValueError("attempts, max_bytes and timeout_s must be positive")
    dest = Path(dest)
    if dest.is_file():
        digest = sha256_file(dest)
        if sha256 is None or digest == sha256:
            return Downloaded(dest, digest, dest.stat().st_size, dest.stat().st_size, 0)
        dest.unlink()  # a stale or corrupted cache entry: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    resumed_from = part.stat().st_size if part.exists() else 0
    last_error = "no attempt made"
    for attempt in range(attempts):
        if attempt:
            sleep(min(MAX_BACKOFF_S, backoff_s * 2 ** (attempt - 1)))
        try:
            _fetch_into(url, part, max_bytes=max_bytes, timeout_s=timeout_s)
            break
        except _Retry as exc:
            last_error = str(exc)
    else:
        raise DownloadFailed(f"{url}: gave up after {attempts} attempts ({last_error})")
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise HashMismatch(f"{url}: sha256 {digest[:12]}… but expected {sha256[:12]}…; discarded")
    _fsync(part)
    os.replace(part, dest)
    return Downloaded(dest, digest, dest.stat().st_size, resumed_from, attempt + 1)


def _fetch_into(url: str, part: Path, *, max_bytes: int, timeout_s: float) -> None:
    """One attempt: appends the missing tail of `url` to `part`. Raises _Retry on transient errors."""
    have = part.stat().st_size if part.exists() else 0
    if have > max_bytes:
        part.unlink()
        raise TooLarge(f"{url}: partial file already exceeds {max_bytes} bytes")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if response.status == 200:
                have = 0  # the server ignored the range: start over
            elif response.status != 206:
                raise _Retry(f"unexpected HTTP {response.status}")
            elif _range_start(response.headers.get("Content-Range")) != have:
                part.unlink()  # a range we did not ask for: appending it would corrupt the file
                raise _Retry(f"Content-Range does not start at byte {have}")
            header = response.headers.get("Content-Length", "")
            length = int(header) if header.isdigit() else None
            if length is not None and have + length > max_bytes:
                raise TooLarge(f"{url}: {have + length} bytes exceeds the bound of {max_bytes}")
            with open(part, "r+b" if have else "wb") as f:
                f.seek(have)
                f.truncate()
                written = have
                while chunk := response.read(CHUNK_BYTES):
                    written += len(chunk)
                    if written > max_bytes:
                        raise TooLarge(f"{url}: more than {max_bytes} bytes")
                    f.write(chunk)
            # http.client reports a connection closed mid-body as a normal end of data.
            if length is not None and written - have != length:
                raise _Retry(f"connection closed after {written - have} of {length} bytes")
    except TooLarge:
        part.unlink(missing_ok=True)
        raise
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            return  # nothing left to send: the .part is complete (the hash will tell)
        if exc.code == 429 or exc.code >= 500:
            raise _Retry(f"HTTP {exc.code}") from exc
        raise DownloadFailed(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout) as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        # A read that fails mid-body surfaces as a bare OSError on some platforms.
        raise _Retry(f"{type(exc).__name__}: {exc}") from exc


def _range_start(content_range: str | None) -> int | None:
    # "bytes 100-199/200" -> 100
    try:
        unit, spec = (content_range or "").split(" ", 1)
        return int(spec.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
