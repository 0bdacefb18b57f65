"""On-disk layout of a prepared dataset: the one format the harness, train.py and the runner share.

A prepared dataset is a folder:
    train.bin        flat little-endian uint16 token ids; documents start with BOS
    val.bin          the same format; never visible to candidate code
    token_bytes.bin  little-endian int32 [vocab_size]: UTF-8 byte length of each token (0 for BOS)
    tokenizer.json   the `tokenizers` BPE model that produced the ids
    meta.json        {"vocab_size", "bos_id", "manifest_hash", "source"}

Knows nothing of where the text came from (see trainer.data) or how it is trained on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.errors import TrainerError

TOKEN_DTYPE = np.dtype("<u2")
TOKEN_BYTES_DTYPE = np.dtype("<i4")
MAX_VOCAB_SIZE = 1 << 16  # uint16 token ids
SYNTHETIC_LANE_TOKENS = 1 << 16  # a synthetic set up to this long is one chain
SYNTHETIC_MIN_LANE_TOKENS = 1 << 12  # longer sets: parallel chains of at least this many tokens
SYNTHETIC_CONTEXT_IDS = 256  # distinct older-token contexts of the synthetic chain


class DataFormatError(TrainerError):
    """A prepared-data folder is missing a file or holds inconsistent contents."""


@dataclass(frozen=True, slots=True)
class PreparedData:
    root: Path
    vocab_size: int
    bos_id: int
    manifest_hash: str  # hex sha256 of the dataset manifest the tokens came from
    source: str

    def __post_init__(self) -> None:
        if not 2 <= self.vocab_size <= MAX_VOCAB_SIZE:
            raise DataFormatError(f"vocab_size {self.vocab_size} outside 2..{MAX_VOCAB_SIZE}")
        if not 0 <= self.bos_id < self.vocab_size:
            raise DataFormatError(f"bos_id {self.bos_id} outside the vocabulary")

    @property
    def train_tokens(self) -> Path:
        return self.root / "train.bin"

    @property
    def val_tokens(self) -> Path:
        return self.root / "val.bin"

    @property
    def token_bytes(self) -> Path:
        return self.root / "token_bytes.bin"

    @property
    def tokenizer_json(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def meta_json(self) -> Path:
        return self.root / "meta.json"


def load_prepared(root: Path) -> PreparedData:
    root = Path(root)
    try:
        meta = json.loads((root / "meta.json").read_text())
        data = PreparedData(
            root=root,
            vocab_size=int(meta["vocab_size"]),
            bos_id=int(meta["bos_id"]),
            manifest_hash=str(meta["manifest_hash"]),
            source=str(meta.get("source", "")),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(f"{root}: not a prepared dataset ({exc})") from exc
    for path in (data.train_tokens, data.val_tokens, data.token_bytes):
        if not path.is_file():
            raise DataFormatError(f"{root}: missing {path.name}")
    if data.token_bytes.stat().st_size != 4 * data.vocab_size:
        raise DataFormatError(f"{root}: token_bytes.bin does not match vocab_size {data.vocab_size}")
    return data


def write_prepared(
    root: Path,
    *,
    train: np.ndarray,
    val: np.ndarray,
    token_bytes: np.ndarray,
    bos_id: int,
    manifest_hash: str,
    source: str,
    tokenizer_json: str | None = None,
) -> PreparedData:
    """Writes a prepared dataset atomically enough for a cache: meta.json is written last."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    vocab_size = int(token_bytes.shape[0])
    for name, arr in (("train", train), ("val", val)):
        if arr.size and int(arr.max()) >= vocab_size:
            raise DataFormatError(f"{name} tokens exceed vocab_size {vocab_size}")
    np.asarray(train, dtype=TOKEN_DTYPE).tofile(root / "train.bin")
    np.asarray(val, dtype=TOKEN_DTYPE).tofile(root / "val.bin")
    np.asarray(token_bytes, dtype=TOKEN_BYTES_DTYPE).tofile(root / "token_bytes.bin")
    if tokenizer_json is not None:
        (root / "tokenizer.json").write_text(tokenizer_json)
    meta = {"vocab_size": vocab_size, "bos_id": bos_id, "manifest_hash": manifest_hash, "source": source}
    (root / "meta.json").write_text(json.dumps(meta, sort_keys=True))
    return load_prepared(root)


def read_tokens(path: Path) -> np.ndarray:
    """Memory-maps a token file (read-only)."""
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r")


def read_token_bytes(data: PreparedData) -> np.ndarray:
    return np.fromfile(data.token_bytes, dtype=TOKEN_BYTES_DTYPE)


def synthetic(root: Path, *, n_train: int, n_val: int, vocab_size: int = 256, seed: int = 0) -> PreparedData:
    """A learnable dataset for tests and benchmarks: a noisy order-2 Markov chain over `vocab_size`
    ids. Up to SYNTHETIC_LANE_TOKENS it is one chain; longer sets are parallel chains (vectorized: a
    GPU-sized set, tens of millions of tokens, takes seconds)."""
    rng = np.random.default_rng(seed)
    context = min(vocab_size, SYNTHETIC_CONTEXT_IDS)  # the older token is folded to bound the table
    table = rng.integers(1, vocab_size, size=(context, vocab_size))

    def chain(n: int) -> np.ndarray:
        noise = rng.random(n) < 0.1
        rand = rng.integers(1, vocab_size, size=n)
        lanes = 1 if n <= SYNTHETIC_LANE_TOKENS else max(-(-n // SYNTHETIC_LANE_TOKENS), n // SYNTHETIC_MIN_LANE_TOKENS)
        length = -(-n // lanes)
        pad = lanes * length - n
        noise_l = np.concatenate([noise, np.zeros(pad, dtype=bool)]).reshape(lanes, length)
        rand_l = np.concatenate([rand, np.ones(pad, dtype=rand.dtype)]).reshape(lanes, length)
        out = np.empty((lanes, length), dtype=np.int64)
        a, b = np.full(lanes, 1), np.full(lanes, 2)
        for i in range(length):
            c = np.where(noise_l[:, i], rand_l[:, i], table[a % context, b])
            out[:, i] = c
            a, b = b, c
        flat = out.reshape(-1)[:n]
        flat[:: 512] = 0  # BOS every 512 tokens
        return flat

    token_bytes = np.full(vocab_size, 1, dtype=np.int32)
    token_bytes[0] = 0
    return write_prepared(
        root, train=chain(n_train), val=chain(n_val), token_bytes=token_bytes, bos_id=0,
        manifest_hash="0" * 64, source=f"synthetic:{seed}",
    )
