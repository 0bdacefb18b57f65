"""Messages peers exchange over a replication websocket, and their one codec.

Knows nothing about sockets, the ledger or peers' state: bytes in, frozen dataclasses out.

    frame = msgpack [TYPE, field, ...]   (one binary websocket message, at most MAX_FRAME_BYTES)

Entries travel as their signed wire bytes, untouched: the ledger checks each signature over the
bytes as received. Every decoder bounds sizes before and while it parses and raises only
`BadMessage`; nothing here trusts a peer's lengths, types or counts.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import msgpack

from ledger.entry import MAX_WIRE_BYTES
from swarm.errors import BadMessage

MAX_FRAME_BYTES = 1 << 20            # one websocket message; also the ws max_msg_size
MAX_ENTRIES_PER_FRAME = 512
MAX_HEADS_PER_FRAME = 4096           # {author: seq} pairs per page; bigger tables paginate
MAX_WANTS_PER_FRAME = 256
MAX_IDS_PER_FRAME = 512              # entry ids per Have or WantIds frame
ENTRY_ID_BYTES = 32
MAX_ADDRS_PER_FRAME = 64
MAX_ADDR_CHARS = 300
MAX_SEQ = (1 << 63) - 1
AUTHOR_BYTES = 32
LAST_AUTHOR = b"\xff" * AUTHOR_BYTES  # `hi` of a heads table's last page
DIGEST_BYTES = 32
TIP_BYTES = 8                         # prefix of a head's entry id: tells equal-length forks apart

_ENTRIES, _HEADS, _WANT, _PING, _PONG, _PEERS, _DIGEST = 1, 2, 3, 4, 5, 6, 7
_HAVE, _WANT_IDS, _HEADS_DELTA, _HELD_QUERY, _HELD_REPLY, _STAMPS = 8, 9, 10, 11, 12, 13
MAX_STAMPS_PER_FRAME = 256
STAMP_NONCE_BYTES = 8
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?$")


def parse_addr(text: Any) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) -> (host, port); raises BadMessage for anything else."""
    if type(text) is not str or not 3 <= len(text) <= MAX_ADDR_CHARS:
        raise BadMessage("address must be a short host:port string")
    host, sep, port_text = text.rpartition(":")
    if not sep or not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        raise BadMessage(f"address {text!r} has no port")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise BadMessage(f"address {text!r}: port out of range")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise BadMessage(f"address {text!r}: bad IPv6 literal") from None
        return host[1:-1], port
    if not _HOSTNAME.match(host):
        raise BadMessage(f"address {text!r}: bad host")
    return host, port


def check_addr(text: Any) -> str:
    parse_addr(text)
    return str(text)


def _author(value: Any, what: str) -> bytes:
    if type(value) is not bytes or len(value) != AUTHOR_BYTES:
        raise BadMessage(f"{what} must be {AUTHOR_BYTES} bytes")
    return value


def _seq(value: Any, what: str, *, low: int = 0) -> int:
    if type(value) is not int or not low <= value <= MAX_SEQ:
        raise BadMessage(f"{what} must be an integer in [{low}, 2^63)")
    return value


def _pairs(value: Any, what: str, limit: int) -> tuple[tuple[bytes, int], ...]:
    if type(value) not in (list, tuple) or len(value) > limit:
        raise BadMessage(f"{what} must be a list of at most {limit} pairs")
    out = []
    for item in value:
        if type(item) not in (list, tuple) or len(item) != 2:
            raise BadMessage(f"{what} item must be an [author, seq] pair")
        out.append((_author(item[0], f"{what} author"), _seq(item[1], f"{what} seq")))
    return tuple(out)


def _ids(value: Any, what: str) -> tuple[bytes, ...]:
    if type(value) not in (list, tuple) or not 1 <= len(value) <= MAX_IDS_PER_FRAME:
        raise BadMessage(f"{what}: 1 to {MAX_IDS_PER_FRAME} entry ids")
    for item in value:
        if type(item) is not bytes or len(item) != ENTRY_ID_BYTES:
            raise BadMessage(f"{what}: an entry id is {ENTRY_ID_BYTES} bytes")
    return tuple(value)


