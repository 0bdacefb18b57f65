"""The byte-level BPE tokenizer: round trips, BOS handling, token byte lengths, determinism, cache."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer import tokenizer
from trainer.tokenizer import BOS, BOS_ID, BadVocabSize

SUBPROCESS_TIMEOUT_S = 60

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Numbers like 12345 and 3.14159 appear in text; so do e-mail addresses: a@b.org.",
    "Ünïcödé text, 日本語のテキスト, emoji 🙂🚀, and Greek αβγ.",
    "def f(x):\n    return x ** 2  # code is text too\n",
] * 20


@pytest.fixture(scope="module")
def tok():
    return tokenizer.train(CORPUS, 400)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_string_round_trips(tok, text: str) -> None:
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tokenizer.decode(tok, ids) == text
    assert BOS_ID not in ids


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_token_bytes_sum_to_utf8_length(tok, text: str) -> None:
    table = tokenizer.token_bytes(tok, 400)
    ids = tok.encode(text, add_special_tokens=False).ids
    assert int(table[ids].sum()) == len(text.encode("utf-8"))


def test_token_bytes_table(tok) -> None:
    table = tokenizer.token_bytes(tok, 512)  # padded past the trained vocabulary
    assert table.dtype == np.dtype("<i4") and table.shape == (512,)
    assert table[BOS_ID] == 0
    assert (table[1:tok.get_vocab_size()] >= 1).all()
    assert (table[tok.get_vocab_size():] == 0).all()
    the = tok.token_to_id("Ġthe")  # a merged token: space + "the" = 4 bytes
    assert the is not None and table[the] == 4


def test_literal_bos_in_text_is_not_a_special_token(tok) -> None:
    ids = tok.encode(f"a {BOS} b", add_special_tokens=False).ids
    assert BOS_ID not in ids
    assert tokenizer.decode(tok, ids) == f"a {BOS} b"


def test_encode_documents_prepends_bos(tok) -> None:
    docs = ["first doc", "second doc", "third"]
    batches = list(tokenizer.encode_documents(tok, docs, batch_docs=2))
    assert len(batches) == 2
    ids = np.concatenate([b for b, _ in batches])
    assert sum(n for _, n in batches) == sum(len(d.encode()) for d in docs)
    starts = np.flatnonzero(ids == BOS_ID)
    assert list(starts) == [0, *starts[1:]] and len(starts) == 3
    pieces = np.split(ids, starts[1:])
    assert [tokenizer.decode(tok, p[1:]) for p in pieces] == docs


def test_training_is_deterministic_across_processes(tok) -> None:
    # Rust hash maps are seeded per process; the trained merges must not depend on that.
    script = (
        "import sys; sys.path.insert(0, '.');"
        "from tests.trainer.test_tokenizer import CORPUS; from trainer import tokenizer;"
        "sys.stdout.write(tokenizer.train(CORPUS, 400).to_str())"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True,
                         timeout=SUBPROCESS_TIMEOUT_S, check=True).stdout
    assert out == tok.to_str()


def test_cache_hit_reuses_the_trained_file(tmp_path: Path) -> None:
    first, hit = tokenizer.load_or_train(CORPUS, cache_dir=tmp_path, manifest_hash="a" * 64, vocab_size=300)
    assert not hit
    # Nothing is read from the texts on a hit: an exploding iterator proves it.
    second, hit = tokenizer.load_or_train(_explode(), cache_dir=tmp_path, manifest_hash="a" * 64, vocab_size=300)
    assert hit and second.to_str() == first.to_str()
    assert BOS_ID not in second.encode(BOS, add_special_tokens=False).ids  # the loaded copy is configured too
    _, hit = tokenizer.load_or_train(CORPUS, cache_dir=tmp_path, manifest_hash="b" * 64, vocab_size=300)
    assert not hit
    assert len(list(tmp_path.iterdir())) == 2


def _explode():
    raise AssertionError("the cache should not read any text")
    yield ""  # pragma: no cover


def test_key_depends_on_every_input() -> None:
    base = tokenizer.tokenizer_key("a" * 64, 8192, 10)
    assert len({base, tokenizer.tokenizer_key("b" * 64, 8192, 10), tokenizer.tokenizer_key("a" * 64, 4096, 10),
                tokenizer.tokenizer_key("a" * 64, 8192, 11)}) == 4


def test_bad_vocab_sizes_and_empty_text() -> None:
    for size in (0, 259, 65537):
        with pytest.raises(BadVocabSize):
            tokenizer.train(CORPUS, size)
    with pytest.raises(tokenizer.NoText):
        tokenizer.train([], 300)


def test_max_chars_limits_what_training_sees() -> None:
    small = tokenizer.train(CORPUS, 8192, max_chars=100)
    full = tokenizer.train(CORPUS, 8192)
    assert small.get_vocab_size() < full.get_vocab_size()
