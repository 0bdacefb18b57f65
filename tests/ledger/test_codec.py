"""Canonical msgpack: one value, one encoding; everything else is refused with the package's error."""
from __future__ import annotations

import math
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.entry import DOMAIN, decode_entry
from ledger.errors import InvalidEntry, LedgerError
from ledger.keys import Identity
from ledger.spec import DOMAIN as SPEC_DOMAIN
from ledger.spec import decode_spec

LIMIT = 1 << 20
KEY = Identity.from_seed(b"\x07" * 32)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300)
@given(values)
def test_round_trip(value: Any) -> None:
    data = codec.encode(value)
    back = codec.decode(data, max_bytes=LIMIT)
    assert back == value
    assert codec.encode(back) == data


@settings(max_examples=100)
@given(st.dictionaries(st.text(max_size=8), st.integers(0, 1000), min_size=2, max_size=8))
def test_map_keys_are_sorted_by_utf8_bytes_whatever_the_insertion_order(d: dict[str, int]) -> None:
    reversed_insertion = dict(reversed(list(d.items())))
    assert codec.encode(d) == codec.encode(reversed_insertion)
    assert list(codec.decode(codec.encode(d), max_bytes=LIMIT)) == sorted(d, key=lambda k: k.encode())


def test_floats_are_always_float64() -> None:
    assert codec.encode(1.5) == b"\xcb" + struct.pack(">d", 1.5)
    assert codec.encode(math.inf) == b"\xcb" + struct.pack(">d", math.inf)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (msgpack.packb({"b": 1, "a": 2}), "unsorted map keys"),
        (msgpack.packb(1.5, use_single_float=True), "float32"),
        (b"\xcd\x00\x01", "uint16 holding 1"),
        (b"\xd0\x05", "int8 holding a positive fixint"),
        (b"\xce\x00\x00\x00\x80", "uint32 holding 128"),
        (b"\xd9\x01a", "str8 holding a one-byte string"),
        (b"\xc4\x00" + b"", "empty bin8 is canonical"),  # placeholder replaced below
        (b"\xdc\x00\x01\x01", "array16 holding one item"),
        (b"\xde\x00\x01\xa1a\x01", "map16 holding one pair"),
        (b"\x82\xa1a\x01\xa1a\x02", "duplicate keys"),
        (msgpack.packb(msgpack.ExtType(5, b"x")), "ext type"),
        (msgpack.packb(msgpack.Timestamp(1, 0)), "timestamp ext"),
        (codec.encode(1) + b"\x00", "trailing byte"),
        (codec.encode([1, 2])[:-1], "truncated"),
        (b"\x81\x01\x02", "integer map key"),
        (b"\x81\xc4\x01a\x02", "bytes map key"),
        (b"\xa2\xff\xfe", "invalid UTF-8 in a str"),
        (b"\xc1", "the never-used byte"),
        (b"", "nothing at all"),
    ],
)
def test_non_canonical_and_malformed_forms_are_refused(data: bytes, why: str) -> None:
    if why == "empty bin8 is canonical":
        assert codec.decode(b"\xc4\x00", max_bytes=LIMIT) == b""
        return
    with pytest.raises(InvalidEntry):
        codec.decode(data, max_bytes=LIMIT)


def test_nesting_beyond_the_limit_is_refused() -> None:
    deep: Any = 1
    for _ in range(codec.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(InvalidEntry, match="nesting"):
        codec.encode(deep)
    with pytest.raises(InvalidEntry, match="nesting"):
        codec.decode(b"\x91" * (codec.MAX_DEPTH + 1) + b"\x01", max_bytes=LIMIT)
    codec.decode(b"\x91" * codec.MAX_DEPTH + b"\x01", max_bytes=LIMIT)  # at the limit: fine


def test_size_and_input_type_limits() -> None:
    data = codec.encode("x" * 100)
    with pytest.raises(InvalidEntry, match="exceeds"):
        codec.decode(data, max_bytes=len(data) - 1)
    for not_bytes in (bytearray(data), memoryview(data), data.decode("latin-1")):
        with pytest.raises(InvalidEntry):
            codec.decode(not_bytes, max_bytes=LIMIT)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1 << 64, -(1 << 63) - 1, {1: 2}, {b"k": 1}, object(), {1.5}, b"x".decode])
def test_what_cannot_be_encoded_is_refused(value: Any) -> None:
    with pytest.raises(InvalidEntry):
        codec.encode(value)


# -- random bytes meet every decoder: only the package's own errors come out

def _signed(domain: bytes, payload: bytes) -> bytes:
    """A wire whose signature is good, so the decoder behind the signature check is reached."""
    return KEY.public_key + KEY.sign(domain + payload) + payload


@settings(max_examples=1500)
@given(st.binary(max_size=300))
def test_random_bytes_to_decode_raise_only_ledger_errors(data: bytes) -> None:
    try:
        codec.decode(data, max_bytes=LIMIT)
    except LedgerError:
        pass


@settings(max_examples=1000)
@given(st.binary(max_size=400), st.booleans())
def test_random_bytes_to_decode_entry_raise_only_ledger_errors(data: bytes, sign: bool) -> None:
    wire = _signed(DOMAIN, data) if sign else data
    try:
        decode_entry(wire)
    except LedgerError:
        pass
    try:
        decode_entry(data, signature_checked=True)
    except LedgerError:
        pass


@settings(max_examples=1000)
@given(st.binary(max_size=400), st.booleans())
def test_random_bytes_to_decode_spec_raise_only_ledger_errors(data: bytes, sign: bool) -> None:
    try:
        decode_spec(_signed(SPEC_DOMAIN, data) if sign else data)
    except LedgerError:
        pass


@settings(max_examples=300)
@given(values)
def test_random_structures_behind_a_good_signature_raise_only_ledger_errors(value: Any) -> None:
    payload = codec.encode(value)
    for decode in (lambda: decode_entry(_signed(DOMAIN, payload)), lambda: decode_spec(_signed(SPEC_DOMAIN, payload))):
        try:
            decode()
        except LedgerError:
            pass


@settings(max_examples=200)
@given(st.lists(values, min_size=8, max_size=8))
@pytest.mark.slow
def test_random_eight_field_payloads_raise_only_ledger_errors(fields: list[Any]) -> None:
    fields[0] = 1  # the right version: reach the header and body checks
    try:
        decode_entry(_signed(DOMAIN, codec.encode(fields)))
    except LedgerError:
        pass
