"""Byte-level BPE tokenizer: training, caching by hash, encoding documents, token byte lengths.

Byte-level means the base vocabulary is the 256 byte values (each drawn as one printable character
by the ByteLevel mapping), so every UTF-8 string encodes and decodes back to itself and no byte is
ever unknown. Text is first split GPT-4 style (letters, 1-2 digit numbers, punctuation runs,
whitespace) so merges never cross word boundaries. One special token, BOS, starts every document;
a literal "<|bos|>" inside a text is encoded as plain bytes, so data cannot forge a boundary.

Cached: a trained tokenizer is stored under a key that hashes the dataset manifest, the vocabulary
size and `TOKENIZER_CONFIG`; any change to how it is trained must change that config.

Knows nothing about where text comes from or how tokens are stored (trainer.data_format).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from trainer.data import DataError, NoText, sha256_json
from trainer.data_format import MAX_VOCAB_SIZE, TOKEN_BYTES_DTYPE

BOS = "<|bos|>"
BOS_ID = 0  # the trainer places special tokens first
# GPT-4-style pre-tokenization, numbers in groups of at most 2 (a small vocabulary should not spend
# ids on 3-digit numbers).
SPLIT_PATTERN = (
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"
    r"|\s*[\r\n]|\s+(?!\S)|\s+"
)
MIN_VOCAB_SIZE = 260           # 256 bytes + BOS + a few merges
DOC_CAP_CHARS = 10_000         # longer documents contribute only their head to training the merges
DEFAULT_MAX_CHARS = 1_000_000_000  # text seen while training; about 10 climbmix shards
MIN_FREQUENCY = 2              # a pair seen once is noise, not a merge
ENCODE_BATCH_DOCS = 512
TOKENIZER_CONFIG = {
    "version": 1, "model": "bpe", "bytes": "bytelevel", "split": SPLIT_PATTERN, "specials": [BOS],
    "doc_cap_chars": DOC_CAP_CHARS, "min_frequency": MIN_FREQUENCY,
}


class BadVocabSize(DataError):
    """The requested vocabulary size is outside what the tokenizer and uint16 storage allow."""


def check_vocab_size(vocab_size: int) -> None:
    if not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise BadVocabSize(f"vocab size {vocab_size} outside {MIN_VOCAB_SIZE}..{MAX_VOCAB_SIZE}")


def tokenizer_key(manifest_hash: str, vocab_size: int, max_chars: int) -> str:
    return sha256_json({"manifest": manifest_hash, "vocab_size": vocab_size, "max_chars": max_chars,
                        "config": TOKENIZER_CONFIG})


def new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train(texts: Iterable[str], vocab_size: int, *, max_chars: int = DEFAULT_MAX_CHARS) -> Tokenizer:
    check_vocab_size(vocab_size)
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=MIN_FREQUENCY,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=False,
    )
    seen = [0]
    tok.train_from_iterator(_capped(texts, max_chars, seen), trainer=trainer)
    if seen[0] == 0:
        raise NoText("no text to train the tokenizer on")
    if tok.token_to_id(BOS) != BOS_ID:
        raise DataError(f"{BOS} got id {tok.token_to_id(BOS)}, expected {BOS_ID}")
    return _configured(tok)


def _capped(texts: Iterable[str], max_chars: int, seen: list[int]) -> Iterator[str]:
    for text in texts:
        if seen[0] >= max_chars:
            return
        piece = text[:DOC_CAP_CHARS]
        seen[0] += len(piece)
        yield piece


def _configured(tok: Tokenizer) -> Tokenizer:
    # A literal "<|bos|>" in the data must stay text: only the harness places BOS.
    tok.encode_special_tokens = True
    return tok


def load(path: Path) -> Tokenizer:
    return _configured(Tokenizer.from_file(str(path)))


def load_or_train(
    texts: Iterable[str], *, cache_dir: Path, manifest_hash: str, vocab_size: int,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> tuple[Tokenizer, bool]:
    """Returns the cached tokenizer for this key, training it first if needed; bool = cache hit."""
    check_vocab_size(vocab_size)
    path = Path(cache_dir) / tokenizer_key(manifest_hash, vocab_size, max_chars)[:32] / "tokenizer.json"
    if path.is_file():
        return load(path), True
    tok = train(texts, vocab_size, max_chars=max_chars)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(tok.to_str())
    tmp.replace(path)
    return tok, False


def token_bytes(tok: Tokenizer, vocab_size: int) -> np.ndarray:
    """UTF-8 byte length of each id in 0..vocab_size-1: 0 for BOS and ids the tokenizer lacks."""
    out = np.zeros(vocab_size, dtype=TOKEN_BYTES_DTYPE)
    specials = {BOS_ID}
    for token, token_id in tok.get_vocab(with_added_tokens=False).items():
        if token_id >= vocab_size:
            raise DataError(f"tokenizer id {token_id} exceeds vocab size {vocab_size}")
        if token_id not in specials:
            # In a byte-level vocabulary every character of a token stands for exactly one byte.
            out[token_id] = len(token)
    return out


def encode_documents(tok: Tokenizer, docs: Iterable[str], batch_docs: int = ENCODE_BATCH_DOCS) -> Iterator[tuple[np.ndarray, int]]:
    """Yields (token ids with BOS before each document, UTF-8 bytes consumed) per batch of documents.

    encode_batch runs on all cores inside the Rust library; we only batch and concatenate.
    """
    batch: list[str] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= batch_docs:
            yield _encode(tok, batch)
            batch = []
    if batch:
        yield _encode(tok, batch)


def _encode(tok: Tokenizer, batch: list[str]) -> tuple[np.ndarray, int]:
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: faster where present
    pieces = []
    for enc in encode(batch, add_special_tokens=False):
        pieces.append(np.asarray([BOS_ID], dtype=np.uint32))
        pieces.append(np.asarray(enc.ids, dtype=np.uint32))
    return np.concatenate(pieces), sum(len(doc.encode("utf-8")) for doc in batch)


def decode(tok: Tokenizer, ids: Iterable[int]) -> str:
    return tok.decode(list(ids), skip_special_tokens=False)
