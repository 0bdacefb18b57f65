"""Entries: every kind signs and decodes; signatures are bound to swarm, kind and protocol; bad fields are refused."""
from __future__ import annotations

import hashlib
from typing import Any

import pytest

from ledger import codec
from ledger.bodies import (
    KINDS, Admit, Body, Claim, Fraud, Hypothesis, Insight, Job, Mint, Offer, Post, Profile, Receipt, Settle, Transfer,
    Verify, Seal,
)
from ledger.entry import (
    DOMAIN, MAX_FRAUD_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES, VERSION, Entry, check_signature, decode_entry, entry_hash,
    sign_entry,
)
from ledger.errors import InvalidEntry, InvalidSignature, InvalidSpec
from ledger.feed import make_fraud
from ledger.keys import Identity
from ledger.spec import decode_spec

KEY = Identity.from_seed(b"\x01" * 32)
OTHER = Identity.from_seed(b"\x02" * 32)
SWARM = hashlib.sha256(b"swarm").digest()
H = hashlib.sha256(b"an entry").digest()
H2 = hashlib.sha256(b"another entry").digest()
H3 = hashlib.sha256(b"a third entry").digest()
COMMIT = hashlib.sha1(b"commit").digest()


def _fork() -> Fraud:
    a = sign_entry(OTHER, swarm=SWARM, seq=1, prev=None, body=Post(channel="x", text="a", reply_to=None), time_ms=1)
    b = sign_entry(OTHER, swarm=SWARM, seq=1, prev=None, body=Post(channel="x", text="b", reply_to=None), time_ms=1)
    return make_fraud(a, b)


EXAMPLES: list[Body] = [
    Profile(platform_class="h100-80g", gpu="H100", gpu_memory_mb=81559, driver="550.54", torch="2.4.0", cpu="EPYC"),
    Claim(commit=COMMIT, parent=COMMIT, platform_class="cpu-tiny", status="ok", val_bpb=1.234, num_steps=100,
          planned_steps=120, seed=7, training_s=300.0, wall_s=320.5, peak_vram_mb=1024.0, loss_curve=[3.1, 2.2, 1.9],
          diff_summary="lr 0.04 -> 0.05", message="try a higher lr", bundle=H),
    Verify(claim=H, commit=COMMIT, platform_class="cpu-tiny", status="crash", val_bpb=None, num_steps=3, seed=1,
           training_s=1.5),
    Mint(reason="record", subject=H, quorum=[H, hashlib.sha256(b"q").digest()], to=OTHER.public_key, amount=5,
         value=1.2, prev_best=1.3),
    Transfer(to=OTHER.public_key, amount=10, spends=[H], memo="for job", job=H, offer=H2),
    Job(job_type="train", commit=COMMIT, bundle=None, args=["--steps", "10"], platform_class="h100", max_gpu_s=600,
        price_ucr_per_gpu_s=3, expires_ms=10**12),
    Offer(job=H, price_ucr_per_gpu_s=3, expires_ms=10**12),
    Receipt(job=H, offer=H2, payment=H3, status="ok", gpu_s=12.5, metrics={"val_bpb": 1.1}, artifacts=[H], log_tail="done"),
    Settle(job=H, payment=H2, receipt=H3, outcome="paid", amount=37, reason="receipt accepted"),
    Post(channel="general", text="héllo ✓", reply_to=H),
    Hypothesis(text="wider MLP helps at small scale", tags=["mlp", "width"]),
    Insight(text="lr warmup matters", sources=[H]),
    _fork(),
    Admit(verifier=OTHER.public_key, platform_classes=["cpu-tiny"]),
    Seal(claims=[H, H2]),
]


def test_the_examples_cover_every_kind() -> None:
    assert {b.kind for b in EXAMPLES} == KINDS


@pytest.mark.parametrize("body", EXAMPLES, ids=lambda b: b.kind)
def test_sign_and_decode_round_trip_for_every_kind(body: Body) -> None:
    entry = sign_entry(KEY, swarm=SWARM, seq=3, prev=H, body=body, time_ms=1_700_000_000_000)
    back = decode_entry(entry.wire, swarm=SWARM)
    assert back == entry
    assert back.body == body and back.kind == body.kind
    assert back.id == entry_hash(back.payload) == hashlib.sha256(entry.wire[96:]).digest()
    assert back.author == KEY.public_key and back.signature == entry.wire[32:96]
    assert entry.wire[:32] == KEY.public_key
    assert back.deps() == (H, *body.refs())


def test_seq_one_has_no_prev_and_no_prev_dependency() -> None:
    entry = sign_entry(KEY, swarm=SWARM, seq=1, prev=None, body=EXAMPLES[0], time_ms=0)
    assert decode_entry(entry.wire).prev is None and entry.deps() == ()


def test_the_id_does_not_cover_the_signature() -> None:
    entry = sign_entry(KEY, swarm=SWARM, seq=1, prev=None, body=EXAMPLES[0], time_ms=0)
    assert entry.id == hashlib.sha256(entry.payload).digest()


