"""The signed hello: known good, every refusal, replay protection, and decoder fuzzing."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.errors import BadHandshake, ReplayedHandshake
from swarm.handshake import (
    DOMAIN, NONCE_BYTES, NonceCache, accept_hello, decode_hello, new_nonce, sign_hello,
)
from tests.ledger import factory

ME, THEM = factory.identity(50), factory.identity(51)
SWARM = b"s" * 32
NOW_MS = 1_700_000_000_000


def hello(**kw: object) -> bytes:
    args: dict[str, object] = dict(swarm=SWARM, listen="127.0.0.1:9000", time_ms=NOW_MS, nonce=new_nonce())
    args.update(kw)
    return sign_hello(THEM, **args).wire  # type: ignore[arg-type]


def accept(wire: bytes, nonces: NonceCache | None = None, echo: bytes = b"", now_ms: int = NOW_MS) -> None:
    accept_hello(decode_hello(wire), swarm=SWARM, me=ME.public_key, now_ms=now_ms, nonces=nonces, echo=echo)


def test_good_hello_round_trips() -> None:
    wire = hello()
    got = decode_hello(wire)
    assert got.node == THEM.public_key and got.listen == "127.0.0.1:9000" and got.wire == wire
    accept(wire, NonceCache())


def test_domain_is_distinct_from_entries_and_specs() -> None:
    from ledger import entry, spec
    assert len({DOMAIN, entry.DOMAIN, spec.DOMAIN}) == 3


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (hello(swarm=b"o" * 32), "another swarm"),
        (hello(version=2), "version"),
        (hello(time_ms=NOW_MS - 61_000), "clock"),
        (hello(time_ms=NOW_MS + 61_000), "clock"),
        (hello(echo=b"e" * NONCE_BYTES), "echo"),
    ],
)
def test_refusals(wire: bytes, reason: str) -> None:
    with pytest.raises(BadHandshake, match=reason):
        accept(wire, NonceCache())


def test_own_node_id_refused() -> None:
    wire = sign_hello(ME, swarm=SWARM, listen="", time_ms=NOW_MS, nonce=new_nonce()).wire
    with pytest.raises(BadHandshake, match="own node"):
        accept(wire)


def test_forged_signature_refused() -> None:
    wire = bytearray(hello())
    wire[-1] ^= 1
    with pytest.raises(BadHandshake, match="signature"):
        decode_hello(bytes(wire))
    swapped = ME.public_key + bytes(wire[32:])  # someone else's key over the same payload
    with pytest.raises(BadHandshake, match="signature"):
        decode_hello(swapped)


def test_payload_node_must_match_signer() -> None:
    payload = msgpack.packb([1, SWARM, ME.public_key, "", NOW_MS, new_nonce(), b""], use_bin_type=True)
    wire = THEM.public_key + THEM.sign(DOMAIN + payload) + payload
    with pytest.raises(BadHandshake, match="differs"):
        decode_hello(wire)


def test_replay_refused() -> None:
    cache = NonceCache()
    wire = hello()
    accept(wire, cache)
    with pytest.raises(ReplayedHandshake):
        accept(wire, cache)


def test_echo_accepted_by_dialer() -> None:
    nonce = new_nonce()
    accept(hello(echo=nonce), None, echo=nonce)


def test_nonce_cache_is_bounded_and_never_forgets_into_a_replay() -> None:
    cache = NonceCache(max_nonces=10)
    wires = [hello(time_ms=NOW_MS + i) for i in range(30)]
    for wire in wires:
        accept(wire, cache)
    assert len(cache) == 10
    for wire in wires:  # forgotten ones fall under the watermark; remembered ones are replays
        with pytest.raises(ReplayedHandshake):
            accept(wire, cache)
    accept(hello(time_ms=NOW_MS + 100), cache)  # fresh hellos still pass


def test_nonce_cache_expires_old_entries() -> None:
    cache = NonceCache(max_nonces=10)
    accept(hello(time_ms=NOW_MS), cache)
    accept(hello(time_ms=NOW_MS + 120_000), cache, now_ms=NOW_MS + 120_000)
    assert len(cache) == 1


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1200))
def test_fuzz_decode_hello(data: bytes) -> None:
    try:
        decode_hello(data)
    except BadHandshake:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-5, 2**64 - 1), st.binary(max_size=40), st.text(max_size=30)),
                max_size=9))
def test_fuzz_signed_payloads(fields: list[object]) -> None:
    """Validly signed garbage: the fields are still checked, with BadHandshake only."""
    payload = msgpack.packb(fields, use_bin_type=True)
    wire = THEM.public_key + THEM.sign(DOMAIN + payload) + payload
    try:
        accept(wire, NonceCache())
    except BadHandshake:
        pass
