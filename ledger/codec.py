"""Canonical msgpack: the one byte encoding of every signed structure.

Canonical means: map keys are strings sorted by their UTF-8 bytes, integers use their shortest
form, floats are always float64, byte strings use the bin family, and no extension types appear.
`decode` accepts only bytes that `encode` would have produced: it decodes, re-encodes and compares,
so a value has exactly one encoding and an entry exactly one hash.
"""
from __future__ import annotations

from typing import Any

import msgpack

from ledger.errors import InvalidEntry

MAX_DEPTH = 8  # bodies are shallow; deep nesting is only ever an attack

Value = None | bool | int | float | str | bytes | list[Any] | dict[str, Any]


def _normalize(value: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise InvalidEntry(f"nesting deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        if isinstance(value, int) and not isinstance(value, bool) and not -(1 << 63) <= value < (1 << 64):
            raise InvalidEntry("integer out of the 64-bit range")
        return value
    if isinstance(value, (list, tuple)):
        return [_normalize(v, depth + 1) for v in value]
    if isinstance(value, dict):
        for key in value:
            if type(key) is not str:
                raise InvalidEntry(f"map key must be a string, got {type(key).__name__}")
        return {k: _normalize(value[k], depth + 1) for k in sorted(value, key=lambda k: k.encode())}
    raise InvalidEntry(f"cannot encode {type(value).__name__}")


def encode(value: Any) -> bytes:
    packed: bytes = msgpack.packb(_normalize(value), use_bin_type=True, use_single_float=False)
    return packed


def _refuse_ext(code: int, data: bytes) -> Any:
    raise InvalidEntry(f"extension type {code} is not allowed")


def decode(data: bytes, *, max_bytes: int) -> Any:
    if type(data) is not bytes:
        raise InvalidEntry(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise InvalidEntry(f"{len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        value = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True, ext_hook=_refuse_ext,
            timestamp=0,
        )
    except InvalidEntry:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise InvalidEntry(f"not msgpack: {exc}") from None
    except Exception as exc:  # msgpack raises a few undocumented types on hostile input
        raise InvalidEntry(f"not msgpack: {type(exc).__name__}") from None
    # Same verdict as `encode(value) != data`, about 3x faster (decoding is most of the CPU of
    # a replicated batch after the signatures): check what msgpack would not (key types, key
    # order, depth), then let msgpack re-encode the value as decoded.
    _check_shape(value, 0)
    if msgpack.packb(value, use_bin_type=True, use_single_float=False) != data:
        raise InvalidEntry("not the canonical encoding")
    return value


_SCALARS = frozenset({type(None), bool, int, float, str, bytes})  # msgpack's Timestamp is not one


def _check_shape(value: Any, depth: int) -> None:
    """Raises as `_normalize` would on a decoded value; unsorted keys are not canonical."""
    if depth > MAX_DEPTH:
        raise InvalidEntry(f"nesting deeper than {MAX_DEPTH}")
    if type(value) is list:
        items: Any = value
    elif type(value) is dict:
        keys = list(value)
        for key in keys:
            if type(key) is not str:
                raise InvalidEntry(f"map key must be a string, got {type(key).__name__}")
        if len(keys) > 1 and keys != sorted(keys, key=lambda k: k.encode()):
            raise InvalidEntry("not the canonical encoding")
        items = value.values()
    elif type(value) in _SCALARS:
        return
    else:
        raise InvalidEntry(f"cannot encode {type(value).__name__}")
    for item in items:
        if type(item) is list or type(item) is dict:
            _check_shape(item, depth + 1)
        elif depth + 1 > MAX_DEPTH:
            raise InvalidEntry(f"nesting deeper than {MAX_DEPTH}")
        elif type(item) not in _SCALARS:
            raise InvalidEntry(f"cannot encode {type(item).__name__}")
