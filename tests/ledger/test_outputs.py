"""Verify.outputs on the wire, and when two signed verify entries provably disagree."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.bodies import Body, Verify
from ledger.entry import Entry, decode_entry
from ledger.errors import InvalidEntry
from ledger.keys import Identity
from ledger.outputs import BadTolerance, disagreement, outputs_from_hex, why_not
from ledger.spec import SignedSpec
from ledger.store import Ledger
from tests.ledger.factory import Feeds, claim, identity, make_spec, post, verify
from trainer import outputs as trainer_outputs

CREATOR = identity(400)
CLAIMANT = identity(401)
VERIFIERS = [identity(402), identity(403), identity(404)]
SPEC = make_spec(CREATOR, VERIFIERS, quorum=2)
OTHER = make_spec(identity(499), VERIFIERS, quorum=2)
TOLERANCE_BPB = 0.01


def commitment(eval_seed: int, losses: list[float]) -> bytes:
    """What the trainer's evaluation commits to, for batches of 1000 bytes and 900 tokens."""
    return trainer_outputs.digest(eval_seed, [trainer_outputs.BatchOutput.of(n, 1000, 900) for n in losses])


HONEST = commitment(7, [700.0, 710.5, 695.25])
LIAR = commitment(7, [600.0, 610.5, 595.25])


class Swarm:
    """Signed entries of one swarm: a claim and verifies of it, decoded back from their wires."""

    def __init__(self, spec: SignedSpec = SPEC) -> None:
        self.feeds = Feeds(swarm=spec.swarm_id)
        self.claim = self.signed(CLAIMANT, claim(1, 1.0))

    def signed(self, who: Identity, body: Body) -> Entry:
        entry = self.feeds.sign(who, body)
        return decode_entry(entry.wire, swarm=self.feeds.swarm)  # as a peer would receive it

    def verify(self, n: int, val_bpb: float | None, outputs: bytes | None, **changes: object) -> Entry:
        body = dataclasses.replace(verify(self.claim, val_bpb), outputs=outputs, **changes)  # type: ignore[arg-type]
        return self.signed(VERIFIERS[n], body)


def test_a_verify_without_outputs_is_the_same_wire_as_before() -> None:
    old = verify(Swarm().claim, 0.99)
    assert "outputs" not in old.to_map()  # signed bytes of older verifies are unchanged
    back = Verify.from_map(old.to_map())
    assert back == old and back.outputs is None
    new = dataclasses.replace(old, outputs=HONEST)
    assert new.to_map()["outputs"] == HONEST and Verify.from_map(codec.decode(codec.encode(new.to_map()),
                                                                              max_bytes=1 << 16)) == new


@pytest.mark.parametrize("outputs, status, message", [
    (b"\x01" * 31, "ok", "outputs must be 32 bytes, got 31"),
    (b"\x01" * 33, "ok", "outputs must be 32 bytes, got 33"),
    (b"\x01" * 32, "crash", "only an ok replay commits to its outputs"),
])
def test_outputs_are_validated(outputs: bytes, status: str, message: str) -> None:
    base = verify(Swarm().claim, 0.99 if status == "ok" else None)
    with pytest.raises(InvalidEntry, match=message):
        dataclasses.replace(base, outputs=outputs)


def test_outputs_from_a_peer_must_be_bytes() -> None:
    wire_map = {**verify(Swarm().claim, 0.99).to_map(), "outputs": HONEST.hex()}
    with pytest.raises(InvalidEntry, match="outputs must be bytes, got str"):
        Verify.from_map(wire_map)


def test_replays_apart_beyond_tolerance_with_their_outputs_disagree() -> None:
    s = Swarm()
    honest, liar = s.verify(0, 1.00, HONEST), s.verify(1, 0.86, LIAR)
    found = disagreement(honest, liar, TOLERANCE_BPB)
    assert found is not None and found == disagreement(liar, honest, TOLERANCE_BPB)
    assert found.claim == s.claim.id and {found.first, found.second} == {honest.id, liar.id}
    assert found.first < found.second and not found.same_outputs
    assert {found.first_author, found.second_author} == {VERIFIERS[0].public_key, VERIFIERS[1].public_key}
    assert found.gap_bpb == pytest.approx(0.14) and found.tolerance_bpb == TOLERANCE_BPB
    assert why_not(honest, liar, TOLERANCE_BPB) is None