def _check_rows(rows: Any, lo: bytes) -> None:
    """(author, seq, tip) rows with authors ascending strictly above `lo`."""
    if type(rows) is not tuple or len(rows) > MAX_HEADS_PER_FRAME:
        raise BadMessage(f"heads: at most {MAX_HEADS_PER_FRAME} rows")
    last = lo
    for row in rows:
        if type(row) is not tuple or len(row) != 3:
            raise BadMessage("heads row must be (author, seq, tip)")
        author, seq, tip = row
        _author(author, "heads author")
        _seq(seq, "heads seq", low=1)
        if type(tip) is not bytes or len(tip) != TIP_BYTES:
            raise BadMessage(f"heads tip must be {TIP_BYTES} bytes")
        if not last < author:
            raise BadMessage("heads: authors must ascend strictly")
        last = author


def _heads_rows(value: Any, limit: int) -> tuple[Any, ...]:
    """Rows as tuples, unchecked: Heads.__post_init__ checks each one."""
    if type(value) is not list or len(value) > limit:
        raise BadMessage(f"heads must be a list of at most {limit} rows")
    return tuple(tuple(row) if type(row) is list else row for row in value)


@dataclass(frozen=True, slots=True)
class Entries:
    """Signed entry wires: a push of new entries or an anti-entropy batch."""

    wires: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if type(self.wires) is not tuple or not 1 <= len(self.wires) <= MAX_ENTRIES_PER_FRAME:
            raise BadMessage(f"entries: 1 to {MAX_ENTRIES_PER_FRAME} wires")
        for wire in self.wires:
            if type(wire) is not bytes or not 0 < len(wire) <= MAX_WIRE_BYTES:
                raise BadMessage(f"entries: a wire must be 1 to {MAX_WIRE_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class Heads:
    """One page of the sender's {author: highest seq}: every author in (lo, hi], ascending.

    An author in that range that the page does not list is one the sender does not hold, so
    the receiver sends it whole; the last page has hi = LAST_AUTHOR. Each row also carries the
    first TIP_BYTES of the head entry's id, so two feeds of one length but different content
    (a fork) are noticed and the fork proof made.
    """

    lo: bytes  # b"" on the first page
    hi: bytes
    heads: tuple[tuple[bytes, int, bytes], ...]  # (author, seq, tip)

    def __post_init__(self) -> None:
        if self.lo != b"":
            _author(self.lo, "heads lo")
        _author(self.hi, "heads hi")
        if self.lo >= self.hi:
            raise BadMessage("heads: lo must be below hi")
        _check_rows(self.heads, self.lo)
        if self.heads and self.heads[-1][0] > self.hi:
            raise BadMessage("heads: authors must ascend strictly inside (lo, hi]")

    @property
    def last(self) -> bool:
        return self.hi == LAST_AUTHOR


@dataclass(frozen=True, slots=True)
class Want:
    """Asks for entries: for each (author, seq), the author's entries after seq."""

    wants: tuple[tuple[bytes, int], ...]

    def __post_init__(self) -> None:
        if not self.wants:
            raise BadMessage("want: at least one pair")
        _pairs(self.wants, "want", MAX_WANTS_PER_FRAME)


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int

    def __post_init__(self) -> None:
        _seq(self.nonce, "ping nonce")


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int

    def __post_init__(self) -> None:
        _seq(self.nonce, "pong nonce")


@dataclass(frozen=True, slots=True)
class Peers:
    """Peer exchange: listen addresses the sender knows (unverified hints, never trusted)."""

    addrs: tuple[str, ...]

    def __post_init__(self) -> None:
        if type(self.addrs) is not tuple or len(self.addrs) > MAX_ADDRS_PER_FRAME:
            raise BadMessage(f"peers: at most {MAX_ADDRS_PER_FRAME} addresses")
        for addr in self.addrs:
            check_addr(addr)


@dataclass(frozen=True, slots=True)
class Digest:
    """A hash of the sender's whole heads table: a peer whose own differs answers with its heads."""

    digest: bytes

    def __post_init__(self) -> None:
        if type(self.digest) is not bytes or len(self.digest) != DIGEST_BYTES:
            raise BadMessage(f"digest must be {DIGEST_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class Have:
    """Lazy forwarding: the sender holds these entries and will send them on a WantIds."""

    ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _ids(self.ids, "have")


@dataclass(frozen=True, slots=True)
class WantIds:
    """Asks for entries by id, after the receiver announced them with Have."""

    ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _ids(self.ids, "want ids")


@dataclass(frozen=True, slots=True)
class HeadsDelta:
    """The sender's heads rows that changed since the last heads it sent on this link.

    Unlike a Heads page it says nothing about authors it does not list: the receiver sends what
    the sender lacks among these and asks (Want) for what it lacks itself.
    """

    heads: tuple[tuple[bytes, int, bytes], ...]

    def __post_init__(self) -> None:
        if not self.heads:
            raise BadMessage("heads delta: at least one row")
        _check_rows(self.heads, b"")


@dataclass(frozen=True, slots=True)
class HeldQuery:
    """Do you hold this entry? Answered once with a HeldReply carrying the same nonce."""

    nonce: int
    entry_id: bytes

    def __post_init__(self) -> None:
        _seq(self.nonce, "held query nonce")
        if type(self.entry_id) is not bytes or len(self.entry_id) != ENTRY_ID_BYTES:
            raise BadMessage(f"held query: an entry id is {ENTRY_ID_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class HeldReply:
    nonce: int
    held: bool

    def __post_init__(self) -> None:
        _seq(self.nonce, "held reply nonce")
        if type(self.held) is not bool:
            raise BadMessage("held reply: held must be a boolean")


@dataclass(frozen=True, slots=True)
class Stamps:
    """Identity stamps (swarm/stamp.py) of authors whose entries follow on this link: anyone may
    forward one, the receiver checks each (one sha256) before it counts."""

    stamps: tuple[tuple[bytes, bytes], ...]  # (author, nonce)

    def __post_init__(self) -> None:
        if type(self.stamps) is not tuple or not 1 <= len(self.stamps) <= MAX_STAMPS_PER_FRAME:
            raise BadMessage(f"stamps: 1 to {MAX_STAMPS_PER_FRAME} (author, nonce) pairs")
        for pair in self.stamps:
            if type(pair) is not tuple or len(pair) != 2:
                raise BadMessage("stamps: each item is an (author, nonce) pair")
            _author(pair[0], "stamp author")
            if type(pair[1]) is not bytes or len(pair[1]) != STAMP_NONCE_BYTES:
                raise BadMessage(f"stamps: a nonce is {STAMP_NONCE_BYTES} bytes")


Message = (Entries | Heads | Want | Ping | Pong | Peers | Digest | Have | WantIds | HeadsDelta | HeldQuery | HeldReply
           | Stamps)


def encode_message(message: Message) -> bytes:
    fields: list[Any]
    if isinstance(message, Entries):
        fields = [_ENTRIES, list(message.wires)]
    elif isinstance(message, Heads):
        fields = [_HEADS, message.lo, message.hi, [list(p) for p in message.heads]]
    elif isinstance(message, Want):
        fields = [_WANT, [list(p) for p in message.wants]]
    elif isinstance(message, Ping):
        fields = [_PING, message.nonce]
    elif isinstance(message, Pong):
        fields = [_PONG, message.nonce]
    elif isinstance(message, Peers):
        fields = [_PEERS, list(message.addrs)]
    elif isinstance(message, Digest):
        fields = [_DIGEST, message.digest]
    elif isinstance(message, Have):
        fields = [_HAVE, list(message.ids)]
    elif isinstance(message, WantIds):
        fields = [_WANT_IDS, list(message.ids)]
    elif isinstance(message, HeadsDelta):
        fields = [_HEADS_DELTA, [list(p) for p in message.heads]]
    elif isinstance(message, HeldQuery):
        fields = [_HELD_QUERY, message.nonce, message.entry_id]
    elif isinstance(message, HeldReply):
        fields = [_HELD_REPLY, message.nonce, message.held]
    elif isinstance(message, Stamps):
        fields = [_STAMPS, [list(p) for p in message.stamps]]
    else:
        raise TypeError(f"not a message: {type(message).__name__}")
    frame: bytes = msgpack.packb(fields, use_bin_type=True)
    if len(frame) > MAX_FRAME_BYTES:
        raise BadMessage(f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    return frame


def _refuse_ext(code: int, data: bytes) -> Any:
    raise BadMessage(f"extension type {code} is not allowed")


ANSWER_KINDS = frozenset({_ENTRIES, _HEADS, _HEADS_DELTA})  # what a peer sends back when asked


def frame_kind(data: bytes) -> int | None:
    """The message type of an encoded frame from its first two bytes, without decoding it (for
    the rate limiter); None if the frame does not start like one of ours."""
    if len(data) >= 2 and 0x91 <= data[0] <= 0x9F and data[1] < 0x80:
        return data[1]
    return None


def unpack_frame(data: Any, *, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """Plain msgpack with every length bounded; the one place msgpack meets peer bytes."""
    if type(data) is not bytes:
        raise BadMessage(f"a frame is bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise BadMessage(f"frame of {len(data)} bytes exceeds {max_bytes}")
    try:
        return msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, ext_hook=_refuse_ext, timestamp=0,
            max_bin_len=max_bytes, max_str_len=MAX_ADDR_CHARS * 4, max_array_len=MAX_HEADS_PER_FRAME,
            max_map_len=0, max_ext_len=0,
        )
    except BadMessage:
        raise
    except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError and more
        raise BadMessage(f"not msgpack: {type(exc).__name__}") from None


def _tuple(value: Any, what: str) -> tuple[Any, ...]:
    if type(value) is not list:
        raise BadMessage(f"{what} must be a list")
    return tuple(value)


def decode_message(data: Any) -> Message:
    fields = unpack_frame(data)
    if type(fields) is not list or not fields or type(fields[0]) is not int:
        raise BadMessage("a frame is [type, ...]")
    kind, rest = fields[0], fields[1:]
    arity = {_ENTRIES: 1, _HEADS: 3, _WANT: 1, _PING: 1, _PONG: 1, _PEERS: 1, _DIGEST: 1, _HAVE: 1, _WANT_IDS: 1,
             _HEADS_DELTA: 1, _HELD_QUERY: 2, _HELD_REPLY: 2, _STAMPS: 1}.get(kind)
    if arity is None:
        raise BadMessage(f"unknown message type {kind}")
    if len(rest) != arity:
        raise BadMessage(f"message type {kind} takes {arity} fields, got {len(rest)}")
    if kind == _ENTRIES:
        return Entries(_tuple(rest[0], "entries"))
    if kind == _HEADS:
        return Heads(rest[0], rest[1], _heads_rows(rest[2], MAX_HEADS_PER_FRAME))
    if kind == _WANT:
        return Want(_pairs(rest[0], "want", MAX_WANTS_PER_FRAME))
    if kind == _PING:
        return Ping(rest[0])
    if kind == _PONG:
        return Pong(rest[0])
    if kind == _DIGEST:
        return Digest(rest[0])
    if kind == _HAVE:
        return Have(_tuple(rest[0], "have"))
    if kind == _WANT_IDS:
        return WantIds(_tuple(rest[0], "want ids"))
    if kind == _HEADS_DELTA:
        return HeadsDelta(_heads_rows(rest[0], MAX_HEADS_PER_FRAME))
    if kind == _HELD_QUERY:
        return HeldQuery(rest[0], rest[1])
    if kind == _HELD_REPLY:
        return HeldReply(rest[0], rest[1])
    if kind == _STAMPS:
        return Stamps(tuple(tuple(p) if type(p) is list else p for p in _tuple(rest[0], "stamps")))
    return Peers(_tuple(rest[0], "peers"))
