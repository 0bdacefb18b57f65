"""The machinery under every entry body (ledger/bodies.py): the base class that decodes a msgpack map
into a frozen dataclass and checks it, the wire's size constants and the field checks.

`from_map` checks the key set and every value's type from the annotations (bool is not an int, an
int is not a float), then `__post_init__` checks ranges and lengths. Unknown keys are rejected: a
new field is a new protocol version, not a silent extension. The one exception: a field declared
with a default is optional on the wire and left out of `to_map` while it holds that default, so
entries and specs signed before the field existed decode, re-encode and hash exactly as before.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from ledger.errors import InvalidEntry

HASH_BYTES = 32    # sha256: entry ids, bundle hashes
COMMIT_BYTES = 20  # git object ids
KEY_BYTES = 32     # Ed25519 public keys
MAX_TEXT = 8192
MAX_SHORT_TEXT = 256
MAX_LIST = 512
UCR_PER_CREDIT = 1_000_000

CLAIM_STATUSES = frozenset({"ok", "crash", "timeout", "rejected", "discard"})
MINT_REASONS = frozenset({"record", "verification"})
JOB_TYPES = frozenset({"train"})  # what an executor may be asked to run
SETTLE_OUTCOMES = frozenset({"paid", "refunded", "cancelled", "reveal"})
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def _fail(cls: type, msg: str) -> typing.NoReturn:
    raise InvalidEntry(f"{cls.__name__.lower()}: {msg}")


def _check_value(cls: type, name: str, tp: Any, value: Any) -> None:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        _check_value(cls, name, inner, value)
        return
    if origin is list:
        if type(value) is not list:
            _fail(cls, f"{name} must be a list")
        if len(value) > MAX_LIST:
            _fail(cls, f"{name} has more than {MAX_LIST} items")
        (inner,) = get_args(tp)
        for item in value:
            _check_value(cls, name, inner, item)
        return
    if origin is dict:
        if type(value) is not dict or len(value) > MAX_LIST:
            _fail(cls, f"{name} must be a map of at most {MAX_LIST} items")
        key_tp, val_tp = get_args(tp)
        for k, v in value.items():
            _check_value(cls, name, key_tp, k)
            _check_value(cls, name, val_tp, v)
        return
    if type(value) is not tp:
        _fail(cls, f"{name} must be {tp.__name__}, got {type(value).__name__}")
    if tp is float and not math.isfinite(value):
        _fail(cls, f"{name} must be finite")
    if tp is str and len(value) > MAX_TEXT:
        _fail(cls, f"{name} is longer than {MAX_TEXT} characters")


_FIELD_TYPES: dict[type, tuple[list[str], dict[str, Any], dict[str, Any]]] = {}


def _field_types(cls: type) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """(field names, their types, the optional ones' defaults)."""
    # get_type_hints evaluates the string annotations on every call (~2/3 of a decode): cache per class.
    cached = _FIELD_TYPES.get(cls)
    if cached is None:
        fields = dataclasses.fields(cls)
        defaults: dict[str, Any] = {}
        for f in fields:
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
        cached = _FIELD_TYPES[cls] = ([f.name for f in fields], get_type_hints(cls), defaults)
    return cached


class Body:
    kind: ClassVar[str]

    @classmethod
    def from_map(cls, data: Any) -> Body:
        if type(data) is not dict:
            _fail(cls, "body must be a map")
        names, hints, defaults = _field_types(cls)
        missing, extra = set(names) - set(data) - set(defaults), set(data) - set(names)
        if missing or extra:
            _fail(cls, f"fields differ (missing {sorted(missing)}, unknown {sorted(extra)})")
        for name in names:
            if name in data:
                _check_value(cls, name, hints[name], data[name])
        return cls(**data)

    def to_map(self) -> dict[str, Any]:
        names, _, defaults = _field_types(type(self))
        out = {}
        for name in names:
            value = getattr(self, name)
            # an optional field at its default stays off the wire: older signed bytes are unchanged
            if name in defaults and type(value) is type(defaults[name]) and value == defaults[name]:
                continue
            out[name] = value
        return out

    def refs(self) -> tuple[bytes, ...]:
        """Entry ids this body depends on: the store accepts it only once they are present."""
        return ()

    # helpers for __post_init__
    def _bytes(self, name: str, value: bytes | None, size: int) -> None:
        if value is not None and len(value) != size:
            _fail(type(self), f"{name} must be {size} bytes, got {len(value)}")

    def _text(self, name: str, value: str, limit: int) -> None:
        if len(value) > limit:
            _fail(type(self), f"{name} is longer than {limit} characters")

    def _name(self, name: str, value: str) -> None:
        if not _NAME.fullmatch(value):
            _fail(type(self), f"{name} {value!r} is not a lowercase name of at most 64 characters")

    def _nonneg(self, name: str, value: int | float) -> None:
        if value < 0:
            _fail(type(self), f"{name} must not be negative")
