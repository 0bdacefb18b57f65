"""The swarm spec: signed genesis whose payload hash is the swarm id; every bad spec is refused."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.entry import DOMAIN as ENTRY_DOMAIN
from ledger.errors import InvalidEntry, InvalidSpec
from ledger.keys import Identity
from ledger.spec import DOMAIN, MAX_SPEC_BYTES, SignedSpec, SwarmSpec, decode_spec, sign_spec

CREATOR = Identity.from_seed(b"\x03" * 32)
OTHER = Identity.from_seed(b"\x04" * 32)


def spec(**changes: Any) -> SwarmSpec:
    base: dict[str, Any] = dict(
        name="tiny", creator=CREATOR.public_key, created_ms=1_700_000_000_000,
        harness_hash=b"h" * 32, dataset_hash=b"d" * 32, tokenizer_hash=b"t" * 32, time_budget_s=300,
        metric="val_bpb", direction="min", baseline_commit=b"\x00" * 20, allowed_files=["train.py"],
        platform_classes=["cpu-tiny", "h100"], verifiers=[CREATOR.public_key, OTHER.public_key], quorum=2,
        noise_bpb={"cpu-tiny": 0.01, "h100": 0.002}, record_ucr_per_bpb=10**9, verify_ucr=1000,
    )
    base.update(changes)
    return SwarmSpec(**base)


def test_sign_and_decode_round_trip() -> None:
    signed = sign_spec(CREATOR, spec())
    back = decode_spec(signed.wire)
    assert back == signed and back.spec == spec()
    assert back.swarm_id == hashlib.sha256(signed.wire[96:]).digest() == hashlib.sha256(codec.encode(spec().to_map())).digest()


def test_the_swarm_id_depends_on_every_field() -> None:
    ids = {sign_spec(CREATOR, spec()).swarm_id}
    for change in (dict(name="other"), dict(time_budget_s=301), dict(quorum=1), dict(verify_ucr=1001),
                   dict(noise_bpb={"cpu-tiny": 0.011, "h100": 0.002}), dict(allowed_files=["train.py", "x.py"])):
        ids.add(sign_spec(CREATOR, spec(**change)).swarm_id)
    assert len(ids) == 7


def test_only_the_creator_signs_its_spec() -> None:
    with pytest.raises(InvalidSpec, match="creator"):
        sign_spec(OTHER, spec())
    # a spec naming CREATOR but signed by OTHER with OTHER's key in front
    payload = codec.encode(spec().to_map())
    wire = OTHER.public_key + OTHER.sign(DOMAIN + payload) + payload
    with pytest.raises(InvalidSpec, match="creator differs"):
        decode_spec(wire)


@settings(max_examples=150)
@given(st.data())
def test_any_changed_byte_is_refused(data: st.DataObject) -> None:
    wire = sign_spec(CREATOR, spec()).wire
    at = data.draw(st.integers(0, len(wire) - 1))
    flip = data.draw(st.integers(1, 255))
    with pytest.raises(InvalidSpec):
        decode_spec(wire[:at] + bytes([wire[at] ^ flip]) + wire[at + 1:])


def test_a_spec_signature_is_not_an_entry_signature() -> None:
    payload = codec.encode(spec().to_map())
    as_entry = CREATOR.public_key + CREATOR.sign(ENTRY_DOMAIN + payload) + payload
    with pytest.raises(InvalidSpec, match="signature"):
        decode_spec(as_entry)


@pytest.mark.parametrize(
    "change",
    [
        dict(time_budget_s=0), dict(time_budget_s=24 * 3600 + 1), dict(metric="loss"), dict(direction="max"),
        dict(allowed_files=[]), dict(allowed_files=["/etc/passwd"]), dict(allowed_files=["../train.py"]),
        dict(allowed_files=[""]), dict(platform_classes=[], noise_bpb={}), dict(platform_classes=["Bad Name"]),
        dict(noise_bpb={"cpu-tiny": 0.01}), dict(noise_bpb={"cpu-tiny": -0.01, "h100": 0.0}),
        dict(verifiers=[CREATOR.public_key, CREATOR.public_key]), dict(verifiers=[b"\x01" * 31]),
        dict(quorum=0), dict(quorum=3), dict(record_ucr_per_bpb=-1), dict(verify_ucr=-1),
        dict(harness_hash=b"h" * 31), dict(baseline_commit=b"\x00" * 32), dict(creator=b"\x00" * 31),
        dict(name="n" * 129),
    ],
    ids=lambda c: ",".join(f"{k}={v!r:.20}" for k, v in c.items()),
)
def test_invalid_specs_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidEntry):
        spec(**change)
    # the same fields arriving on the wire: refused with InvalidSpec
    fields = {**spec().to_map(), **change}
    payload = codec.encode(fields)
    with pytest.raises(InvalidSpec):
        decode_spec(CREATOR.public_key + CREATOR.sign(DOMAIN + payload) + payload)


@pytest.mark.parametrize(
    "fields",
    [
        {k: v for k, v in spec().to_map().items() if k != "quorum"},
        {**spec().to_map(), "extra": 1},
        {**spec().to_map(), "quorum": True},
        {**spec().to_map(), "time_budget_s": 300.0},
        {**spec().to_map(), "verifiers": "everyone"},
        [1, 2, 3],
    ],
    ids=["missing", "unknown", "bool-int", "float-int", "wrong-type", "not-a-map"],
)
def test_wrong_shapes_on_the_wire_are_refused(fields: Any) -> None:
    payload = codec.encode(fields)
    with pytest.raises(InvalidSpec):
        decode_spec(CREATOR.public_key + CREATOR.sign(DOMAIN + payload) + payload)


def test_size_limits() -> None:
    big = spec(allowed_files=[f"f{i:05d}/" + "x" * 200 for i in range(100)])
    with pytest.raises(InvalidSpec, match="exceeds"):
        sign_spec(CREATOR, big)
    for wire in (b"", b"\x00" * 96, b"\x00" * (96 + MAX_SPEC_BYTES + 1)):
        with pytest.raises(InvalidSpec):
            decode_spec(wire)
    with pytest.raises(InvalidSpec):
        decode_spec(bytearray(sign_spec(CREATOR, spec()).wire))  # type: ignore[arg-type]


def test_signed_spec_is_frozen() -> None:
    signed = sign_spec(CREATOR, spec())
    assert isinstance(signed, SignedSpec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        signed.wire = b""  # type: ignore[misc]


def test_a_spec_signed_before_the_trust_fields_decodes_with_their_defaults_and_keeps_its_id() -> None:
    old_fields = [f.name for f in dataclasses.fields(SwarmSpec)
                  if f.name not in ("trust_replays", "trust_tolerance_bpb", "spot_check_per_mille", "assigned",
                                    "max_steps", "max_rounds", "record_fdr", "noise_dof")]
    payload = codec.encode({name: getattr(spec(), name) for name in old_fields})  # what an old node signed
    wire = CREATOR.public_key + CREATOR.sign(DOMAIN + payload) + payload
    back = decode_spec(wire)
    assert (back.spec.trust_replays, back.spec.trust_tolerance_bpb, back.spec.spot_check_per_mille) == (5, {}, 100)
    assert back.swarm_id == hashlib.sha256(payload).digest() == sign_spec(CREATOR, back.spec).swarm_id
    assert codec.encode(back.spec.to_map()) == payload  # defaults stay off the wire


def test_trust_fields_set_away_from_their_defaults_are_signed_and_change_the_id() -> None:
    changed = spec(trust_replays=8, trust_tolerance_bpb={"h100": 0.001}, spot_check_per_mille=250)
    back = decode_spec(sign_spec(CREATOR, changed).wire)
    assert back.spec == changed and back.swarm_id != sign_spec(CREATOR, spec()).swarm_id
    for bad in (dict(trust_replays=-1), dict(trust_tolerance_bpb={"gpu-x": 0.1}),
                dict(trust_tolerance_bpb={"h100": -0.1}), dict(spot_check_per_mille=1001)):
        with pytest.raises(InvalidEntry):
            spec(**bad)
