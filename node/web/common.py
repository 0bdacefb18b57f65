"""The plumbing every JSON route of the local API shares (AgentHub's in agenthub.py, the node's own
in nodeapi*.py): one error tree, one body reader, one text-field rule, one `limit` rule, one
hash-prefix rule, one rule for what is untrusted, and one `guard` around every handler.

The rules, once:
- **Errors.** A refusal is an `ApiError` (its subclass names the status); `guard` answers every
  failure as JSON `{"error": "..."}`: 4xx for the client's mistakes, 503 when the node cannot do
  it now, 500 (logged with its traceback) for a bug. A client that hung up mid-request (an OSError
  of the client's making) is neither: it is logged at debug and answered 400 into the void.
- **Who may call.** Host must name loopback (127.0.0.1, localhost, [::1] or the listening address)
  with the node's port, so a DNS-rebound page cannot reach us; a request that carries an Origin
  must come from such a page too (CSRF). Then `Access` says whose key a route needs.
- **Bodies** are JSON objects sent as `application/json` (anything else is 415: a browser's
  cross-site form can only send text/plain, urlencoded or multipart) of at most MAX_JSON_BYTES.
- **Limits** are checked, never clamped: over a bound is 413 for sizes and 400 for counts.
- **Untrusted**: text whose author is not one of the node's own keys.

Knows nothing of the ledger's contents or the research loop: it maps their exceptions.
"""
from __future__ import annotations

import enum
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any

from aiohttp import web

from ledger.bodies import COMMIT_BYTES, HASH_BYTES
from ledger.errors import InvalidEntry, KeyFileError, LedgerError
from ledger.keys import Identity, parse_node_id
from swarm.errors import BundleRejected, SwarmError, UnknownObject

from node.contract import MAX_TRAIN_PY_BYTES, MIN_PREFIX_HEX
from node.errors import AlreadySubmitted, BadSubmission, NodeError, QueueFull
from node.home import Layout
from node.web.agents import OPERATOR, AgentRegistry, BadAgent, RegistryFull
from node.web.backend import Backend

COMMIT_HEX = 2 * COMMIT_BYTES      # a full git commit id in hex
ENTRY_ID_HEX = 2 * HASH_BYTES      # a full ledger entry id (posts, jobs, sources) in hex
MAX_JSON_BYTES = 2 * MAX_TRAIN_PY_BYTES + (64 << 10)  # JSON escaping can double a train.py; the rest is fields
READ_CHUNK_BYTES = 64 * 1024
MAX_ECHO_CHARS = 80               # of a client's bad input quoted back in an error
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_HEX = re.compile(r"[0-9a-f]+")
_HOST = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]]+))(?::(?P<port>[0-9]{1,5}))?$")

log = logging.getLogger(__name__)


class ApiError(NodeError):
    """A request the API refuses; `status` is the HTTP status it answers with."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class TooLarge(ApiError):
    status = 413


class UnsupportedMedia(ApiError):
    status = 415


class TooMany(ApiError):
    status = 429


class Unavailable(ApiError):
    status = 503


class Access(enum.Enum):
    """Whose key a route needs."""

    AGENT = "agent"          # any key the node knows: the operator's or an agent the operator let in
    OPERATOR = "operator"    # only the operator token of HOME/api.json: registering agents, spending credits


# -- answers

def _dumps(data: Any) -> str:
    return json.dumps(data, default=str)  # the snapshot is the node's; a stray type must not be a 500


def answer(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def error(status: int, message: str) -> web.Response:
    return answer({"error": message}, status)


def echo(text: str) -> str:
    """A client's bad input, shortened, for an error message."""
    return repr(text[:MAX_ECHO_CHARS])


# -- who may call

def _loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str | None, local_host: str, local_port: int) -> bool:
    """Pure: whether a Host (or an Origin's authority) names this server by a loopback name or its
    listening address, with its port (80 when none is given)."""
    if not host_header:
        return False
    match = _HOST.match(host_header.strip())
    if match is None:
        return False
    host = (match["v6"] or match["name"] or "").lower()
    port = int(match["port"]) if match["port"] else 80
    if port != local_port:
        return False
    return _loopback(host) or host == local_host.lower()


