"""Git's delta format: rebuild an object from a base and instructions, and make such deltas.

Pure: no IO. `apply_delta` reads instructions from peers, so every count and offset in them is
checked against the base, the declared result size and the caller's limit before any copy.

A delta is two sizes (base, result) as little-endian base-128 varints, then instructions: a
byte with the high bit set copies a range of the base (its low 7 bits say which offset and size
bytes follow), a byte 1..127 inserts that many literal bytes, and 0 is reserved.
"""
from __future__ import annotations

from swarm.errors import BundleRejected

_DELTA_BLOCK_BYTES = 16  # granularity of the encoder's index of the base
_MAX_COPY_BYTES = 0x10000  # git's encoder never copies more per instruction; readers expect it


def apply_delta(base: bytes, delta: bytes, max_result_bytes: int) -> bytes:
    base_size, pos = _read_delta_size(delta, 0)
    result_size, pos = _read_delta_size(delta, pos)
    if base_size != len(base):
        raise BundleRejected(f"delta expects a {base_size}-byte base, found {len(base)} bytes")
    if result_size > max_result_bytes:
        raise BundleRejected(f"delta result of {result_size} bytes is over the limit")
    out = bytearray()
    while pos < len(delta):
        op, pos = delta[pos], pos + 1
        if op & 0x80:  # copy from the base: which offset and size bytes follow is in op's bits
            offset = size = 0
            for i in range(7):
                if op & (1 << i):
                    if pos >= len(delta):
                        raise BundleRejected("delta copy instruction is truncated")
                    if i < 4:
                        offset |= delta[pos] << (8 * i)
                    else:
                        size |= delta[pos] << (8 * (i - 4))
                    pos += 1
            size = size or 0x10000
            if offset + size > len(base) or len(out) + size > result_size:
                raise BundleRejected("delta copies outside its base or beyond its result")
            out += base[offset:offset + size]
        elif op:  # insert the next `op` bytes
            if pos + op > len(delta) or len(out) + op > result_size:
                raise BundleRejected("delta insert instruction is truncated or too long")
            out += delta[pos:pos + op]
            pos += op
        else:
            raise BundleRejected("delta uses the reserved instruction 0")
    if len(out) != result_size:
        raise BundleRejected(f"delta yields {len(out)} bytes, declared {result_size}")
    return bytes(out)


def _read_delta_size(delta: bytes, pos: int) -> tuple[int, int]:
    size = shift = 0
    while True:
        if pos >= len(delta) or shift > 56:
            raise BundleRejected("delta size header is truncated or too long")
        byte, pos = delta[pos], pos + 1
        size |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return size, pos


def _encode_delta_size(size: int) -> bytes:
    out = bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        out.append(byte | 0x80 if size else byte)
        if not size:
            return bytes(out)


def make_delta(base: bytes, target: bytes) -> bytes:
    """Delta instructions that rebuild `target` from `base`.

    Greedy: indexes `base` in aligned 16-byte blocks, slides over `target` looking each window
    up, and extends every hit both ways. Any run of 31 or more shared bytes is found, which for
    edited source code is nearly all of it; git's encoder finds a little more, at more cost.
    """
    index: dict[bytes, int] = {}
    for offset in range(0, len(base) - _DELTA_BLOCK_BYTES + 1, _DELTA_BLOCK_BYTES):
        index.setdefault(base[offset:offset + _DELTA_BLOCK_BYTES], offset)
    out = bytearray(_encode_delta_size(len(base)) + _encode_delta_size(len(target)))
    literal_from = pos = 0
    while pos + _DELTA_BLOCK_BYTES <= len(target):
        found = index.get(target[pos:pos + _DELTA_BLOCK_BYTES])
        if found is None:
            pos += 1
            continue
        start, base_start = pos, found
        while start > literal_from and base_start > 0 and target[start - 1] == base[base_start - 1]:
            start, base_start = start - 1, base_start - 1
        length = _common_prefix(base, found + _DELTA_BLOCK_BYTES,
                                target, pos + _DELTA_BLOCK_BYTES) + _DELTA_BLOCK_BYTES
        length += pos - start
        _emit_insert(out, target[literal_from:start])
        _emit_copy(out, base_start, length)
        literal_from = pos = start + length
    _emit_insert(out, target[literal_from:])
    return bytes(out)


def _common_prefix(a: bytes, a_pos: int, b: bytes, b_pos: int) -> int:
    step, length = 256, 0
    while step:  # compare whole slices first; Python is slow byte by byte
        if a[a_pos + length:a_pos + length + step] == b[b_pos + length:b_pos + length + step] \
                and a_pos + length + step <= len(a) and b_pos + length + step <= len(b):
            length += step
        else:
            step //= 2
    return length


def _emit_insert(out: bytearray, literal: bytes) -> None:
    for i in range(0, len(literal), 127):
        piece = literal[i:i + 127]
        out.append(len(piece))
        out += piece


def _emit_copy(out: bytearray, offset: int, length: int) -> None:
    while length:
        size = min(length, _MAX_COPY_BYTES)
        op, args = 0x80, bytearray()
        for i in range(4):
            if (offset >> (8 * i)) & 0xFF:
                op |= 1 << i
                args.append((offset >> (8 * i)) & 0xFF)
        encoded_size = 0 if size == 0x10000 else size  # 0 means 0x10000 in the format
        for i in range(3):
            if (encoded_size >> (8 * i)) & 0xFF:
                op |= 0x10 << i
                args.append((encoded_size >> (8 * i)) & 0xFF)
        out.append(op)
        out += args
        offset, length = offset + size, length - size
