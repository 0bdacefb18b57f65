"""Git bundles and packs as bytes: a strict, bounded reader and a small thin-pack writer.

Pure: no repository, no dulwich, no IO. Everything read here came from a peer.

Theory of operation. A bundle (git's `gitformat-bundle`) is a text header — a signature line,
one `-<oid>` line per prerequisite commit the receiver must already have, one `<oid> <refname>`
line per ref, a blank line — followed by a pack. A pack is `PACK`, a version, an object count,
the objects, and a SHA-1 of everything before it. Each object is a varint type-and-size header
and a zlib stream; a delta names its base either by offset inside the pack (OFS_DELTA) or by id
(REF_DELTA), and in a *thin* pack that id may be an object only the receiver has. That is how a
one-line change of a 30 KB train.py costs a few hundred bytes: its blob travels as "copy from
the old blob, insert one line".

Reading never trusts a declared number before checking it against `PackLimits`: the object
count, every inflated size, every delta result and the delta chain depth. Inflation is fed in
small slices with `max_length`, so a zlib bomb stops one byte past its declared size, not at
the end of the bomb.
"""
from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from swarm.delta import apply_delta, make_delta
from swarm.errors import BundleRejected
from swarm.gitobjects import KIND_NAMES, OID_BYTES, RawObject, parse_hex_oid

OFS_DELTA = 6
REF_DELTA = 7

