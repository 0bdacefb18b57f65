"""prepare(): the real offline default end to end, caching, folder sources, and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer import offline_corpus, tokenizer
from trainer.data_format import load_prepared, read_token_bytes, read_tokens
from trainer.prepare import ManifestMismatch, holdout_start, main, prepare

SUBPROCESS_TIMEOUT_S = 120
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def default_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.mark.slow
def test_default_prepare_end_to_end(default_home: Path) -> None:
    started = time.monotonic()
    data = prepare("default", home=default_home, progress=False)
    assert time.monotonic() - started < 30  # about 1 s on 2 cores
    assert data.vocab_size == 8192 and data.bos_id == tokenizer.BOS_ID
    assert data.manifest_hash == offline_corpus.MANIFEST_SHA256 and data.source == "default"
    assert data.root.parent == default_home / "data" / "prepared"
    train, val = read_tokens(data.train_tokens), read_tokens(data.val_tokens)
    assert len(train) > 500_000 and len(val) > 50_000
    assert train[0] == val[0] == tokenizer.BOS_ID
    assert int(train.max()) < 8192
    # The token bytes add up to the text: bits per byte will be measured against the real bytes.
    tok = tokenizer.load(data.tokenizer_json)
    first_doc = np.asarray(train[1:np.flatnonzero(np.asarray(train[1:]) == tokenizer.BOS_ID)[0] + 1])
    text = tokenizer.decode(tok, first_doc.tolist())
    assert int(read_token_bytes(data)[first_doc].sum()) == len(text.encode())
    manifest = json.loads((data.root / "manifest.json").read_text())
    assert manifest["format"] == 1 and len(manifest["shards"]) == offline_corpus.NUM_SHARDS


def test_second_prepare_is_a_cache_hit(default_home: Path) -> None:
    first = prepare("default", home=default_home, progress=False)
    started = time.monotonic()
    second = prepare("default", home=default_home, progress=False)
    assert time.monotonic() - started < 2
    assert second == first
    assert sorted(p.name for p in (default_home / "data" / "prepared").iterdir()) == [first.root.name]


def test_other_settings_get_their_own_folder_and_reuse_the_tokenizer(default_home: Path) -> None:
    full = prepare("default", home=default_home, progress=False)
    small = prepare("default", home=default_home, max_train_tokens=10_000, max_val_tokens=2_000, progress=False)
    assert small.root != full.root
    assert len(read_tokens(small.train_tokens)) == 10_000 and len(read_tokens(small.val_tokens)) == 2_000
    assert np.array_equal(read_tokens(small.train_tokens), read_tokens(full.train_tokens)[:10_000])
    report = json.loads((small.root / "prepare.json").read_text())
    assert report["tokenizer_cached"] is True


def test_expected_manifest_hash_is_enforced(default_home: Path) -> None:
    prepare("default", home=default_home, expected_manifest_hash=offline_corpus.MANIFEST_SHA256, progress=False)
    with pytest.raises(ManifestMismatch):
        prepare("default", home=default_home, expected_manifest_hash="0" * 64, progress=False)


def test_folder_with_parquet_and_text(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    words = [f"word{i % 97} and text number {i}." for i in range(2000)]
    pq.write_table(pa.table({"text": [" ".join(words[i:i + 20]) for i in range(0, 2000, 20)]}), src / "a.parquet")
    (src / "b.txt").write_text(" ".join(reversed(words)))
    (src / "val.md").write_text("held-out words for validation only.\n" * 10)
    data = prepare(str(src), home=tmp_path / "home", vocab_size=300, progress=False)
    assert data.source == "folder:src" and data.vocab_size == 300
    tok = tokenizer.load(data.tokenizer_json)
    val = np.asarray(read_tokens(data.val_tokens))
    assert tokenizer.decode(tok, val[1:].tolist()) == "held-out words for validation only.\n" * 10
    assert np.count_nonzero(np.asarray(read_tokens(data.train_tokens)) == tokenizer.BOS_ID) == 101


def test_single_file_folder_holds_out_its_tail(tmp_path: Path) -> None:
    src = tmp_path / "one"
    src.mkdir()
    (src / "book.txt").write_text("".join(f"Line {i} of a single long document.\n" for i in range(3000)))
    data = prepare(str(src), home=tmp_path / "home", vocab_size=300, progress=False)
    train, val = read_tokens(data.train_tokens), read_tokens(data.val_tokens)
    total = len(train) + len(val)
    assert abs(len(val) - total // 10) <= 1
    tok = tokenizer.load(data.tokenizer_json)
    joined = tokenizer.decode(tok, np.concatenate([train[1:], val]).tolist())
    assert joined == (src / "book.txt").read_text()


def test_holdout_cuts_at_a_document_start() -> None:
    tokens = np.array([0, 5, 5, 5, 0, 6, 6, 6, 6, 6, 0, 7, 7], dtype=np.uint16)
    assert holdout_start(tokens) == 10  # 90% of 13 is 11; the last BOS at or before it is at 10
    assert holdout_start(np.array([0] + [5] * 99, dtype=np.uint16)) == 90  # one document: plain cut


# --- the CLI ----------------------------------------------------------------------------------

def test_cli_prints_json_last_line(default_home: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOSWARM_HOME", str(default_home))
    assert main(["--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads(last)
    assert report["cached"] is True and report["manifest_hash"] == offline_corpus.MANIFEST_SHA256
    assert load_prepared(Path(report["path"])).vocab_size == 8192


@pytest.mark.parametrize("argv, message", [
    (["--source", "/definitely/not/here"], "no such folder"),
    (["--vocab-size", "10"], "vocab size 10"),
    (["--vocab-size", "many"], "invalid int value"),
    (["--max-train-tokens", "0"], "must be positive"),
    (["--frobnicate"], "unrecognized arguments"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              argv: list[str], message: str) -> None:
    assert main([*argv, "--home", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare: ") and message in lines[0]


def test_cli_folder_without_text_in_a_real_process(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("   \n")
    (empty / "other.txt").write_text("\n")
    proc = subprocess.run([sys.executable, "-m", "trainer.prepare", "--source", str(empty), "--home",
                           str(tmp_path / "home"), "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "no text" in proc.stderr


def test_a_damaged_prepared_folder_is_rebuilt(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("some training words here. " * 200)
    (src / "val.txt").write_text("validation words. " * 50)
    first = prepare(str(src), home=tmp_path / "home", vocab_size=300, progress=False)
    first.val_tokens.unlink()
    second = prepare(str(src), home=tmp_path / "home", vocab_size=300, progress=False)
    assert second == first and second.val_tokens.is_file()
