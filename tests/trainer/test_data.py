"""Manifests, shard reading, the folder source and the offline default corpus."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainer import offline_corpus, sources
from trainer.data import (
    BadManifest, BadSource, Manifest, NoText, Shard, ShardMismatch, check_pins, read_documents,
)

H1, H2 = "a" * 64, "b" * 64


def shard(name: str, digest: str = H1, size: int = 3, split: str = "train") -> Shard:
    return Shard(name, digest, size, split)


# --- manifest -------------------------------------------------------------------------------

def test_manifest_hash_is_order_independent_and_known() -> None:
    a = Manifest.of([shard("b.txt", H2), shard("a.txt"), shard("v.txt", split="val")])
    b = Manifest.of([shard("v.txt", split="val"), shard("a.txt"), shard("b.txt", H2)])
    assert a == b and a.hash == b.hash
    # Known answer: the canonical bytes are part of the wire format between nodes.
    expected = (b'{"format":1,"shards":[{"name":"a.txt","sha256":"' + H1.encode() + b'","size_bytes":3,'
                b'"split":"train"},{"name":"b.txt","sha256":"' + H2.encode() + b'","size_bytes":3,"split":"train"},'
                b'{"name":"v.txt","sha256":"' + H1.encode() + b'","size_bytes":3,"split":"val"}]}')
    assert a.encode() == expected
    assert a.hash == hashlib.sha256(expected).hexdigest()


names = st.from_regex(r"[a-z0-9_]{1,12}(/[a-z0-9_]{1,8})?\.(txt|md|jsonl|parquet)", fullmatch=True)


@given(st.dictionaries(names, st.tuples(st.sampled_from([H1, H2]), st.integers(0, 2**40)), min_size=1, max_size=8))
def test_manifest_round_trips(entries: dict[str, tuple[str, int]]) -> None:
    shards = [Shard(n, d, s, "train") for n, (d, s) in entries.items()]
    m = Manifest.of(shards)
    assert Manifest.decode(m.encode()) == m


def test_manifest_rejects_non_canonical_bytes_and_bad_shards() -> None:
    m = Manifest.of([shard("a.txt")])
    with pytest.raises(BadManifest, match="canonical"):
        Manifest.decode(json.dumps(m.to_json(), indent=1).encode())
    with pytest.raises(BadManifest):
        Manifest.decode(b"not json")
    with pytest.raises(BadManifest, match="sorted"):
        Manifest((shard("b.txt"), shard("a.txt")))
    with pytest.raises(BadManifest, match="train"):
        Manifest.of([shard("a.txt", split="val")])
    for bad_name in ("../x.txt", "/etc/x.txt", "a\\b.txt", "x.exe", ""):
        with pytest.raises(BadManifest):
            shard(bad_name)
    with pytest.raises(BadManifest):
        shard("a.txt", digest="A" * 64)
    with pytest.raises(BadManifest):
        shard("a.txt", split="test")


def test_check_pins() -> None:
    m = Manifest.of([shard("a.txt"), shard("b.txt", H2)])
    assert check_pins(m, {"a.txt": H1, "b.txt": H2}) == "pinned"
    assert check_pins(m, {"a.txt": H1}) == "tofu"
    with pytest.raises(ShardMismatch):
        check_pins(m, {"a.txt": H2})


# --- reading shards -------------------------------------------------------------------------

def test_read_documents_formats(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["one", "", None, "two"]}), tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text('{"text": "three"}\n\n{"text": "fo\\u00fcr"}\n')
    (tmp_path / "c.md").write_text("# five\n")
    assert list(read_documents(tmp_path / "a.parquet")) == ["one", "two"]
    assert list(read_documents(tmp_path / "b.jsonl")) == ["three", "foür"]
    assert list(read_documents(tmp_path / "c.md")) == ["# five\n"]


def test_read_documents_errors(tmp_path: Path) -> None:
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(NoText, match="text"):
        list(read_documents(tmp_path / "a.parquet"))
    (tmp_path / "b.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(BadSource):
        list(read_documents(tmp_path / "b.parquet"))
    (tmp_path / "c.txt").write_bytes(b"\xff\xfe bad utf8")
    with pytest.raises(NoText, match="UTF-8"):
        list(read_documents(tmp_path / "c.txt"))
    (tmp_path / "d.jsonl").write_text('{"title": "x"}\n')
    with pytest.raises(NoText):
        list(read_documents(tmp_path / "d.jsonl"))


# --- folder source --------------------------------------------------------------------------

def make_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    pq.write_table(pa.table({"text": ["parquet doc one", "parquet doc two"]}), root / "sub" / "part0.parquet")
    (root / "notes.txt").write_text("a text document\n")
    (root / "readme.md").write_text("a markdown document\n")
    (root / "ignored.csv").write_text("x,y\n")
    (root / ".hidden" / "secret.txt").write_text("skipped\n")
    return root


def test_folder_source_last_shard_is_val(tmp_path: Path) -> None:
    ds = sources.scan_folder(make_folder(tmp_path / "f"))
    assert [s.name for s in ds.manifest.shards] == ["notes.txt", "readme.md", "sub/part0.parquet"]
    assert [s.name for s in ds.manifest.split("val")] == ["sub/part0.parquet"]
    assert list(ds.documents("train")) == ["a text document\n", "a markdown document\n"]
    assert list(ds.documents("val")) == ["parquet doc one", "parquet doc two"]
    ds.verify()


def test_folder_source_named_val_and_hash_is_location_independent(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "a")
    (a / "val").mkdir()
    (a / "val" / "held.txt").write_text("held out\n")
    b = make_folder(tmp_path / "elsewhere" / "b")
    (b / "val").mkdir()
    (b / "val" / "held.txt").write_text("held out\n")
    da, db = sources.scan_folder(a), sources.scan_folder(b)
    assert [s.name for s in da.manifest.split("val")] == ["val/held.txt"]
    assert da.manifest.hash == db.manifest.hash  # same bytes, same names: same dataset
    (b / "notes.txt").write_text("changed\n")
    assert sources.scan_folder(b).manifest.hash != da.manifest.hash


def test_folder_source_errors(tmp_path: Path) -> None:
    with pytest.raises(BadSource):
        sources.scan_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.csv").write_text("no")
    with pytest.raises(NoText):
        sources.scan_folder(tmp_path / "empty")


def test_verify_detects_a_changed_shard(tmp_path: Path) -> None:
    ds = sources.scan_folder(make_folder(tmp_path / "f"))
    (tmp_path / "f" / "notes.txt").write_text("a text documenT\n")
    with pytest.raises(ShardMismatch):
        ds.verify()


# --- the offline default --------------------------------------------------------------------

def test_offline_default_builds_fast_and_matches_its_pins(tmp_path: Path) -> None:
    started = time.monotonic()
    ds = offline_corpus.build(tmp_path)
    assert time.monotonic() - started < 10  # about 0.1 s on 2 cores
    assert ds.manifest.hash == offline_corpus.MANIFEST_SHA256 and ds.trust == "pinned"
    assert len(ds.manifest.shards) == offline_corpus.NUM_SHARDS
    assert [s.name for s in ds.manifest.split("val")] == ["web_09.jsonl"]
    docs = list(ds.documents("train")) + list(ds.documents("val"))
    assert len(docs) == offline_corpus.CHAPTERS_EXPECTED
    assert docs and all("`" not in d and "[" not in d for d in docs)
    assert any(d.startswith("In the beginning God created the heavens and the earth.") for d in docs)
    # Cached: the second build reuses the verified files.
    assert offline_corpus.build(tmp_path) == ds


def test_offline_default_rebuilds_a_tampered_cache(tmp_path: Path) -> None:
    ds = offline_corpus.build(tmp_path)
    (ds.root / "web_00.jsonl").write_text('{"text": "poison"}\n')
    again = offline_corpus.build(tmp_path)
    assert again == ds
    again.verify()


def test_offline_default_refuses_other_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offline_corpus, "TEXT_SHA256", "0" * 64)
    with pytest.raises(ShardMismatch, match="pinned"):
        offline_corpus.build(tmp_path)
