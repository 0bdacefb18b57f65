"""Signed checkpoints and proofs: known answers, tamper properties, and a real ledger file through
the CLI (checkpoint, prove, audit --checkpoint --proof, verify), before and after appending rows."""
from __future__ import annotations

import asyncio
import hashlib
import io
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import checkpoint, merkle
from ledger.checkpoint import Checkpoint, ConsistencyProof, InclusionProof, InvalidCheckpoint
from ledger.cli import main
from ledger.entry import Entry
from ledger.keys import Identity
from ledger.merkle import InvalidProof
from ledger.spec import SignedSpec
from ledger.store import Ledger
from tests.ledger.factory import identity, make_spec, valid_history

CREATOR, VERIFIER = identity(400), identity(401)
USERS = [identity(410 + i) for i in range(3)]
NODE = identity(420)  # signs the checkpoints; any node may, its own ledger or not
SWARM = hashlib.sha256(b"swarm").digest()
ROOT = hashlib.sha256(b"root").digest()


def flip(value: bytes, bit: int) -> bytes:
    raw = bytearray(value)
    raw[bit // 8] ^= 1 << (bit % 8)
    return bytes(raw)


# -- known answers


def test_checkpoint_payload_and_signature_by_hand() -> None:
    cp = Checkpoint(SWARM, NODE.public_key, 5, ROOT, 1_700_000_000_000)
    # canonical msgpack written out: fixarray(6), 1, bin8(32) x2, 5, bin8(32), uint64
    want = (b"\x96\x01" + b"\xc4\x20" + SWARM + b"\xc4\x20" + NODE.public_key + b"\x05"
            + b"\xc4\x20" + ROOT + b"\xcf" + struct.pack(">Q", 1_700_000_000_000))
    assert cp.payload() == want
    signed = checkpoint.sign_checkpoint(NODE, cp)
    assert signed.wire[:32] == NODE.public_key and signed.wire[96:] == want
    # Ed25519 is deterministic: check with the library directly, over the domain tag and the payload
    Ed25519PublicKey.from_public_bytes(NODE.public_key).verify(
        signed.wire[32:96], b"autoswarm/checkpoint/v1\x00" + want)
    assert checkpoint.decode_checkpoint(signed.wire) == signed


def test_a_signature_made_for_another_domain_does_not_verify() -> None:
    cp = Checkpoint(SWARM, NODE.public_key, 5, ROOT, 1)
    forged = NODE.public_key + NODE.sign(b"autoswarm/spec/v1\x00" + cp.payload()) + cp.payload()
    with pytest.raises(InvalidCheckpoint, match="signature"):
        checkpoint.decode_checkpoint(forged)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_flipped_bit_of_a_checkpoint_fails(data: st.DataObject) -> None:
    signed = checkpoint.sign_checkpoint(NODE, Checkpoint(SWARM, NODE.public_key, 12345, ROOT, 1_700_000_000_000))
    bit = data.draw(st.integers(0, 8 * len(signed.wire) - 1))
    with pytest.raises(InvalidCheckpoint):
        checkpoint.decode_checkpoint(flip(signed.wire, bit))


def test_bad_checkpoints_are_typed_errors() -> None:
    good = checkpoint.sign_checkpoint(NODE, Checkpoint(SWARM, NODE.public_key, 1, ROOT, 1))
    with pytest.raises(InvalidCheckpoint, match="swarm"):
        checkpoint.decode_checkpoint(good.wire, swarm=bytes(32))

    def signed_payload(fields: object) -> bytes:
        from ledger import codec
        payload = codec.encode(fields)
        return NODE.public_key + NODE.sign(b"autoswarm/checkpoint/v1\x00" + payload) + payload

    for fields in (
        [2, SWARM, NODE.public_key, 1, ROOT, 1],            # unknown version
        [True, SWARM, NODE.public_key, 1, ROOT, 1],         # a bool is not 1
        [1, SWARM, NODE.public_key, -1, ROOT, 1],
        [1, SWARM, NODE.public_key, 1, ROOT[:31], 1],
        [1, SWARM, USERS[0].public_key, 1, ROOT, 1],        # signed by another key than it names
        [1, SWARM, NODE.public_key, 0, ROOT, 1],            # empty, but not the empty root
        [1, SWARM, NODE.public_key, 1, ROOT],
        {"count": 1},
    ):
        with pytest.raises(InvalidCheckpoint):
            checkpoint.decode_checkpoint(signed_payload(fields))
    for wire in (b"", good.wire[:96], good.wire + bytes(300), "text"):
        with pytest.raises(InvalidCheckpoint):
            checkpoint.decode_checkpoint(wire)  # type: ignore[arg-type]
    with pytest.raises(InvalidCheckpoint):
        checkpoint.sign_checkpoint(USERS[0], good.checkpoint)  # not the node it names


# -- proofs as bytes


def _entries_tree(n: int) -> tuple[list[bytes], merkle.Tree, SignedSpec]:
    signed = make_spec(CREATOR, [VERIFIER])
    wires = [e.wire for e in valid_history(signed, [VERIFIER], USERS, steps=n, seed=3)]
    return wires, merkle.Tree.build(wires), signed


WIRES, TREE, SPEC = _entries_tree(40)
N = len(WIRES)


def _signed_head(size: int) -> checkpoint.SignedCheckpoint:
    return checkpoint.sign_checkpoint(NODE, Checkpoint(SPEC.swarm_id, NODE.public_key, size, TREE.root(size), 7))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_flipped_bit_of_an_inclusion_proof_fails(data: st.DataObject) -> None:
    i = data.draw(st.integers(0, N - 1))
    proof = InclusionProof(i, N, WIRES[i], tuple(TREE.inclusion_proof(i)))
    head = _signed_head(N)
    encoded = proof.encode()
    assert checkpoint.decode_proof(encoded) == proof
    assert checkpoint.verify_inclusion(head, proof).wire == WIRES[i]
    bad = flip(encoded, data.draw(st.integers(0, 8 * len(encoded) - 1)))
    with pytest.raises((InvalidProof, InvalidCheckpoint)):
        decoded = checkpoint.decode_proof(bad)
        assert isinstance(decoded, InclusionProof)
        checkpoint.verify_inclusion(head, decoded)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_flipped_bit_of_a_consistency_proof_fails(data: st.DataObject) -> None:
    m = data.draw(st.integers(1, N - 1))
    proof = ConsistencyProof(m, N, tuple(TREE.consistency_proof(m)))
    old, new = _signed_head(m), _signed_head(N)
    encoded = proof.encode()
    assert checkpoint.decode_proof(encoded) == proof
    checkpoint.verify_consistency(old, new, proof)
    bad = flip(encoded, data.draw(st.integers(0, 8 * len(encoded) - 1)))
    with pytest.raises((InvalidProof, InvalidCheckpoint)):
        decoded = checkpoint.decode_proof(bad)
        assert isinstance(decoded, ConsistencyProof)
        checkpoint.verify_consistency(old, new, decoded)


def test_proofs_need_the_right_checkpoints() -> None:
    proof = InclusionProof(3, N, WIRES[3], tuple(TREE.inclusion_proof(3)))
    with pytest.raises(InvalidProof, match="checkpoint has"):
        checkpoint.verify_inclusion(_signed_head(N - 1), proof)
    cons = ConsistencyProof(5, N, tuple(TREE.consistency_proof(5)))
    other = checkpoint.sign_checkpoint(USERS[0], Checkpoint(SPEC.swarm_id, USERS[0].public_key, N, TREE.root(), 7))
    with pytest.raises(InvalidProof, match="different nodes"):
        checkpoint.verify_consistency(_signed_head(5), other, cons)
    with pytest.raises(InvalidProof, match="none was given"):
        checkpoint.check_proofs([_signed_head(N)], [cons])
    forked = checkpoint.sign_checkpoint(NODE, Checkpoint(SPEC.swarm_id, NODE.public_key, N, ROOT, 8))
    with pytest.raises(InvalidCheckpoint, match="different roots"):
        checkpoint.check_proofs([_signed_head(N), forked], [])
    # a leaf that is not an entry of the swarm is refused even with a good path
    junk = [b"\x00" * 100 + b"%d" % i for i in range(4)]
    tree = merkle.Tree.build(junk)
    head = checkpoint.sign_checkpoint(NODE, Checkpoint(SPEC.swarm_id, NODE.public_key, 4, tree.root(), 7))
    with pytest.raises(InvalidProof, match="not a valid entry"):
        checkpoint.verify_inclusion(head, InclusionProof(1, 4, junk[1], tuple(tree.inclusion_proof(1))))


def test_bad_proof_bytes_are_typed_errors() -> None:
    from ledger import codec
    for fields in ([1, "inclusion", 0, 0, WIRES[0], []], [1, "inclusion", 0, 1, b"short", []],
                   [1, "consistency", 3, 2, []], [1, "consistency", 0, 1, [b"x"]],
                   [1, "consistency", 0, 1, [bytes(32)] * 65], [1, "other", 0], [2, "consistency", 0, 0, []],
                   [1, "consistency", 0, 1], "x"):
        with pytest.raises(InvalidProof):
            checkpoint.decode_proof(codec.encode(fields))
    with pytest.raises(InvalidProof):
        checkpoint.decode_proof(b"\xff" * 10)
    with pytest.raises(InvalidProof):
        checkpoint.from_text("autoswarm-proof zz", checkpoint.PROOF_LABEL)
    with pytest.raises(InvalidCheckpoint):
        checkpoint.from_text("autoswarm-proof 00", checkpoint.CHECKPOINT_LABEL)


# -- a real ledger file, through the CLI


def run_main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(list(argv), out=out, err=err)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


async def _append(path: Path, signed: SignedSpec, entries: list[Entry]) -> None:
    async with Ledger.open(path, signed) as ledger:
        for entry in entries:
            outcome = await ledger.append(entry)
            assert outcome.status.value == "appended", outcome


@dataclass(frozen=True)
class Files:
    dir: Path
    ledger: Path
    key: Path
    entries: list[Entry]
    first: int  # rows written before the first checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    base = tmp_path_factory.mktemp("checkpoint")
    signed = make_spec(CREATOR, [VERIFIER])
    entries = valid_history(signed, [VERIFIER], USERS, steps=90, seed=11)
    first = len(entries) // 2
    path = base / "node.sqlite"
    asyncio.run(_append(path, signed, entries[:first]))
    key = base / "node.pem"
    Identity.generate().save(key)
    assert run_main("checkpoint", str(path), "--key", str(key), "--out", str(base / "old.cp"))[0] == 0
    assert run_main("prove", str(path), "--entry", entries[3].id.hex(), "--checkpoint", str(base / "old.cp"),
                    "--out", str(base / "old-incl.proof"))[0] == 0
    asyncio.run(_append(path, signed, entries[first:]))  # the node goes on appending
    return Files(base, path, key, entries, first)


def test_the_store_function_matches_the_tree(files: Files) -> None:
    wires = [e.wire for e in files.entries]
    head = checkpoint.file_head(files.ledger)
    assert (head.rows, head.count, head.root) == (len(wires), len(wires), merkle.Tree.build(wires).root())
    assert checkpoint.file_head(files.ledger, 10).root == merkle.tree_head(wires[:10])[1]
    with pytest.raises(InvalidCheckpoint, match="holds"):
        checkpoint.file_head(files.ledger, len(wires) + 1)


def test_audit_checks_a_checkpoint_and_an_inclusion_proof(files: Files) -> None:
    old = files.dir / "old.cp"
    code, out, _ = run_main("audit", str(files.ledger), "--workers", "1", "--checkpoint", str(old),
                            "--proof", str(files.dir / "old-incl.proof"))
    assert code == 0, out
    assert f"matches the file's first {files.first} rows" in out
    assert f"entry {files.entries[3].id.hex()} " in out and f"is row 4 of {files.first}" in out
    assert out.rstrip().splitlines()[-1].endswith("; 1 checkpoint, 1 inclusion proof verified")


def test_after_appending_a_consistency_proof_between_checkpoints_passes(files: Files, tmp_path: Path) -> None:
    old, new, cons = files.dir / "old.cp", tmp_path / "new.cp", tmp_path / "cons.proof"
    assert run_main("checkpoint", str(files.ledger), "--key", str(files.key), "--out", str(new))[0] == 0
    code, out, err = run_main("prove", str(files.ledger), "--since", str(old), "--checkpoint", str(new), "--out", str(cons))
    assert code == 0, err
    assert f"consistency from {files.first} to {len(files.entries)} entries" in out
    incl = tmp_path / "incl.proof"
    last = files.entries[-1]
    assert run_main("prove", str(files.ledger), "--entry", last.id.hex(), "--out", str(incl))[0] == 0
    args = ["--checkpoint", str(old), "--checkpoint", str(new), "--proof", str(cons), "--proof", str(incl)]
    code, out, _ = run_main("audit", str(files.ledger), "--workers", "1", "--quiet", *args)
    assert code == 0, out
    assert out.strip().endswith("; 2 checkpoints, 1 inclusion proof, 1 consistency proof verified")
    # a buyer without the file checks the same proofs
    code, out, _ = run_main("verify", *args)
    assert code == 0, out
    assert f"extends the one of {files.first}" in out


def _tampered_hex(src: Path, dst: Path, at: int) -> Path:
    label, hexed = src.read_text().split()
    digit = "0" if hexed[at] != "0" else "1"
    dst.write_text(f"{label} {hexed[:at]}{digit}{hexed[at + 1:]}\n")
    return dst


@pytest.mark.parametrize("at", [5, 70, 150, 200, -3])
def test_a_tampered_checkpoint_fails_with_one_line(files: Files, tmp_path: Path, at: int) -> None:
    old = files.dir / "old.cp"
    bad = _tampered_hex(old, tmp_path / "bad.cp", at if at >= 0 else len(old.read_text().split()[1]) + at)
    result = subprocess.run([sys.executable, "-m", "ledger", "audit", str(files.ledger), "--workers", "1",
                             "--checkpoint", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith(f"FAILED: checkpoint {bad}: ")


@pytest.mark.parametrize("at", [10, 400, -10])
def test_a_tampered_proof_fails(files: Files, tmp_path: Path, at: int) -> None:
    src = files.dir / "old-incl.proof"
    bad = _tampered_hex(src, tmp_path / "bad.proof", at if at >= 0 else len(src.read_text().split()[1]) + at)
    code, out, _ = run_main("audit", str(files.ledger), "--workers", "1", "--quiet",
                            "--checkpoint", str(files.dir / "old.cp"), "--proof", str(bad))
    assert code == 1
    assert out.startswith("FAILED: ") and len(out.splitlines()) == 1
    code, out, _ = run_main("verify", "--checkpoint", str(files.dir / "old.cp"), "--proof", str(bad))
    assert code == 1 and out.splitlines()[-1].startswith("FAILED: ")


def test_a_checkpoint_of_another_history_fails(files: Files, tmp_path: Path) -> None:
    # a node that shows a buyer one history and keeps another: same swarm, same size, another root
    signed = make_spec(CREATOR, [VERIFIER])
    other = valid_history(signed, [VERIFIER], USERS, steps=90, seed=12)
    path = tmp_path / "other.sqlite"
    asyncio.run(_append(path, signed, other[:files.first]))
    cp = tmp_path / "other.cp"
    assert run_main("checkpoint", str(path), "--key", str(files.key), "--out", str(cp))[0] == 0
    code, out, _ = run_main("audit", str(files.ledger), "--workers", "1", "--quiet", "--checkpoint", str(cp))
    assert code == 1
    assert "do not have the checkpoint's root" in out
    code, out, _ = run_main("verify", "--checkpoint", str(files.dir / "old.cp"), "--checkpoint", str(cp))
    assert code == 1 and "different roots" in out


def test_cli_bad_input_is_one_line(files: Files, tmp_path: Path) -> None:
    code, _, err = run_main("audit", str(files.ledger), "--checkpoint", str(tmp_path / "missing.cp"))
    assert code == 2 and len(err.splitlines()) == 1 and "error" in err
    code, _, err = run_main("prove", str(files.ledger), "--entry", "abcd")
    assert code == 2 and "--entry" in err
    code, _, err = run_main("prove", str(files.ledger), "--entry", "00" * 32)
    assert code == 1 and "holds no entry" in err
    code, _, err = run_main("checkpoint", str(files.ledger), "--key", str(files.key), "--out", str(files.dir / "old.cp"))
    assert code == 2 and "already exists" in err
    code, _, err = run_main("audit", str(files.ledger), "--proof", str(files.dir / "old-incl.proof"))
    assert code == 2 and "--checkpoint" in err


def test_a_checkpoint_of_the_first_rows_and_of_none(files: Files, tmp_path: Path) -> None:
    for count in (0, 1, 10):
        cp = tmp_path / f"c{count}.cp"
        code, out, _ = run_main("checkpoint", str(files.ledger), "--key", str(files.key), "--count", str(count),
                                "--out", str(cp))
        assert code == 0 and out.startswith(f"checkpoint: {count} entries, root ")
        assert checkpoint.load_checkpoint(cp).checkpoint.count == count
    assert checkpoint.load_checkpoint(tmp_path / "c0.cp").checkpoint.root == merkle.EMPTY_ROOT
    cons = tmp_path / "c.proof"
    assert run_main("prove", str(files.ledger), "--since", str(tmp_path / "c1.cp"), "--checkpoint",
                    str(tmp_path / "c10.cp"), "--out", str(cons))[0] == 0
    code, out, _ = run_main("verify", *(f"--checkpoint={tmp_path / f'c{c}.cp'}" for c in (0, 1, 10)),
                            "--proof", str(cons))
    assert code == 0 and out.rstrip().endswith("OK: 3 checkpoints, 1 consistency proof verified")
    code, _, err = run_main("checkpoint", str(files.ledger), "--key", str(files.key), "--count", "100000")
    assert code == 2 and "holds" in err  # bad input, not a failed check