def test_equal_outputs_with_values_far_apart_still_disagree() -> None:
    # The commitment fixes the value: one author reported a number its own outputs do not give.
    s = Swarm()
    found = disagreement(s.verify(0, 1.00, HONEST), s.verify(1, 0.80, HONEST), TOLERANCE_BPB)
    assert found is not None and found.same_outputs


@pytest.mark.parametrize("change, reason", [
    ({"seed": 2}, "not the same replay: seed differs"),
    ({"num_steps": 99}, "not the same replay: num_steps differs"),
    ({"platform_class": "h100"}, "not the same replay: platform_class differs"),
    ({"commit": b"\x05" * 20}, "not the same replay: commit differs"),
    ({"claim": b"\x06" * 32}, "not the same replay: claim differs"),
])
def test_different_replays_never_disagree(change: dict[str, object], reason: str) -> None:
    s = Swarm()
    a, b = s.verify(0, 1.00, HONEST), s.verify(1, 0.50, LIAR, **change)
    assert disagreement(a, b, TOLERANCE_BPB) is None and why_not(a, b, TOLERANCE_BPB) == reason


def test_what_is_not_a_provable_disagreement() -> None:
    s = Swarm()
    honest = s.verify(0, 1.00, HONEST)
    cases = {
        "values within tolerance (0.005000 <= 0.010000 bpb)": s.verify(1, 1.005, LIAR),
        "a verify without an outputs commitment committed to nothing": s.verify(1, 0.5, None),
        "a replay that failed has no value to disagree with": s.verify(2, None, None, status="crash"),
        "not two verify entries": s.signed(VERIFIERS[1], post()),
        "the same entry": honest,
    }
    for reason, other in cases.items():
        assert (why_not(honest, other, TOLERANCE_BPB) or "").startswith(reason)
        assert why_not(other, honest, TOLERANCE_BPB) == why_not(honest, other, TOLERANCE_BPB)
        assert disagreement(honest, other, TOLERANCE_BPB) is None and disagreement(other, honest,
                                                                                   TOLERANCE_BPB) is None
    elsewhere = Swarm(OTHER)
    stranger = elsewhere.signed(VERIFIERS[1], dataclasses.replace(verify(s.claim, 0.5), outputs=LIAR))
    assert why_not(honest, stranger, TOLERANCE_BPB) == "entries of different swarms"


@pytest.mark.parametrize("tolerance", [-0.001, float("nan"), float("inf")])
def test_a_bad_tolerance_is_refused(tolerance: float) -> None:
    s = Swarm()
    with pytest.raises(BadTolerance):
        disagreement(s.verify(0, 1.0, HONEST), s.verify(1, 0.5, LIAR), tolerance)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.1, 5.0), st.floats(0.1, 5.0), st.floats(0.0, 1.0), st.booleans())
def test_the_verdict_is_symmetric_and_follows_the_gap(a_bpb: float, b_bpb: float, tolerance: float,
                                                      same: bool) -> None:
    s = Swarm()
    a, b = s.verify(0, a_bpb, HONEST), s.verify(1, b_bpb, HONEST if same else LIAR)
    found = disagreement(a, b, tolerance)
    assert found == disagreement(b, a, tolerance)
    assert (found is not None) == (abs(a_bpb - b_bpb) > tolerance)
    if found is not None:
        assert found.same_outputs == same and found.gap_bpb > tolerance


async def test_a_disagreement_survives_a_real_ledger_file(tmp_path: Path) -> None:
    s = Swarm()
    honest, liar = s.verify(0, 1.00, HONEST), s.verify(1, 0.86, LIAR)
    path = tmp_path / "a.ledger"
    async with Ledger.open(path, SPEC) as ledger:
        for entry in (s.claim, honest, liar):
            await ledger.append(entry)
    async with Ledger.open(path) as again:
        stored = [await again.get(e.id) for e in (honest, liar)]
    assert stored == [honest, liar]
    assert stored[0] is not None and stored[1] is not None
    assert isinstance(stored[0].body, Verify) and stored[0].body.outputs == HONEST
    assert disagreement(stored[0], stored[1], TOLERANCE_BPB) == disagreement(honest, liar, TOLERANCE_BPB)


def test_outputs_from_the_trainers_hex() -> None:
    assert outputs_from_hex(HONEST.hex()) == HONEST
    for bad in (None, 7, "", HONEST.hex()[:-2], "zz" * 32, HONEST.hex() + "00"):
        assert outputs_from_hex(bad) is None
