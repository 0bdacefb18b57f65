"""What every command-line client of a running node shares: finding it (HOME/api.json), one HTTP
call with bounded size and time, errors as one readable line, and text safe to print.

Exit statuses: 0 done, 1 a failure (the node answered 5xx, timed out, or sent garbage), 2 bad
input (bad arguments, a bad hash, no node running, a 4xx answer).
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from node.contract import (API_FILE, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, MAX_API_FILE_BYTES, MAX_TRAIN_PY_BYTES,
                           UNTRUSTED_HEADER)
from node.errors import NodeError


REQUEST_TIMEOUT_S = 30.0             # one call to the local node
MAX_RESPONSE_BYTES = 16 << 20
MAX_LINE_CHARS = 160                 # one-line renderings of messages in lists
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class CliError(NodeError):
    exit_code = EXIT_FAILED


class BadInput(CliError):
    """Bad arguments, a missing or bad api.json, no node running, or a request the node refused."""

    exit_code = EXIT_BAD_INPUT


class NodeFailed(CliError):
    """The node failed, timed out or answered something that is not the API."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    token: str


def load_endpoint(home: Path) -> Endpoint:
    """HOME/api.json, which the running node writes; its absence means no node runs there."""
    path = home / API_FILE
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_API_FILE_BYTES + 1)
    except FileNotFoundError:
        raise BadInput(f"no node is running on {home}: start it with `python -m node --home {home}`") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw) if len(raw) <= MAX_API_FILE_BYTES else None
    except ValueError:
        data = None
    if (not isinstance(data, dict) or not isinstance(data.get("url"), str) or not isinstance(data.get("token"), str)
            or not data["url"].startswith(("http://", "https://"))):
        raise BadInput(f"{path}: not the node's API file (expected {{\"url\": \"http://...\", \"token\": \"...\"}}); "
                       f"restart the node to write it again")
    return Endpoint(data["url"].rstrip("/"), data["token"])


async def _read_bounded(stream: aiohttp.StreamReader, max_bytes: int) -> bytes:
    """Up to `max_bytes` of the stream (read(n) alone returns only what has arrived)."""
    chunks, size = [], 0
    while size < max_bytes and (chunk := await stream.read(min(64 * 1024, max_bytes - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    data: Any               # parsed JSON, or the text of a text/plain answer
    untrusted: bool         # the node says the text is from other nodes (UNTRUSTED_HEADER)


class NodeClient:
    """HTTP calls to the node; every failure comes back as a CliError with one readable line."""

    def __init__(self, endpoint: Endpoint, home: Path, session: aiohttp.ClientSession) -> None:
        self.endpoint, self.home, self.session = endpoint, home, session

    async def call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                   body: Any = None, ok: tuple[int, ...] = ()) -> Answer:
        """The node's 2xx answer (or one of `ok`), its body parsed if JSON; anything else raises."""
        url = self.endpoint.url + path
        try:
            async with self.session.request(
                    method, url, params=params, json=body,
                    headers={"Authorization": f"Bearer {self.endpoint.token}"}) as resp:
                raw = await _read_bounded(resp.content, MAX_RESPONSE_BYTES + 1)
                status, kind, reason = resp.status, resp.content_type, resp.reason or ""
                untrusted = resp.headers.get(UNTRUSTED_HEADER) == "true"
        except aiohttp.ClientConnectorError:
            raise BadInput(f"no node is running on {self.home}: start it with `python -m node --home {self.home}` "
                           f"(nothing answers at {self.endpoint.url})") from None
        except TimeoutError:
            raise NodeFailed(f"the node at {self.endpoint.url} did not answer within {REQUEST_TIMEOUT_S:.0f} s; "
                             f"try again, or look at its log") from None
        except aiohttp.ClientError as exc:
            raise NodeFailed(f"talking to the node at {self.endpoint.url} failed: {exc}") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise NodeFailed(f"the node's answer to {path} is over {MAX_RESPONSE_BYTES} bytes")
        text = raw.decode("utf-8", "replace")
        data: Any = text
        if kind == "application/json":
            try:
                data = json.loads(text)
            except ValueError:
                raise NodeFailed(f"the node's answer to {path} is not JSON") from None
        if 200 <= status < 300 or status in ok:
            return Answer(status, data, untrusted)
        said = data.get("error") if isinstance(data, dict) else None
        said = clean(str(said) if said else text.strip()[:200] or reason)
        if status == 401:
            raise BadInput(f"the node at {self.endpoint.url} refused the token in {self.home / API_FILE} "
                           f"(401: {said}); is the file from an earlier run?")
        if 400 <= status < 500:
            raise BadInput(f"{said} ({status})")
        raise NodeFailed(f"the node failed: {said} ({status})")

    async def get(self, path: str, **params: str | int | None) -> Any:
        query = {k: str(v) for k, v in params.items() if v is not None and v != ""}
        return (await self.call("GET", path, params=query)).data

    async def post(self, path: str, body: Any) -> Any:
        return (await self.call("POST", path, body=body)).data


def session(timeout_s: float = REQUEST_TIMEOUT_S) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))


# -- text safe to print


def clean(text: str) -> str:
    """Text safe to print: no terminal escapes, no bidirectional overrides."""
    return _CONTROL.sub("?", text)


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def line(text: str, limit: int = MAX_LINE_CHARS) -> str:
    flat = clean(text.replace("\r\n", "\n").replace("\n", " | ").replace("\t", " "))
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def block(text: str, indent: str = "    ") -> list[str]:
    # indented, so no line of it can pass for a line the CLI wrote itself
    return [indent + clean(row) for row in text.splitlines()] or [indent]


def read_train_py(path_text: str) -> str:
    path = Path(path_text)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TRAIN_PY_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_TRAIN_PY_BYTES:
        raise BadInput(f"{path}: over {MAX_TRAIN_PY_BYTES // 1024} KiB; train.py must stay smaller")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text") from None


def print_answer(data: Any, render: Callable[[Any], list[str]], as_json: bool) -> None:
    """The node's answer as JSON, or as the command's lines (an answer they cannot read is NodeFailed)."""
    if as_json:
        print(json.dumps(data, indent=1, sort_keys=True))
        return
    try:
        lines = render(data)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise NodeFailed(f"the node's answer is not what this command expects: {exc!r}") from None
    print("\n".join(lines))


def say_error(exc: CliError) -> int:
    """A CliError as one line on stderr; returns its exit status."""
    print(f"node: {line(str(exc), 1000)}", file=sys.stderr, flush=True)
    return exc.exit_code
