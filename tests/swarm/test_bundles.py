"""Thin bundles between real repositories, checked against the git command line.

Every bundle here is real: built by `make_bundle`, by `git bundle create`, or crafted object by
object with the pack writer to break exactly one rule. Every rejection also checks that nothing
entered the receiving repository.
"""
from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
import tempfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarm import gitrepo, packfile
from swarm.bundles import BUNDLE_REF, apply_bundle, bundle_hash, make_bundle
from swarm.errors import BundleRejected, SwarmError
from swarm.gitobjects import BLOB, COMMIT, TREE, RawObject
from swarm.gitrepo import Repository
from swarm.packfile import PackLimits, parse_bundle_header, parse_pack, write_bundle, write_pack

AUTHOR = "node <node@swarm>"
ALLOWED = frozenset({"train.py"})
HARNESS = b"def evaluate(model):\n    return 0.0\n"


def train_py(size_bytes: int = 30_000, seed: int = 1) -> bytes:
    """Deterministic code-like text of about `size_bytes`, compressing like real source."""
    rng = random.Random(seed)
    words = ["model", "layer", "attn", "scale", "torch", "x", "h", "lr", "step", "norm", "mlp"]
    lines, size, i = [], 0, 0
    while size < size_bytes:
        line = (f"    {rng.choice(words)}_{i} = {rng.choice(words)}({rng.choice(words)}, "
                f"{rng.random():.4f})  # {rng.choice(words)}\n")
        lines.append(line)
        size, i = size + len(line), i + 1
    return "".join(lines).encode()


