"""Joining a swarm by address: fetch its signed spec from any member before opening a ledger.

A node that is given only a bootstrap address knows nothing of the swarm yet; the spec (whose
hash is the swarm id) is what it must agree to. The spec is signed by its creator and checked
here like any other input from a peer: bounded size, bounded time, signature verified before
use. Whether its harness and data match ours is the node's decision, not this module's.
"""
from __future__ import annotations

import aiohttp

from ledger.errors import InvalidSpec
from ledger.spec import MAX_SPEC_BYTES, SignedSpec, decode_spec
from swarm.errors import BadMessage, PeerUnavailable
from swarm.peer import SPEC_PATH, read_capped
from swarm.protocol import check_addr

SPEC_TIMEOUT_S = 10.0
_MAX_SPEC_WIRE_BYTES = MAX_SPEC_BYTES + 96  # creator key and signature before the payload


def why_unreachable(exc: BaseException, timeout_s: float) -> str:
    """A failed request in words a user can act on, without the exception's repr."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or 'refused'}); is a node running there?"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the peer closed the connection without answering; is it an autoswarm node?"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status} {exc.message}".strip()
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientOSError | ConnectionError):
        return "the connection broke during the answer"
    return str(exc) or type(exc).__name__


async def fetch_spec(addr: str, *, timeout_s: float = SPEC_TIMEOUT_S) -> SignedSpec:
    """The swarm spec served by the member at `addr` (PeerUnavailable / BadMessage if not)."""
    check_addr(addr)
    url = f"http://{addr}{SPEC_PATH}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
            async with session.get(url) as resp:
                if resp.status != 200:
                    raise PeerUnavailable(f"{addr}: spec: HTTP {resp.status}")
                data = await read_capped(resp, _MAX_SPEC_WIRE_BYTES,
                                         BadMessage(f"{addr}: spec larger than {_MAX_SPEC_WIRE_BYTES} bytes"))
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        raise PeerUnavailable(f"{addr}: cannot fetch the swarm spec: {why_unreachable(exc, timeout_s)}") from None
    try:
        return decode_spec(data)
    except InvalidSpec as exc:
        raise BadMessage(f"{addr}: the swarm spec does not verify: {exc}") from None