def origin_allowed(origin: str | None, local_host: str, local_port: int) -> bool:
    """Pure: no Origin (curl, the CLI) or an http:// origin naming this server."""
    if origin is None:
        return True
    return origin.startswith("http://") and host_allowed(origin[len("http://"):], local_host, local_port)


def check_caller(request: web.Request) -> None:
    """Refuses (403) a request whose Host or Origin names another site: DNS rebinding and CSRF."""
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    if not sockname:
        raise Forbidden("the connection has no local address")
    local_host, local_port = str(sockname[0]), int(sockname[1])
    if not host_allowed(request.headers.get("Host"), local_host, local_port):
        raise Forbidden(f"Host must be 127.0.0.1:{local_port} or localhost:{local_port}")
    if not origin_allowed(request.headers.get("Origin"), local_host, local_port):
        raise Forbidden("requests from another site's pages are refused")


@web.middleware
async def loopback_only(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """`check_caller` for every route of the app, the dashboard's included."""
    try:
        check_caller(request)
    except ApiError as exc:
        return error(exc.status, str(exc))
    return await handler(request)


# -- bodies and fields

async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `max_bytes`."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise TooLarge(f"body of {request.content_length} bytes is over the limit of {max_bytes}")
    data = bytearray()
    async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
        data += chunk
        if len(data) > max_bytes:
            raise TooLarge(f"body is over the limit of {max_bytes} bytes")
    return bytes(data)


async def read_json(request: web.Request, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The request's JSON object: sent as application/json, at most `max_bytes`."""
    if request.content_type != "application/json":
        raise UnsupportedMedia("send the body as JSON with Content-Type: application/json")
    raw = await read_body(request, max_bytes)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError both are ValueErrors
        raise ApiError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError("the body must be a JSON object")
    return data


def text_field(data: Mapping[str, Any], name: str, *, max_chars: int, required: bool = True,
               max_bytes: int | None = None) -> str:
    """A string field, checked against the ledger's limit it will be stored under.

    Absent and not `required`: "". A required one must have non-space text. Lone surrogates
    (JSON's \\ud800) are refused: no ledger entry can carry them. Over `max_chars` characters
    (or `max_bytes` UTF-8 bytes) is 413."""
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise ApiError(f"{name} must be a non-empty string" if required else f"{name} must be a string")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ApiError(f"{name} is not valid Unicode text")
    if len(value) > max_chars:
        raise TooLarge(f"{name} is over {max_chars} characters")
    if max_bytes is not None and len(value.encode("utf-8")) > max_bytes:
        raise TooLarge(f"{name} is over {max_bytes} bytes")
    return value


def str_list(data: Mapping[str, Any], name: str, *, max_items: int, max_chars: int) -> list[str]:
    """A list of strings (absent: empty), each at most `max_chars` characters."""
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(f"{name} must be a list of strings")
    if len(value) > max_items:
        raise ApiError(f"{name} has {len(value)} items; at most {max_items}")
    for item in value:
        text_field({name: item}, name, max_chars=max_chars)
    return list(value)


def limit(request: web.Request, default: int, most: int) -> int:
    """`?limit=N`: 1 to `most`, `default` when absent; anything else is refused, not clamped."""
    text = request.query.get("limit")
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not 1 <= int(text) <= most:
        raise ApiError(f"limit must be a whole number from 1 to {most}, got {echo(text)}")
    return int(text)


def full_hex(text: str, digits: int) -> bytes | None:
    """Pure: the bytes of `text` when it is exactly `digits` hex digits (any case), else None."""
    t = text.strip().lower()
    return bytes.fromhex(t) if len(t) == digits and _HEX.fullmatch(t) else None


def entry_id(value: Any, name: str) -> bytes:
    """A full ledger entry id (ENTRY_ID_HEX lowercase hex digits) given as a JSON string."""
    found = full_hex(value, ENTRY_ID_HEX) if isinstance(value, str) and value == value.lower() else None
    if found is None:
        raise ApiError(f"{name} must be an entry id of {ENTRY_ID_HEX} hex digits (lowercase), "
                       f"got {echo(str(value))}")
    return found


def match_prefix(text: str, candidates: Iterable[bytes], what: str, max_hex: int) -> bytes:
    """Pure: the one candidate whose hex starts with `text` (MIN_PREFIX_HEX to `max_hex` digits)."""
    t = text.strip().lower()
    if not (MIN_PREFIX_HEX <= len(t) <= max_hex and _HEX.fullmatch(t)):
        raise ApiError(f"not a {what}: {echo(text)} ({MIN_PREFIX_HEX} to {max_hex} hex digits)")
    hits = {c for c in candidates if c.hex().startswith(t)}
    if not hits:
        raise NotFound(f"no {what} of this swarm starts with {t}")
    if len(hits) > 1:
        raise ApiError(f"{t} is ambiguous: {len(hits)} of the known {what}s start with it; give more digits")
    return hits.pop()


# -- untrusted

def own_keys(backend: Backend) -> frozenset[bytes]:
    """The node's identities: its research key and, where the home has one, its verifier key."""
    keys = {parse_node_id(backend.node_id)}
    path = Layout(backend.home).verifier_key
    if path.exists():
        try:
            keys.add(Identity.load(path).public_key)
        except KeyFileError as exc:
            log.warning("verifier key not readable, its entries are not shown as ours: %s", exc)
    return frozenset(keys)


def untrusted(authors: Collection[bytes], mine: Collection[bytes]) -> bool:
    """Text is untrusted unless one of the node's own keys wrote it: data to show, never to obey.

    `authors` are every key that wrote or claimed it; none at all (a commit only queued here, or
    the baseline) is the node's own."""
    return bool(authors) and not any(a in mine for a in authors)


# -- the guard

Handler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _status_of(exc: Exception) -> int | None:
    """The 4xx a client's mistake maps to, or None for the node's own failures."""
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, AlreadySubmitted):
        return 409
    if isinstance(exc, QueueFull):
        return 429
    if isinstance(exc, RegistryFull):
        return 429
    if isinstance(exc, UnknownObject):
        return 404
    if isinstance(exc, (BadSubmission, BundleRejected, InvalidEntry, BadAgent)):
        return 400
    return None


def admit(request: web.Request, agents: AgentRegistry, access: Access | None) -> str:
    """Who is calling ("" when `access` is None): refuses a foreign Host or Origin (403), a missing
    or unknown key (401), an agent's key where the operator's is needed (403)."""
    check_caller(request)
    if access is None:
        return ""
    found = agents.authenticate(request.headers.get("Authorization"))
    if found is None:
        raise Unauthorized("missing or unknown key: send Authorization: Bearer <key> (the operator "
                           "mints agent keys with `python -m node agent-key NAME`)")
    if access is Access.OPERATOR and found != OPERATOR:
        raise Forbidden("only the node's operator may do this (the token of HOME/api.json)")
    return found


def guard(agents: AgentRegistry, handler: Handler, access: Access | None = Access.AGENT) -> Route:
    """Checks the caller (`check_caller`) and its key (`access`; None: no key), runs the handler
    and turns every failure into one JSON error line."""
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request, admit(request, agents, access))
        except web.HTTPException as exc:  # aiohttp's own refusals (a body over client_max_size)
            return error(exc.status, exc.reason)
        except ConnectionError:  # the client hung up mid-request: its fault, and nobody reads the answer
            log.debug("%s %s: the client went away", request.method, request.path)
            return error(400, "the connection was lost before the request was read")
        except Exception as exc:
            status = _status_of(exc)
            if status is not None:
                return error(status, f"bundle rejected: {exc}" if isinstance(exc, BundleRejected) else str(exc))
            if isinstance(exc, (NodeError, LedgerError, SwarmError, OSError)):
                log.warning("%s %s failed: %r", request.method, request.path, exc)
                return error(503, f"the node could not do this now: {exc}")
            log.exception("%s %s failed", request.method, request.path)
            return error(500, "internal error; the node logged it")
    return run