# -- domain separation


def _entry() -> Entry:
    return sign_entry(KEY, swarm=SWARM, seq=1, prev=None, body=Post(channel="general", text="hi", reply_to=None),
                      time_ms=5)


def test_an_entry_of_another_swarm_is_refused() -> None:
    wire = _entry().wire
    decode_entry(wire, swarm=SWARM)
    with pytest.raises(InvalidEntry, match="another swarm"):
        decode_entry(wire, swarm=hashlib.sha256(b"other").digest())


def _resigned_fields(entry: Entry) -> list[Any]:
    return [VERSION, entry.swarm, entry.author, entry.seq, entry.prev, entry.kind, entry.body.to_map(), entry.time_ms]


@pytest.mark.parametrize(
    ("index", "value"),
    [(1, hashlib.sha256(b"other").digest()), (5, "hypothesis"), (3, 2), (7, 6), (4, H)],
    ids=["swarm", "kind", "seq", "time", "prev"],
)
def test_changing_any_signed_field_invalidates_the_signature(index: int, value: Any) -> None:
    entry = _entry()
    fields = _resigned_fields(entry)
    fields[index] = value
    if index == 5:
        fields[6] = {"text": "hi", "tags": []}  # a valid hypothesis body: only the signature can object
    if index == 3:
        fields[4] = H
    forged = entry.wire[:96] + codec.encode(fields)
    with pytest.raises(InvalidSignature):
        decode_entry(forged)


def test_an_entry_signature_does_not_verify_as_a_spec_and_back() -> None:
    entry = _entry()
    with pytest.raises(InvalidSpec):
        decode_spec(entry.wire)  # the spec domain differs: the signature fails before anything else
    # the same payload signed for the spec domain does not verify as an entry
    from ledger.spec import DOMAIN as SPEC_DOMAIN

    cross = KEY.public_key + KEY.sign(SPEC_DOMAIN + entry.payload) + entry.payload
    with pytest.raises(InvalidSignature):
        check_signature(cross)
    # and a bare signature over the payload (no domain at all) is refused too
    bare = KEY.public_key + KEY.sign(entry.payload) + entry.payload
    with pytest.raises(InvalidSignature):
        decode_entry(bare)


def test_another_authors_key_in_front_is_refused() -> None:
    entry = _entry()
    with pytest.raises(InvalidSignature):
        decode_entry(OTHER.public_key + entry.wire[32:])
    # a payload naming another author, validly signed by KEY: the signer is not the author
    fields = _resigned_fields(entry)
    fields[2] = OTHER.public_key
    payload = codec.encode(fields)
    with pytest.raises(InvalidEntry, match="author differs"):
        decode_entry(KEY.public_key + KEY.sign(DOMAIN + payload) + payload)


# -- sizes


def test_oversize_payloads_are_refused() -> None:
    big = Post(channel="general", text="✓" * 8000, reply_to=None)  # 24 kB of UTF-8, under the text limit
    with pytest.raises(InvalidEntry, match="exceeds"):
        sign_entry(KEY, swarm=SWARM, seq=1, prev=None, body=big, time_ms=0)
    fields = [VERSION, SWARM, KEY.public_key, 1, None, "post", big.to_map(), 0]
    payload = codec.encode(fields)
    assert MAX_PAYLOAD_BYTES < len(payload) < MAX_FRAUD_PAYLOAD_BYTES
    with pytest.raises(InvalidEntry, match="exceeds"):
        decode_entry(KEY.public_key + KEY.sign(DOMAIN + payload) + payload)
    huge = b"\x00" * (MAX_FRAUD_PAYLOAD_BYTES + 1)
    with pytest.raises(InvalidEntry):
        decode_entry(KEY.public_key + KEY.sign(DOMAIN + huge) + huge)
    with pytest.raises(InvalidEntry):
        decode_entry(KEY.public_key + b"\x00" * 64)  # no payload at all


def test_fraud_payloads_may_carry_two_full_entries() -> None:
    text = "✓" * 5000  # 15 kB of UTF-8: each entry near its own limit
    a = sign_entry(OTHER, swarm=SWARM, seq=1, prev=None, body=Post(channel="x", text=text, reply_to=None), time_ms=1)
    b = sign_entry(OTHER, swarm=SWARM, seq=1, prev=None, body=Post(channel="x", text=text + "!", reply_to=None),
                   time_ms=1)
    entry = sign_entry(KEY, swarm=SWARM, seq=1, prev=None, body=make_fraud(a, b), time_ms=2)
    assert len(entry.payload) > MAX_PAYLOAD_BYTES
    assert decode_entry(entry.wire).body == entry.body


# -- header fields of the wrong type or range, under a good signature


def _signed_fields(fields: list[Any]) -> bytes:
    payload = codec.encode(fields)
    return KEY.public_key + KEY.sign(DOMAIN + payload) + payload


