"""The hello's trip over a websocket: receive one within the handshake timeout, and name why one failed.

Shared by swarm/dialer.py and swarm/inbound.py. Knows nothing about admission or the peer's
registry; what a hello says and whether it is acceptable is swarm/handshake.py's business.
"""
from __future__ import annotations

import asyncio

import aiohttp

from swarm.connection import WebSocket
from swarm.errors import BadHandshake, ReplayedHandshake
from swarm.handshake import MAX_HELLO_BYTES, Hello, decode_hello


def handshake_reason(exc: BadHandshake) -> str:
    """The stats key for a failed handshake."""
    if isinstance(exc, ReplayedHandshake):
        return "replayed"
    text = str(exc)
    for needle, reason in (("another swarm", "wrong_swarm"), ("signature", "bad_signature"), ("clock", "clock"),
                           ("version", "version"), ("own node", "self"), ("echo", "echo"), ("evicted", "evicted")):
        if needle in text:
            return reason
    return "malformed"


async def receive_unless(ws: WebSocket, evicted: asyncio.Event) -> aiohttp.WSMessage:
    """The next message, or BadHandshake as soon as `evicted` is set (a newer upgrade needs the slot)."""
    async with asyncio.TaskGroup() as tg:
        receive = tg.create_task(ws.receive(), name="swarm-hello")
        evict = tg.create_task(evicted.wait(), name="swarm-hello-evict")
        await asyncio.wait((receive, evict), return_when=asyncio.FIRST_COMPLETED)
        for task in (receive, evict):
            task.cancel()
    if receive.cancelled():
        raise BadHandshake("hello: evicted, half-open too long while others waited")
    return receive.result()


async def receive_hello(ws: WebSocket, timeout_s: float, evicted: asyncio.Event | None = None) -> Hello:
    """The peer's hello: one binary frame within `timeout_s` (and before `evicted` is set, if given)."""
    try:
        async with asyncio.timeout(timeout_s):
            if evicted is None:
                msg = await ws.receive()
            else:
                msg = await receive_unless(ws, evicted)
    except TimeoutError:
        raise BadHandshake("hello: none within the handshake timeout") from None
    if msg.type != aiohttp.WSMsgType.BINARY or len(msg.data) > MAX_HELLO_BYTES:
        raise BadHandshake("hello: expected one binary frame")
    return decode_hello(msg.data)
