"""Property tests of the pure byte formats: deltas, packs and bundle headers."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.delta import apply_delta, make_delta
from swarm.errors import BundleRejected
from swarm.gitobjects import BLOB, TREE, RawObject, parse_commit, parse_tree
from swarm.packfile import (
    OFS_DELTA, REF_DELTA, PackLimits, parse_bundle_header, parse_pack, resolve_pack, write_bundle,
    write_pack,
)
from tests.swarm.test_bundles import one_line_change, train_py

LIMITS = PackLimits(max_objects=100, max_object_bytes=1 << 20, max_inflated_bytes=8 << 20)
OID = bytes(range(20))


@st.composite
def base_and_target(draw: st.DrawFn) -> tuple[bytes, bytes]:
    base = draw(st.binary(max_size=3000))
    if draw(st.booleans()):
        return base, draw(st.binary(max_size=3000))
    # An edited copy: cut, insert and repeat ranges of the base, as edits of source do.
    target = bytearray(base)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(target)))
        target[at:at + draw(st.integers(0, 40))] = draw(st.binary(max_size=40))
    return base, bytes(target)


@settings(max_examples=300, deadline=None)
@given(base_and_target())
def test_delta_rebuilds_the_target(pair: tuple[bytes, bytes]) -> None:
    base, target = pair
    assert apply_delta(base, make_delta(base, target), len(target)) == target


def test_delta_of_a_one_line_change_is_small() -> None:
    base = train_py()
    delta = make_delta(base, one_line_change(base))
    assert apply_delta(base, delta, len(base) + 100) == one_line_change(base)
    assert len(delta) < 80
    assert len(make_delta(base, base)) < 12  # one copy instruction per 64 KiB


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=2000), min_size=1, max_size=8, unique=True), st.data())
def test_pack_round_trip_with_in_pack_and_thin_deltas(contents: list[bytes], data: st.DataObject) -> None:
    objects = [RawObject.of(BLOB, c) for c in contents]
    outside = RawObject.of(BLOB, contents[0] + b"outside the pack")
    items: list[tuple[RawObject, RawObject | None]] = []
    for i, obj in enumerate(objects):
        choice = data.draw(st.integers(0, 2))
        base = None if choice == 0 else outside if choice == 1 or i == 0 else objects[i - 1]
        items.append((obj, base))
    pack = write_pack(items)
    entries = parse_pack(pack, LIMITS)
    first = resolve_pack(entries, {}, LIMITS)
    if any(e.kind == REF_DELTA for e in entries):
        assert first.missing_bases == {outside.oid}
    second = resolve_pack(entries, {outside.oid: outside}, LIMITS)
    assert not second.missing_bases
    assert sorted(o.oid for o in second.objects) == sorted(o.oid for o in objects)


def test_in_pack_bases_are_named_by_offset() -> None:
    a = RawObject.of(BLOB, train_py(5000))
    b = RawObject.of(BLOB, one_line_change(a.data))
    entries = parse_pack(write_pack([(a, None), (b, a)]), LIMITS)
    assert [e.kind for e in entries] == [BLOB, OFS_DELTA]
    assert entries[1].base_offset == entries[0].offset


def test_limits_apply_before_inflating() -> None:
    blob = RawObject.of(BLOB, b"x" * 5000)
    pack = write_pack([(blob, None)])
    with pytest.raises(BundleRejected, match="declares"):
        parse_pack(pack, PackLimits(10, 4999, 1 << 20))
    with pytest.raises(BundleRejected, match="inflates to more"):
        parse_pack(write_pack([(blob, None), (RawObject.of(BLOB, b"y" * 5000), None)]),
                   PackLimits(10, 5000, 9999))
    chain = [RawObject.of(BLOB, b"line\n" * 50 + bytes([i])) for i in range(6)]
    deep = parse_pack(write_pack([(o, chain[i - 1] if i else None) for i, o in enumerate(chain)]),
                      LIMITS)
    with pytest.raises(BundleRejected, match="deeper"):
        resolve_pack(deep, {}, PackLimits(10, 1 << 20, 1 << 20, max_delta_depth=4))


def test_bundle_header_accepts_what_git_writes_and_nothing_else() -> None:
    pack = write_pack([])
    oid = OID.hex().encode()
    git_style = (b"# v3 git bundle\n@object-format=sha1\n-" + oid + b" subject line\n"
                 + oid + b" refs/heads/main\n" + oid + b" HEAD\n\n" + pack)
    header = parse_bundle_header(git_style)
    assert header.prerequisites == (OID,) and [n for n, _ in header.refs] == [b"refs/heads/main", b"HEAD"]
    assert git_style[header.pack_offset:] == pack
    assert parse_bundle_header(write_bundle([OID], [(b"HEAD", OID)], pack)).refs == ((b"HEAD", OID),)
    for bad in (
        b"# v3 git bundle\n@object-format=sha256\n" + oid + b" HEAD\n\n",
        b"# v3 git bundle\n@filter=blob:none\n" + oid + b" HEAD\n\n",
        b"# v2 git bundle\n@object-format=sha1\n" + oid + b" HEAD\n\n",
        b"# v2 git bundle\n" + oid.upper() + b" HEAD\n\n",
        b"# v2 git bundle\n" + oid + b"\n\n",
        b"# v2 git bundle\n" + oid + b" two words\n\n",
        b"# v2 git bundle\n-" + oid + b"\n\n",  # prerequisites but no ref
        b"# v2 git bundle\n" + oid + b" HEAD\n",  # the header never ends
    ):
        with pytest.raises(BundleRejected):
            parse_bundle_header(bad)


def test_trees_and_commits_are_parsed_strictly() -> None:
    entry = b"100644 train.py\0" + OID
    assert parse_tree(entry)[0].name == b"train.py"
    for bad in (b"100644 b\0" + OID + b"100644 a\0" + OID,  # unsorted
                entry + entry,  # duplicate
                b"040000 d\0" + OID,  # zero-padded mode
                b"100664 a\0" + OID,  # old group-writable mode
                b"100644 a\0" + OID[:10],  # truncated
                b"100644 a/b\0" + OID):
        with pytest.raises(BundleRejected):
            parse_tree(bad)
    assert RawObject.of(TREE, entry).kind == TREE
    good = b"tree " + OID.hex().encode() + b"\nauthor a <a> 1 +0000\ncommitter a <a> 1 +0000\n\nm"
    assert parse_commit(good).parents == ()
    for bad in (good.replace(b"tree ", b"tree  "), good.replace(b"author", b"committer"),
                b"parent " + OID.hex().encode() + b"\n" + good, good.replace(b"\n\nm", b"\x00")):
        with pytest.raises(BundleRejected):
            parse_commit(bad)
