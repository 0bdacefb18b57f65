"""The evaluation's outputs commitment: quantized leaves, a Merkle root bound to the eval seed, proofs."""
from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer import outputs
from trainer.outputs import BatchOutput, OutputsError

batch = st.builds(BatchOutput, st.integers(0, 1 << 40), st.integers(0, 1 << 30), st.integers(0, 1 << 30))


def test_known_answer_for_one_and_three_batches() -> None:
    # Written from the definition in the module's docstring, independently of its helpers.
    a, b, c = BatchOutput(1024, 10, 9), BatchOutput(2048, 20, 18), BatchOutput(-1, 0, 0)
    leaf = [hashlib.sha256(b"\x00" + struct.pack(">qqq", *t)).digest()
            for t in ((1024, 10, 9), (2048, 20, 18), (-1, 0, 0))]
    one = hashlib.sha256(outputs.DOMAIN + struct.pack(">QQB", 5, 1, 10) + leaf[0]).digest()
    assert outputs.digest(5, [a]) == one
    root3 = hashlib.sha256(b"\x01" + hashlib.sha256(b"\x01" + leaf[0] + leaf[1]).digest() + leaf[2]).digest()
    assert outputs.merkle_root([a, b, c]) == root3
    assert outputs.digest(5, [a, b, c]) == hashlib.sha256(outputs.DOMAIN + struct.pack(">QQB", 5, 3, 10)
                                                          + root3).digest()


def test_quantize_rounds_to_the_quantum_and_refuses_non_finite() -> None:
    assert outputs.NATS_QUANTUM == 1 / 1024
    assert outputs.quantize(1.0) == 1024 and outputs.quantize(1.0 + 0.4 / 1024) == 1024
    assert outputs.quantize(1.0 + 0.6 / 1024) == 1025
    assert BatchOutput.of(700.25, 10, 9).nats == 700.25
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(OutputsError, match="non-finite"):
            outputs.quantize(bad)
    with pytest.raises(OutputsError, match="target_bytes out of range"):
        BatchOutput(0, -1, 0)
    with pytest.raises(OutputsError, match="without batches"):
        outputs.digest(0, [])


@settings(max_examples=150, deadline=None)
@given(st.lists(batch, min_size=1, max_size=40), st.integers(0, (1 << 64) - 1), st.data())
def test_every_batch_proves_into_the_digest_and_nothing_else_does(
        leaves: list[BatchOutput], eval_seed: int, data: st.DataObject) -> None:
    commitment = outputs.digest(eval_seed, leaves)
    assert len(commitment) == outputs.DIGEST_BYTES
    i = data.draw(st.integers(0, len(leaves) - 1))
    path = outputs.prove(leaves, i)
    assert len(path) <= (len(leaves) - 1).bit_length()  # at most log2(n), rounded up
    outputs.check_proof(commitment, eval_seed, len(leaves), i, leaves[i], path)
    forged = BatchOutput(leaves[i].nats_q + 1, leaves[i].target_bytes, leaves[i].target_tokens)
    with pytest.raises(OutputsError, match="does not match"):
        outputs.check_proof(commitment, eval_seed, len(leaves), i, forged, path)
    with pytest.raises(OutputsError, match="does not match"):  # other rows scored: another seed
        outputs.check_proof(commitment, eval_seed ^ 1, len(leaves), i, leaves[i], path)
    with pytest.raises(OutputsError):
        outputs.check_proof(commitment, eval_seed, len(leaves) + 1, i, leaves[i], path)
    if len(leaves) > 1:
        with pytest.raises(OutputsError):
            outputs.check_proof(commitment, eval_seed, len(leaves), i, leaves[i], path[:-1])


@settings(max_examples=100, deadline=None)
@given(st.lists(batch, min_size=2, max_size=20), st.integers(0, 1 << 63))
def test_reordered_or_changed_outputs_change_the_digest(leaves: list[BatchOutput], eval_seed: int) -> None:
    commitment = outputs.digest(eval_seed, leaves)
    assert commitment == outputs.digest(eval_seed, list(leaves))  # a pure function of its inputs
    if leaves[0] != leaves[1]:
        assert outputs.digest(eval_seed, [leaves[1], leaves[0], *leaves[2:]]) != commitment
    assert outputs.digest(eval_seed, leaves[:-1]) != commitment
    assert outputs.digest(eval_seed + 1, leaves) != commitment