def one_line_change(source: bytes) -> bytes:
    lines = source.splitlines(keepends=True)
    lines[len(lines) // 2] = b"    lr = 0.04  # was 0.02\n"
    return b"".join(lines)


def git(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def object_count(repo: Repository) -> int:
    return sum(1 for p in (repo.path / "objects").rglob("*") if p.is_file())


@dataclass
class Pair:
    """Two nodes that share the base commit; the sender also has the experiment `child`."""

    sender: Repository
    receiver: Repository
    base: bytes
    child: bytes
    source: bytes
    changed: bytes


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    source = train_py()
    files = {"train.py": source, "harness.py": HARNESS}
    async with Repository.open(tmp_path / "sender") as sender, \
            Repository.open(tmp_path / "receiver") as receiver:
        base = await gitrepo.commit_file(sender, None, files, "baseline", AUTHOR, 1_700_000_000)
        assert await gitrepo.commit_file(receiver, None, files, "baseline", AUTHOR,
                                         1_700_000_000) == base
        changed = one_line_change(source)
        child = await gitrepo.commit_file(sender, base, {"train.py": changed}, "lr 0.04",
                                          AUTHOR, 1_700_000_300)
        yield Pair(sender, receiver, base, child, source, changed)


async def expect_rejected(pair: Pair, data: bytes, match: str, *, expect: bytes | None = None,
                          **limits: int) -> None:
    before = object_count(pair.receiver)
    with pytest.raises(BundleRejected, match=match):
        await apply_bundle(pair.receiver, data, expect_commit=expect or pair.child,
                           allowed_paths=ALLOWED, **limits)
    assert object_count(pair.receiver) == before, "a rejected bundle wrote objects"


# -- round trips and size


async def test_round_trip_between_two_repositories(pair: Pair) -> None:
    data = await make_bundle(pair.sender, pair.child, [pair.base])
    assert not await gitrepo.has_commit(pair.receiver, pair.child)
    await apply_bundle(pair.receiver, data, expect_commit=pair.child, allowed_paths=ALLOWED)
    assert await gitrepo.has_commit(pair.receiver, pair.child)
    assert await gitrepo.read_file(pair.receiver, pair.child, "train.py") == pair.changed
    assert await gitrepo.read_file(pair.receiver, pair.child, "harness.py") == HARNESS
    assert await gitrepo.changed_paths(pair.receiver, pair.base, pair.child) == {"train.py"}
    text = await gitrepo.diff(pair.receiver, pair.base, pair.child)
    assert "+    lr = 0.04  # was 0.02\n" in text and text.startswith("--- a/train.py")
    assert len(bundle_hash(data)) == 32 and bundle_hash(data) == hashlib.sha256(data).digest()
    git("fsck", "--strict", "--no-dangling", cwd=pair.receiver.path)
    # Applying again is harmless: every object is already there.
    await apply_bundle(pair.receiver, data, expect_commit=pair.child, allowed_paths=ALLOWED)
    # The receiver now builds the same bytes, so either node can serve the claim's bundle.
    assert await make_bundle(pair.receiver, pair.child, [pair.base]) == data
    # A receiver that has the commit already gets an empty pack, which applies as a no-op.
    empty = await make_bundle(pair.sender, pair.child, [pair.child])
    await apply_bundle(pair.receiver, empty, expect_commit=pair.child, allowed_paths=ALLOWED)


async def test_one_line_change_costs_a_few_hundred_bytes(pair: Pair) -> None:
    ours = await make_bundle(pair.sender, pair.child, [pair.base])
    git("update-ref", "refs/heads/main", pair.child.hex(), cwd=pair.sender.path)
    git("bundle", "create", "-q", "../git.bundle", "main", f"^{pair.base.hex()}",
        cwd=pair.sender.path)
    theirs = (pair.sender.path.parent / "git.bundle").read_bytes()
    print(f"one-line change of a {len(pair.source)}-byte train.py: "
          f"make_bundle {len(ours)} bytes, git bundle create {len(theirs)} bytes")
    assert len(ours) <= 500  # the goal; the brief's bound is 1000
    assert len(ours) <= len(theirs) + 64


async def test_bundle_of_several_commits_and_a_full_bundle(pair: Pair) -> None:
    grandchild = await gitrepo.commit_file(pair.sender, pair.child,
                                           {"train.py": pair.changed + b"# more\n"}, "more",
                                           AUTHOR, 1_700_000_600)
    data = await make_bundle(pair.sender, grandchild, [pair.base, b"\x01" * 20])
    await apply_bundle(pair.receiver, data, expect_commit=grandchild, allowed_paths=ALLOWED)
    assert await gitrepo.has_commit(pair.receiver, pair.child)
    # No `have`: the whole history travels, and its root commit has no parent to compare with.
    full = await make_bundle(pair.sender, grandchild, [])
    assert full.count(b"\n-") == 0
    await expect_rejected(pair, full, "0 parents", expect=grandchild)


# -- interoperability with the git command line


async def test_git_verifies_and_fetches_our_bundle(pair: Pair) -> None:
    bundle = pair.receiver.path.parent / "ours.bundle"
    bundle.write_bytes(await make_bundle(pair.sender, pair.child, [pair.base]))
    out = git("bundle", "verify", bundle, cwd=pair.receiver.path)
    assert pair.child.hex() in out
    git("fetch", "-q", bundle, f"{BUNDLE_REF.decode()}:refs/heads/got", cwd=pair.receiver.path)
    assert git("rev-parse", "refs/heads/got", cwd=pair.receiver.path).strip() == pair.child.hex()
    shown = git("cat-file", "blob", "got:train.py", cwd=pair.receiver.path)
    assert shown.encode() == pair.changed
    git("fsck", "--strict", cwd=pair.receiver.path)
    # Two commits at once: the second blob is a REF_DELTA of the first, inside the pack.
    grandchild = await gitrepo.commit_file(pair.sender, pair.child,
                                           {"train.py": pair.changed + b"# more\n"}, "more",
                                           AUTHOR, 1_700_000_600)
    bundle.write_bytes(await make_bundle(pair.sender, grandchild, [pair.base]))
    git("fetch", "-q", bundle, f"{BUNDLE_REF.decode()}:refs/heads/got2", cwd=pair.receiver.path)
    assert git("rev-parse", "got2~1", cwd=pair.receiver.path).strip() == pair.child.hex()


@pytest.mark.parametrize("version", ["2", "3"])
async def test_we_accept_a_thin_bundle_from_git_bundle_create(pair: Pair, version: str) -> None:
    # Two commits on top of the base: git packs the second blob as an OFS_DELTA of the first
    # and the first as a REF_DELTA of the base's blob, which only the receiver has.
    grandchild = await gitrepo.commit_file(pair.sender, pair.child,
                                           {"train.py": pair.changed.replace(b"0.04", b"0.05")},
                                           "lr 0.05", AUTHOR, 1_700_000_600)
    git("update-ref", "refs/heads/main", grandchild.hex(), cwd=pair.sender.path)
    git("bundle", "create", "-q", f"--version={version}", "../git.bundle", "main",
        f"^{pair.base.hex()}", cwd=pair.sender.path)
    data = (pair.sender.path.parent / "git.bundle").read_bytes()
    assert data.startswith(f"# v{version} git bundle".encode())
    assert f"-{pair.base.hex()}".encode() in data
    await apply_bundle(pair.receiver, data, expect_commit=grandchild, allowed_paths=ALLOWED)
    assert await gitrepo.read_file(pair.receiver, grandchild, "train.py") == \
        pair.changed.replace(b"0.04", b"0.05")
    git("fsck", "--strict", "--no-dangling", cwd=pair.receiver.path)


# -- rejections


async def test_rejects_a_bundle_of_another_commit(pair: Pair) -> None:
    data = await make_bundle(pair.sender, pair.child, [pair.base])
    await expect_rejected(pair, data, "claim names", expect=b"\x07" * 20)


async def test_rejects_changes_outside_the_allowed_paths(pair: Pair) -> None:
    for files in ({"harness.py": b"cheat\n"}, {"evil.py": b"x\n"}, {"sub/train.py": b"x\n"}):
        commit = await gitrepo.commit_file(pair.sender, pair.base, files, "x", AUTHOR, 1)
        data = await make_bundle(pair.sender, commit, [pair.base])
        await expect_rejected(pair, data, "outside the allowed paths", expect=commit)


async def test_rejects_a_bundle_whose_prerequisite_is_missing(pair: Pair, tmp_path: Path) -> None:
    data = await make_bundle(pair.sender, pair.child, [pair.base])
    async with Repository.open(tmp_path / "empty") as empty:
        with pytest.raises(BundleRejected, match="not here"):
            await apply_bundle(empty, data, expect_commit=pair.child, allowed_paths=ALLOWED)
        assert object_count(empty) == 0


async def test_rejects_truncated_garbage_oversized_and_too_many_objects(pair: Pair) -> None:
    data = await make_bundle(pair.sender, pair.child, [pair.base])
    for broken, why in ((data[:-1], "checksum"), (data[: len(data) // 2], "checksum"),
                        (data[:40], "does not end"), (b"", "not a v2"),
                        (b"garbage" * 50, "not a v2"), (data.replace(b"# v2", b"# v9"), "not a v2"),
                        (data[:-20] + b"\0" * 20, "checksum"),
                        (data[:data.index(b"PACK")], "does not carry a pack")):
        await expect_rejected(pair, broken, why)
    await expect_rejected(pair, data, "over the limit", max_bytes=len(data) - 1)
    await expect_rejected(pair, data, "more than the limit", max_objects=2)


def crafted_bundle(prerequisite: bytes, ref: bytes,
                   items: list[tuple[RawObject, RawObject | None]]) -> bytes:
    return write_bundle([prerequisite], [(b"refs/heads/x", ref)], write_pack(items))


def commit_object(tree: bytes, parents: list[bytes], message: bytes = b"crafted\n") -> RawObject:
    lines = [b"tree " + tree.hex().encode()] + [b"parent " + p.hex().encode() for p in parents]
    lines += [b"author n <n@x> 1 +0000", b"committer n <n@x> 1 +0000"]
    return RawObject.of(COMMIT, b"\n".join(lines) + b"\n\n" + message)


def tree_object(*entries: tuple[bytes, bytes, bytes]) -> RawObject:
    return RawObject.of(TREE, b"".join(m + b" " + n + b"\0" + oid for m, n, oid in entries))


async def base_entries(pair: Pair) -> tuple[bytes, bytes]:
    """Ids of the base's harness.py and train.py blobs."""
    harness = RawObject.of(BLOB, HARNESS).oid
    return harness, RawObject.of(BLOB, pair.source).oid


@pytest.mark.parametrize("mode,name,why", [
    (b"100755", b"train.py", "mode 100755"),
    (b"120000", b"train.py", "mode 120000"),
    (b"160000", b"train.py", "mode 160000"),
    (b"100644", b"..", "not allowed"),
    (b"100644", b".git", "not allowed"),
])
async def test_rejects_crafted_trees(pair: Pair, mode: bytes, name: bytes, why: str) -> None:
    harness, _ = await base_entries(pair)
    blob = RawObject.of(BLOB, b"import os\n")
    entries = sorted([(b"100644", b"harness.py", harness), (mode, name, blob.oid)],
                     key=lambda e: e[1])
    tree = tree_object(*entries)
    commit = commit_object(tree.oid, [pair.base])
    data = crafted_bundle(pair.base, commit.oid, [(blob, None), (tree, None), (commit, None)])
    await expect_rejected(pair, data, why, expect=commit.oid)


async def test_rejects_deletions_merges_and_stray_objects(pair: Pair) -> None:
    harness, train = await base_entries(pair)
    blob = RawObject.of(BLOB, b"new\n")
    gone = tree_object((b"100644", b"harness.py", harness))
    commit = commit_object(gone.oid, [pair.base])
    await expect_rejected(pair, crafted_bundle(pair.base, commit.oid, [(gone, None), (commit, None)]),
                          "deletes train.py", expect=commit.oid)
    tree = tree_object((b"100644", b"harness.py", harness), (b"100644", b"train.py", blob.oid))
    merge = commit_object(tree.oid, [pair.base, pair.base])
    await expect_rejected(pair, crafted_bundle(pair.base, merge.oid,
                                               [(blob, None), (tree, None), (merge, None)]),
                          "2 parents", expect=merge.oid)
    good = commit_object(tree.oid, [pair.base])
    stray = RawObject.of(BLOB, b"smuggled\n")
    await expect_rejected(pair, crafted_bundle(pair.base, good.oid, [(blob, None), (tree, None),
                                                                     (stray, None), (good, None)]),
                          "does not use", expect=good.oid)


async def test_rejects_objects_whose_ids_do_not_match_their_content(pair: Pair) -> None:
    harness, _ = await base_entries(pair)
    blob = RawObject.of(BLOB, b"honest\n")
    tree = tree_object((b"100644", b"harness.py", harness), (b"100644", b"train.py", blob.oid))
    commit = commit_object(tree.oid, [pair.base])
    # The tree names the honest blob, the pack carries another content under that id.
    forged = RawObject(BLOB, b"forged\n", blob.oid)
    data = crafted_bundle(pair.base, commit.oid, [(forged, None), (tree, None), (commit, None)])
    await expect_rejected(pair, data, "neither in the bundle nor here", expect=commit.oid)
    # The ref names a commit, the pack carries a different one.
    other = commit_object(tree.oid, [pair.base], b"altered message\n")
    data = crafted_bundle(pair.base, commit.oid, [(blob, None), (tree, None), (other, None)])
    await expect_rejected(pair, data, "does not contain commit", expect=commit.oid)


def pack_with_raw_entry(header: bytes, stream: bytes) -> bytes:
    body = b"PACK" + (2).to_bytes(4, "big") + (1).to_bytes(4, "big") + header + stream
    return body + hashlib.sha1(body).digest()


def entry_header(kind: int, size: int) -> bytes:
    return packfile._entry_header(kind, size)  # the writer's own header: the bomb lies only in the stream


async def test_rejects_zlib_bombs_without_inflating_them(pair: Pair) -> None:
    bomb = zlib.compress(b"\0" * (64 << 20), 9)  # 64 MiB of zeros in about 64 KiB
    assert len(bomb) < 100_000
    honest_size = pack_with_raw_entry(entry_header(BLOB, 64 << 20), bomb)
    lying_size = pack_with_raw_entry(entry_header(BLOB, 100), bomb)
    for pack in (honest_size, lying_size):
        data = write_bundle([pair.base], [(b"HEAD", pair.child)], pack)
        await expect_rejected(pair, data, "declares|beyond")


async def test_rejects_a_delta_bomb(pair: Pair) -> None:
    # A tiny delta that claims a 1 GiB result from a copy instruction repeated.
    base = RawObject.of(BLOB, pair.source)
    delta = bytes([len(base.data) & 0x7F | 0x80, len(base.data) >> 7 & 0x7F | 0x80,
                   len(base.data) >> 14]) + b"\x80\x80\x80\x80\x04" + b"\x90\xff" * 1000
    stream = zlib.compress(delta)
    pack = pack_with_raw_entry(entry_header(7, len(delta)) + base.oid, stream)
    await expect_rejected(pair, write_bundle([pair.base], [(b"HEAD", pair.child)], pack),
                          "over the limit|beyond|outside")


# -- fuzzing


def mutate(data: bytes, rng: random.Random, fix_checksum: bool) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(4)
        at = rng.randrange(len(buf) + 1)
        if choice == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
        elif choice == 2:
            del buf[at:at + rng.randint(1, 16)]
        else:
            buf[at:at + 1] = bytes([rng.randrange(256)])
    out = bytes(buf)
    pack_at = out.find(b"\n\nPACK")
    if fix_checksum and pack_at >= 0 and len(out) >= pack_at + 2 + 32:
        body = out[:-20]  # re-seal, so the mutation reaches the parser behind the checksum
        out = body + hashlib.sha1(body[pack_at + 2:]).digest()
    return out


def test_fuzzed_bundles_raise_only_bundle_rejected() -> None:
    with tempfile.TemporaryDirectory() as tmp, asyncio.Runner() as runner:
        sender = runner.run(Repository._open(Path(tmp) / "s"))
        receiver = runner.run(Repository._open(Path(tmp) / "r"))
        files = {"train.py": train_py(4000), "harness.py": HARNESS}
        base = runner.run(gitrepo.commit_file(sender, None, files, "b", AUTHOR, 1))
        runner.run(gitrepo.commit_file(receiver, None, files, "b", AUTHOR, 1))
        child = runner.run(gitrepo.commit_file(
            sender, base, {"train.py": one_line_change(files["train.py"])}, "c", AUTHOR, 2))
        good = runner.run(make_bundle(sender, child, [base]))

        header = parse_bundle_header(good)
        entries = parse_pack(good[header.pack_offset:], PackLimits(10, 1 << 20, 1 << 20))

        @settings(max_examples=300, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(which=st.integers(0, len(entries) - 1), seed=st.integers(0, 2**32))
        def check_inflated(which: int, seed: int) -> None:
            # Mutate an object's inflated bytes (tree, commit or delta instructions) and
            # re-frame it validly, so the mutation reaches the parsers behind zlib.
            rng = random.Random(seed)
            parts = []
            for i, entry in enumerate(entries):
                content = mutate(entry.data, rng, False) if i == which else entry.data
                kind = entry.kind if i != which or rng.random() < 0.9 else rng.randrange(8)
                parts.append(entry_header(kind, len(content)) + entry.base_oid
                             + zlib.compress(content))
            body = b"PACK" + (2).to_bytes(4, "big") + len(parts).to_bytes(4, "big") + b"".join(parts)
            candidate = good[:header.pack_offset] + body + hashlib.sha1(body).digest()
            before = object_count(receiver)
            try:
                runner.run(apply_bundle(receiver, candidate, expect_commit=child,
                                        allowed_paths=ALLOWED))
            except BundleRejected:
                assert object_count(receiver) == before
            else:
                assert runner.run(gitrepo.has_commit(receiver, child))

        check_inflated()

        @settings(max_examples=400, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(seed=st.integers(0, 2**32), fix=st.booleans(), noise=st.binary(max_size=300))
        def check(seed: int, fix: bool, noise: bytes) -> None:
            for candidate in (mutate(good, random.Random(seed), fix), noise,
                              good[:64] + noise):
                before = object_count(receiver)
                try:
                    runner.run(apply_bundle(receiver, candidate, expect_commit=child,
                                            allowed_paths=ALLOWED))
                except BundleRejected:
                    assert object_count(receiver) == before
                    continue
                except SwarmError as exc:
                    raise AssertionError(f"non-bundle SwarmError {exc!r}") from exc
                # A mutation may survive (a changed ref name, say); then it must have brought
                # exactly the commit the claim names.
                assert runner.run(gitrepo.has_commit(receiver, child))

        check()
        runner.run(sender.aclose())
        runner.run(receiver.aclose())