SIGNATURE_V2 = b"# v2 git bundle\n"
SIGNATURE_V3 = b"# v3 git bundle\n"
MAX_HEADER_BYTES = 64 * 1024
MAX_PREREQUISITES = 64
MAX_REFS = 64
_REF_NAME = re.compile(rb"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces or control bytes

PACK_HEADER_BYTES = 12
PACK_TRAILER_BYTES = 20
_INFLATE_SLICE_BYTES = 16 * 1024  # compressed input fed to zlib per step; bounds each copy


@dataclass(frozen=True, slots=True)
class PackLimits:
    max_objects: int
    max_object_bytes: int  # inflated size of one object, delta instructions or delta result
    max_inflated_bytes: int  # sum over the whole pack, before and after delta resolution
    max_delta_depth: int = 64

    def __post_init__(self) -> None:
        if min(self.max_objects, self.max_object_bytes, self.max_inflated_bytes,
               self.max_delta_depth) < 1:
            raise ValueError(f"pack limits must be positive: {self}")


@dataclass(frozen=True, slots=True)
class BundleHeader:
    prerequisites: tuple[bytes, ...]  # 20-byte commit ids the receiver must hold
    refs: tuple[tuple[bytes, bytes], ...]  # (ref name, 20-byte id)
    pack_offset: int

    def __post_init__(self) -> None:
        if not self.refs:
            raise BundleRejected("bundle names no ref")


@dataclass(frozen=True, slots=True)
class PackEntry:
    offset: int  # where the entry starts in the pack; OFS_DELTA bases are named by it
    kind: int  # COMMIT, TREE, BLOB, OFS_DELTA or REF_DELTA
    data: bytes  # inflated: the object's content, or a delta's instructions
    base_offset: int = -1  # OFS_DELTA only
    base_oid: bytes = b""  # REF_DELTA only


# -- bundle header


def parse_bundle_header(data: bytes) -> BundleHeader:
    if data.startswith(SIGNATURE_V2):
        version, pos = 2, len(SIGNATURE_V2)
    elif data.startswith(SIGNATURE_V3):
        version, pos = 3, len(SIGNATURE_V3)
    else:
        raise BundleRejected(f"not a v2 or v3 git bundle: starts {data[:16]!r}")
    limit = min(len(data), MAX_HEADER_BYTES)
    prerequisites: list[bytes] = []
    refs: list[tuple[bytes, bytes]] = []
    while True:
        newline = data.find(b"\n", pos, limit)
        if newline < 0:
            raise BundleRejected(f"bundle header does not end within {limit} bytes")
        line, pos = data[pos:newline], newline + 1
        if not line:
            break
        if line.startswith(b"@"):
            # v3 capabilities come first; only SHA-1 objects without filters are understood.
            if version != 3 or prerequisites or refs or line != b"@object-format=sha1":
                raise BundleRejected(f"unsupported bundle capability line {line[:64]!r}")
        elif line.startswith(b"-"):
            oid, _, _comment = line[1:].partition(b" ")  # git puts the commit's subject here
            prerequisites.append(parse_hex_oid(oid, "bundle prerequisite"))
            if len(prerequisites) > MAX_PREREQUISITES:
                raise BundleRejected(f"bundle has more than {MAX_PREREQUISITES} prerequisites")
        else:
            oid, sep, name = line.partition(b" ")
            if not sep or _REF_NAME.fullmatch(name) is None:
                raise BundleRejected(f"malformed bundle ref line {line[:64]!r}")
            refs.append((name, parse_hex_oid(oid, "bundle ref")))
            if len(refs) > MAX_REFS:
                raise BundleRejected(f"bundle has more than {MAX_REFS} refs")
    return BundleHeader(tuple(prerequisites), tuple(refs), pos)


def write_bundle(prerequisites: Sequence[bytes], refs: Sequence[tuple[bytes, bytes]],
                 pack: bytes) -> bytes:
    lines = [SIGNATURE_V2]
    lines += [b"-" + oid.hex().encode() + b"\n" for oid in prerequisites]
    lines += [oid.hex().encode() + b" " + name + b"\n" for name, oid in refs]
    return b"".join(lines) + b"\n" + pack


# -- pack reading


def parse_pack(pack: bytes, limits: PackLimits) -> list[PackEntry]:
    """The entries of a pack, inflated and checked, deltas not yet resolved."""
    if len(pack) < PACK_HEADER_BYTES + PACK_TRAILER_BYTES or pack[:4] != b"PACK":
        raise BundleRejected("bundle does not carry a pack")
    version = int.from_bytes(pack[4:8], "big")
    count = int.from_bytes(pack[8:12], "big")
    if version not in (2, 3):
        raise BundleRejected(f"pack version {version} is not 2 or 3")
    if count > limits.max_objects:
        raise BundleRejected(f"pack holds {count} objects, more than the limit {limits.max_objects}")
    end = len(pack) - PACK_TRAILER_BYTES
    # The checksum first: a truncated or bit-flipped pack is refused before any inflation.
    if hashlib.sha1(memoryview(pack)[:end]).digest() != pack[end:]:
        raise BundleRejected("pack checksum does not match its content (truncated or altered)")
    view = memoryview(pack)
    entries: list[PackEntry] = []
    pos, inflated_bytes = PACK_HEADER_BYTES, 0
    for _ in range(count):
        start = pos
        kind, size, pos = _read_entry_header(pack, pos, end)
        if size > limits.max_object_bytes:
            raise BundleRejected(f"pack object at {start} declares {size} bytes, over the limit")
        inflated_bytes += size
        if inflated_bytes > limits.max_inflated_bytes:
            raise BundleRejected(f"pack inflates to more than {limits.max_inflated_bytes} bytes")
        base_offset, base_oid = -1, b""
        if kind == OFS_DELTA:
            distance, pos = _read_base_distance(pack, pos, end)
            base_offset = start - distance
            if distance == 0 or base_offset < PACK_HEADER_BYTES:
                raise BundleRejected(f"pack delta at {start} points outside the pack")
        elif kind == REF_DELTA:
            if pos + OID_BYTES > end:
                raise BundleRejected(f"pack delta at {start} is truncated")
            base_oid, pos = pack[pos:pos + OID_BYTES], pos + OID_BYTES
        elif kind not in KIND_NAMES:
            raise BundleRejected(f"pack object at {start} has unsupported type {kind}")
        data, pos = _inflate(view, pos, end, size)
        entries.append(PackEntry(start, kind, data, base_offset, base_oid))
    if pos != end:
        raise BundleRejected(f"pack has {end - pos} bytes after its last object")
    return entries


def _read_entry_header(pack: bytes, pos: int, end: int) -> tuple[int, int, int]:
    if pos >= end:
        raise BundleRejected("pack ends before its declared object count")
    byte = pack[pos]
    kind, size, shift, pos = (byte >> 4) & 7, byte & 0x0F, 4, pos + 1
    while byte & 0x80:
        if pos >= end or shift > 56:
            raise BundleRejected("pack object header is truncated or too long")
        byte = pack[pos]
        size |= (byte & 0x7F) << shift
        shift, pos = shift + 7, pos + 1
    return kind, size, pos


def _read_base_distance(pack: bytes, pos: int, end: int) -> tuple[int, int]:
    # OFS_DELTA's own varint: big-endian groups, each continuation adding one (no redundancy).
    if pos >= end:
        raise BundleRejected("pack delta offset is truncated")
    byte = pack[pos]
    distance, pos = byte & 0x7F, pos + 1
    while byte & 0x80:
        if pos >= end or distance > 1 << 48:
            raise BundleRejected("pack delta offset is truncated or too long")
        byte = pack[pos]
        distance, pos = ((distance + 1) << 7) | (byte & 0x7F), pos + 1
    return distance, pos


def _inflate(view: memoryview, pos: int, end: int, size: int) -> tuple[bytes, int]:
    inflater = zlib.decompressobj()
    out = bytearray()
    while not inflater.eof:
        if pos >= end:
            raise BundleRejected("pack object's zlib stream is truncated")
        chunk: bytes | memoryview = view[pos:min(pos + _INFLATE_SLICE_BYTES, end)]
        pos += len(chunk)
        while True:
            try:
                # Room for one byte more than declared, so an overlong stream is caught early.
                out += inflater.decompress(chunk, size + 1 - len(out))
            except zlib.error as exc:
                raise BundleRejected(f"pack object's zlib stream is corrupt: {exc}") from None
            if len(out) > size:
                raise BundleRejected(f"pack object inflates beyond its declared {size} bytes")
            chunk = inflater.unconsumed_tail
            if inflater.eof or not chunk:
                break
    if len(out) != size:
        raise BundleRejected(f"pack object inflates to {len(out)} bytes, declared {size}")
    return bytes(out), pos - len(inflater.unused_data)


# -- resolution


@dataclass(frozen=True, slots=True)
class Resolution:
    objects: tuple[RawObject, ...]  # every entry that could be resolved, in pack order
    missing_bases: frozenset[bytes]  # REF_DELTA bases found neither in the pack nor `external`


def resolve_pack(entries: Sequence[PackEntry], external: Mapping[bytes, RawObject],
                 limits: PackLimits) -> Resolution:
    """Turns deltas into whole objects; `external` holds the receiver's objects thin deltas use.

    Works from the whole objects outward, waking each delta once its base is known, so a chain
    costs one pass however the pack orders it. Duplicate objects are refused.
    """
    by_offset = {entry.offset: i for i, entry in enumerate(entries)}
    waiting_offset: dict[int, list[int]] = {}
    waiting_oid: dict[bytes, list[int]] = {}
    ready: list[tuple[int, RawObject | None, int]] = []  # (entry, base, depth of the base)
    for i, entry in enumerate(entries):
        if entry.kind == OFS_DELTA:
            if entry.base_offset not in by_offset:
                raise BundleRejected(f"pack delta at {entry.offset} points between objects")
            waiting_offset.setdefault(entry.base_offset, []).append(i)
        elif entry.kind == REF_DELTA:
            if entry.base_oid in external:
                ready.append((i, external[entry.base_oid], 0))
            else:
                waiting_oid.setdefault(entry.base_oid, []).append(i)
        else:
            ready.append((i, None, -1))
    resolved: list[RawObject | None] = [None] * len(entries)
    seen: set[bytes] = set()
    result_bytes = 0
    while ready:
        i, base, base_depth = ready.pop()
        entry = entries[i]
        if base is None:
            obj = RawObject.of(entry.kind, entry.data)
        else:
            if base_depth + 1 > limits.max_delta_depth:
                raise BundleRejected(f"pack delta chain deeper than {limits.max_delta_depth}")
            obj = RawObject.of(base.kind, apply_delta(base.data, entry.data,
                                                      limits.max_object_bytes))
        result_bytes += len(obj.data)
        if result_bytes > limits.max_inflated_bytes:
            raise BundleRejected(f"pack resolves to more than {limits.max_inflated_bytes} bytes")
        if obj.oid in seen:
            raise BundleRejected(f"pack holds object {obj.oid.hex()} twice")
        seen.add(obj.oid)
        resolved[i] = obj
        depth = base_depth + 1
        for waiter in waiting_offset.pop(entry.offset, []) + waiting_oid.pop(obj.oid, []):
            ready.append((waiter, obj, depth))
    return Resolution(tuple(o for o in resolved if o is not None), frozenset(waiting_oid))


# -- pack writing


def write_pack(items: Sequence[tuple[RawObject, RawObject | None]]) -> bytes:
    """A pack of `(object, delta base or None)`, written as a delta where that is smaller.

    A base written earlier in the pack is named by offset (OFS_DELTA), any other by id
    (REF_DELTA): that is a thin pack, for a receiver that holds the base.
    """
    out = bytearray(b"PACK" + (2).to_bytes(4, "big") + len(items).to_bytes(4, "big"))
    offsets: dict[bytes, int] = {}
    for obj, base in items:
        start = len(out)
        offsets.setdefault(obj.oid, start)
        whole = zlib.compress(obj.data, 9)
        if base is not None:
            delta = make_delta(base.data, obj.data)
            packed_delta = zlib.compress(delta, 9)
            if base.oid in offsets:
                base_ref = _encode_base_distance(start - offsets[base.oid])
                entry = _entry_header(OFS_DELTA, len(delta)) + base_ref + packed_delta
            else:
                entry = _entry_header(REF_DELTA, len(delta)) + base.oid + packed_delta
            if len(entry) < len(whole) + 4:
                out += entry
                continue
        out += _entry_header(obj.kind, len(obj.data)) + whole
    return bytes(out + hashlib.sha1(out).digest())


def _encode_base_distance(distance: int) -> bytes:
    # The inverse of _read_base_distance: each continuation byte stands for one more 128.
    out = bytearray([distance & 0x7F])
    distance >>= 7
    while distance:
        distance -= 1
        out.insert(0, 0x80 | (distance & 0x7F))
        distance >>= 7
    return bytes(out)


def _entry_header(kind: int, size: int) -> bytes:
    out = bytearray([(kind << 4) | (size & 0x0F)])
    size >>= 4
    while size:
        out[-1] |= 0x80
        out.append(size & 0x7F)
        size >>= 7
    return bytes(out)