GOOD: list[Any] = [VERSION, SWARM, KEY.public_key, 2, H, "post", {"channel": "general", "text": "hi", "reply_to": None}, 5]
BAD_FIELDS: list[tuple[int, Any]] = [
    (0, 2), (0, True), (0, 1.0), (0, "1"), (0, None),
    (1, SWARM[:31]), (1, SWARM + b"\x00"), (1, SWARM.hex()), (1, None), (1, list(SWARM[:4])),
    (2, KEY.public_key[:31]), (2, KEY.public_key.hex()), (2, None),
    (3, 0), (3, -1), (3, True), (3, 2.0), (3, "2"), (3, None), (3, 1 << 63),
    (4, None), (4, H[:31]), (4, H.hex()), (4, 7),
    (5, "bogus"), (5, "Post"), (5, 1), (5, None), (5, b"post"),
    (6, None), (6, []), (6, {"channel": "general", "text": "hi"}), (6, {**GOOD[6], "extra": 1}),
    (6, {**GOOD[6], "text": b"hi"}), (6, {**GOOD[6], "reply_to": "x"}), (6, {**GOOD[6], "channel": "Not Valid"}),
    (7, -1), (7, 1.5), (7, True), (7, None), (7, 1 << 53),
]


@pytest.mark.parametrize(("index", "value"), BAD_FIELDS, ids=[f"field{i}-{v!r:.20}" for i, v in BAD_FIELDS])
def test_every_header_field_of_the_wrong_type_or_range_is_refused(index: int, value: Any) -> None:
    decode_entry(_signed_fields(GOOD))  # the template itself is fine
    fields = list(GOOD)
    fields[index] = value
    with pytest.raises(InvalidEntry) as info:
        decode_entry(_signed_fields(fields))
    assert not isinstance(info.value, InvalidSignature)  # refused by the decoder, not the signature


def test_seq_one_with_a_prev_is_refused() -> None:
    fields = list(GOOD)
    fields[3] = 1
    with pytest.raises(InvalidEntry, match="no prev"):
        decode_entry(_signed_fields(fields))


@pytest.mark.parametrize("fields", [GOOD[:7], [*GOOD, 0], {"v": 1}, "entry", None])
def test_a_payload_that_is_not_eight_fields_is_refused(fields: Any) -> None:
    with pytest.raises(InvalidEntry):
        decode_entry(_signed_fields(fields))


def test_sign_entry_refuses_bad_headers() -> None:
    body = EXAMPLES[0]
    for kwargs in (dict(seq=0, prev=None), dict(seq=1, prev=H), dict(seq=2, prev=None), dict(seq=2, prev=b"x")):
        with pytest.raises(InvalidEntry):
            sign_entry(KEY, swarm=SWARM, body=body, time_ms=0, **kwargs)
    with pytest.raises(InvalidEntry):
        sign_entry(KEY, swarm=SWARM[:8], seq=1, prev=None, body=body, time_ms=0)
    with pytest.raises(InvalidEntry):
        sign_entry(KEY, swarm=SWARM, seq=1, prev=None, body=body, time_ms=-5)


# -- market bodies


def _job(**change: Any) -> dict[str, Any]:
    return {**EXAMPLES[5].to_map(), **change}


@pytest.mark.parametrize(
    ("cls", "fields", "match"),
    [
        (Job, _job(job_type="infer"), "job_type 'infer' not one of"),
        (Job, _job(price_ucr_per_gpu_s=0), "at least 1"),
        (Job, _job(price_ucr_per_gpu_s=-3), "at least 1"),
        (Job, _job(max_gpu_s=0), "max_gpu_s must be positive"),
        (Transfer, {**EXAMPLES[4].to_map(), "job": None}, "accepted only for a job"),
        (Transfer, {**EXAMPLES[4].to_map(), "offer": H[:5]}, "offer must be 32 bytes"),
        (Receipt, {**EXAMPLES[7].to_map(), "payment": None}, "payment must be bytes"),
        (Settle, {**EXAMPLES[8].to_map(), "outcome": "stolen"}, "outcome 'stolen' not one of"),
        (Settle, {**EXAMPLES[8].to_map(), "amount": -1}, "must not be negative"),
        (Settle, {**EXAMPLES[8].to_map(), "payment": None}, "only with its payment"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_market_bodies_refuse_bad_fields(cls: type[Body], fields: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidEntry, match=match):
        cls.from_map(fields)


def test_market_bodies_depend_on_what_they_name() -> None:
    assert EXAMPLES[4].refs() == (H, H, H2)  # spends, then the job and the offer
    assert Transfer(to=OTHER.public_key, amount=1, spends=[H2], memo="", job=None, offer=None).refs() == (H2,)
    assert EXAMPLES[7].refs() == (H, H2, H3)
    assert EXAMPLES[8].refs() == (H, H2, H3)
    cancel = Settle(job=H, payment=None, receipt=None, outcome="cancelled", amount=0, reason="")
    assert cancel.refs() == (H,)
