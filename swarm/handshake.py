"""The signed hello that opens every replication connection, and its replay protection.

Knows nothing about sockets: the peer sends and receives the bytes.

    hello   = node (32) || signature (64) || payload
    payload = msgpack [VERSION, swarm, node, listen, time_ms, nonce, echo]
    signed  = DOMAIN || payload

The dialer sends a hello with a fresh nonce and an empty echo; the listener answers with its own
hello whose echo is the dialer's nonce, so the dialer knows the answer is fresh. The listener
cannot get that proof without a third message, so it accepts a hello only inside a clock window
(CLOCK_WINDOW_S either side of its own clock) and only once: `NonceCache` remembers every
(node, nonce) it accepted inside the window. The cache is bounded; when it must forget a nonce
still inside the window it raises a watermark instead, and refuses every hello not newer than
it, so a forgotten nonce can never be replayed. The domain tag differs from entries' and specs',
so no signature made here can pass as anything else.
"""
from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgpack

from ledger.errors import InvalidSignature
from ledger.keys import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, verify_signature
from swarm.errors import BadHandshake, BadMessage, ReplayedHandshake
from swarm.protocol import check_addr, unpack_frame

DOMAIN = b"autoswarm/handshake/v1\x00"
PROTOCOL_VERSION = 1
CLOCK_WINDOW_S = 60.0
NONCE_BYTES = 16
MAX_HELLO_BYTES = 1024
MAX_NONCES = 10_000
SWARM_ID_BYTES = 32
_HEADER_BYTES = PUBLIC_KEY_BYTES + SIGNATURE_BYTES
_MAX_TIME_MS = 1 << 53


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


@dataclass(frozen=True, slots=True)
class Hello:
    swarm: bytes
    node: bytes
    version: int
    listen: str    # the address it accepts connections on; "" if it does not listen
    time_ms: int
    nonce: bytes
    echo: bytes    # b"" from the dialer; the dialer's nonce in the listener's answer
    wire: bytes

    def __post_init__(self) -> None:
        if type(self.swarm) is not bytes or len(self.swarm) != SWARM_ID_BYTES:
            raise BadHandshake("hello: swarm id must be 32 bytes")
        if type(self.node) is not bytes or len(self.node) != PUBLIC_KEY_BYTES:
            raise BadHandshake("hello: node id must be 32 bytes")
        if type(self.version) is not int or not 0 <= self.version < 1 << 16:
            raise BadHandshake("hello: bad version field")
        if type(self.listen) is not str:
            raise BadHandshake("hello: listen must be a string")
        if self.listen:
            try:
                check_addr(self.listen)
            except BadMessage as exc:
                raise BadHandshake(f"hello: {exc}") from None
        if type(self.time_ms) is not int or not 0 <= self.time_ms < _MAX_TIME_MS:
            raise BadHandshake("hello: bad time")
        if type(self.nonce) is not bytes or len(self.nonce) != NONCE_BYTES:
            raise BadHandshake(f"hello: nonce must be {NONCE_BYTES} bytes")
        if type(self.echo) is not bytes or len(self.echo) not in (0, NONCE_BYTES):
            raise BadHandshake("hello: echo must be empty or a nonce")


def sign_hello(
    identity: Identity, *, swarm: bytes, listen: str, time_ms: int, nonce: bytes, echo: bytes = b"",
    version: int = PROTOCOL_VERSION,
) -> Hello:
    node = identity.public_key
    payload: bytes = msgpack.packb([version, swarm, node, listen, time_ms, nonce, echo], use_bin_type=True)
    wire = node + identity.sign(DOMAIN + payload) + payload
    return Hello(swarm, node, version, listen, time_ms, nonce, echo, wire)


def decode_hello(wire: Any) -> Hello:
    """Checks the signature over the bytes as received, then decodes; raises BadHandshake."""
    if type(wire) is not bytes or not _HEADER_BYTES < len(wire) <= MAX_HELLO_BYTES:
        raise BadHandshake(f"a hello is {_HEADER_BYTES + 1} to {MAX_HELLO_BYTES} bytes")
    node, signature, payload = wire[:PUBLIC_KEY_BYTES], wire[PUBLIC_KEY_BYTES:_HEADER_BYTES], wire[_HEADER_BYTES:]
    try:
        verify_signature(node, signature, DOMAIN + payload)
    except InvalidSignature:
        raise BadHandshake("hello: signature does not verify") from None
    try:
        fields = unpack_frame(payload, max_bytes=MAX_HELLO_BYTES)
    except BadMessage as exc:
        raise BadHandshake(f"hello: {exc}") from None
    if type(fields) is not list or len(fields) != 7:
        raise BadHandshake("hello: payload must be an array of 7 fields")
    version, swarm, p_node, listen, time_ms, nonce, echo = fields
    if p_node != node:
        raise BadHandshake("hello: payload node differs from the signing key")
    return Hello(swarm, node, version, listen, time_ms, nonce, echo, wire)


class NonceCache:
    """(node, nonce) pairs accepted inside the clock window; bounded, with a watermark."""

    def __init__(self, *, max_nonces: int = MAX_NONCES, window_s: float = CLOCK_WINDOW_S) -> None:
        if max_nonces < 1:
            raise ValueError("max_nonces must be positive")
        self.max_nonces = max_nonces
        self.window_ms = int(window_s * 1000)
        self.watermark_ms = -1  # hellos at or before this time are refused (see the module doc)
        self._seen: OrderedDict[tuple[bytes, bytes], int] = OrderedDict()  # in acceptance order

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, node: bytes, nonce: bytes, time_ms: int, now_ms: int) -> None:
        """Raises ReplayedHandshake if seen (or possibly forgotten); else remembers it."""
        self._expire(now_ms)
        if time_ms <= self.watermark_ms:
            raise ReplayedHandshake("hello: older than a forgotten nonce; retry with a fresh hello")
        key = (node, nonce)
        if key in self._seen:
            raise ReplayedHandshake("hello: nonce already used")
        while len(self._seen) >= self.max_nonces:
            _, forgotten_ms = self._seen.popitem(last=False)
            self.watermark_ms = max(self.watermark_ms, forgotten_ms)
        self._seen[key] = time_ms

    def _expire(self, now_ms: int) -> None:
        # An entry whose hello time left the window can go: the window check refuses it anyway.
        # Acceptance order is not time order, so stop at the first one still inside.
        horizon = now_ms - self.window_ms
        while self._seen:
            key, time_ms = next(iter(self._seen.items()))
            if time_ms >= horizon:
                break
            del self._seen[key]


def accept_hello(
    hello: Hello, *, swarm: bytes, me: bytes, now_ms: int, nonces: NonceCache | None, echo: bytes = b"",
    window_s: float = CLOCK_WINDOW_S,
) -> None:
    """Judges a decoded hello: swarm, version, self, clock window, echo and replay."""
    if hello.swarm != swarm:
        raise BadHandshake("hello: another swarm")
    if hello.version != PROTOCOL_VERSION:
        raise BadHandshake(f"hello: protocol version {hello.version}, we speak {PROTOCOL_VERSION}")
    if hello.node == me:
        raise BadHandshake("hello: that is our own node id")
    if abs(hello.time_ms - now_ms) > window_s * 1000:
        raise BadHandshake("hello: clock differs by more than the window")
    if hello.echo != echo:
        raise BadHandshake("hello: echo does not match our nonce")
    if nonces is not None:
        nonces.remember(hello.node, hello.nonce, hello.time_ms, now_ms)
