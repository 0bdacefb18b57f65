"""prepare: source text -> manifest -> tokenizer -> train.bin / val.bin, cached by hash.

    python -m trainer prepare [--source default|climbmix|FOLDER] [--home DIR] [--vocab-size N]
                              [--max-train-tokens N] [--max-val-tokens N]
                              [--climbmix-shards N] [--pin-file FILE] [--expect-manifest HASH]

The prepared folder is `HOME/data/prepared/<key>`, where the key hashes the dataset manifest, the
tokenizer key and the token limits, so a second call with the same inputs only re-hashes the source
and returns. Tokens are streamed to a scratch file (bounded memory for climbmix-sized data) and the
folder appears by one rename, so a crash never leaves a half-prepared dataset behind.

Validation tokens come from the dataset's val shards; a dataset without one (a single-file folder)
holds out the last ~10% of its tokens, cut at a document start where there is one.
The last stdout line of the CLI is one JSON object describing the result; errors are one line on
stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from trainer import climbmix, sources, tokenizer
from trainer.data import DataError, Dataset, NoText, ShardMismatch, read_documents, sha256_json
from trainer.data_format import TOKEN_DTYPE, DataFormatError, PreparedData, load_prepared, write_prepared

PREPARE_FORMAT = 1
HOLDOUT_FRACTION = 0.1   # of tokens, for datasets without a val shard
EXIT_BAD_INPUT = 2


class ManifestMismatch(ShardMismatch):
    """The dataset's manifest hash is not the one the swarm spec pins."""


@dataclass(frozen=True, slots=True)
class PrepareConfig:
    source: str
    home: Path
    vocab_size: int = 8192
    max_train_tokens: int | None = None
    max_val_tokens: int | None = None
    climbmix_train_shards: int = climbmix.DEFAULT_TRAIN_SHARDS
    climbmix_url: str = climbmix.BASE_URL
    pin_file: Path | None = None
    expected_manifest_hash: str | None = None
    tokenizer_max_chars: int = tokenizer.DEFAULT_MAX_CHARS
    progress: bool = True

    def __post_init__(self) -> None:
        tokenizer.check_vocab_size(self.vocab_size)
        for name in ("max_train_tokens", "max_val_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DataError(f"{name} must be positive")
        if self.tokenizer_max_chars < 1:
            raise DataError("tokenizer_max_chars must be positive")

    @property
    def data_dir(self) -> Path:
        return self.home / "data"


def default_home(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("AUTOSWARM_HOME") or Path.home() / ".autoswarm").expanduser()


def prepare(source: str = "default", *, home: Path, vocab_size: int = 8192, **options: object) -> PreparedData:
    """Builds (or finds in the cache) the prepared dataset for `source`; see PrepareConfig."""
    config = PrepareConfig(source=source, home=Path(home), vocab_size=vocab_size, **options)  # type: ignore[arg-type]
    return run(config)[0]


def run(config: PrepareConfig) -> tuple[PreparedData, dict[str, object]]:
    """prepare() with a report: (prepared data, facts for the CLI's JSON line)."""
    started = time.monotonic()
    dataset = sources.resolve(config.source, data_dir=config.data_dir,
                              climbmix_train_shards=config.climbmix_train_shards,
                              climbmix_url=config.climbmix_url, pin_file=config.pin_file)
    manifest_hash = dataset.manifest.hash
    if config.expected_manifest_hash not in (None, manifest_hash):
        raise ManifestMismatch(f"dataset manifest {manifest_hash} is not the pinned {config.expected_manifest_hash}")
    tok_key = tokenizer.tokenizer_key(manifest_hash, config.vocab_size, config.tokenizer_max_chars)
    key = sha256_json({"format": PREPARE_FORMAT, "tokenizer": tok_key, "max_train_tokens": config.max_train_tokens,
                       "max_val_tokens": config.max_val_tokens, "holdout": HOLDOUT_FRACTION})
    root = config.data_dir / "prepared" / key[:32]
    prepared = _load_cached(root, manifest_hash)
    hit = prepared is not None
    if prepared is None:
        _build(config, dataset, root, tok_key)
        prepared = load_prepared(root)
    report = json.loads((root / "prepare.json").read_text())
    report.update(path=str(root), cached=hit, seconds=round(time.monotonic() - started, 3))
    return prepared, report


def _load_cached(root: Path, manifest_hash: str) -> PreparedData | None:
    try:
        data = load_prepared(root)
    except DataFormatError:
        return None
    return data if data.manifest_hash == manifest_hash and (root / "prepare.json").is_file() else None


def _build(config: PrepareConfig, dataset: Dataset, root: Path, tok_key: str) -> None:
    tok, tok_hit = tokenizer.load_or_train(
        dataset.documents("train"), cache_dir=config.data_dir / "tokenizers",
        manifest_hash=dataset.manifest.hash, vocab_size=config.vocab_size, max_chars=config.tokenizer_max_chars)
    root.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".prepare-", dir=root.parent))
    try:
        has_val = bool(dataset.manifest.split("val"))
        # Without a val shard we need every token to cut the holdout, so the train limit waits.
        n_train = _stream(config, dataset, "train", scratch / "train.tmp", tok,
                          None if not has_val else config.max_train_tokens)
        if n_train == 0:
            raise NoText(f"{dataset.source}: no training text")
        train: np.ndarray = np.memmap(scratch / "train.tmp", dtype=TOKEN_DTYPE, mode="r", shape=(n_train,))
        val: np.ndarray
        if has_val:
            n_val = _stream(config, dataset, "val", scratch / "val.tmp", tok, config.max_val_tokens)
            if n_val == 0:
                raise NoText(f"{dataset.source}: the validation shards hold no text")
            val = np.memmap(scratch / "val.tmp", dtype=TOKEN_DTYPE, mode="r", shape=(n_val,))
        else:
            cut = holdout_start(train)
            train, val = train[:cut][: config.max_train_tokens], train[cut:][: config.max_val_tokens]
        if len(val) == 0 or len(train) == 0:
            raise NoText(f"{dataset.source}: too little text for both training and validation tokens")
        out = scratch / "out"
        write_prepared(out, train=train, val=val, token_bytes=tokenizer.token_bytes(tok, config.vocab_size),
                       bos_id=tokenizer.BOS_ID, manifest_hash=dataset.manifest.hash, source=dataset.source,
                       tokenizer_json=tok.to_str())
        del train, val  # release the maps before the scratch files go
        (out / "manifest.json").write_bytes(dataset.manifest.encode())
        report = {"manifest_hash": dataset.manifest.hash, "source": dataset.source, "trust": dataset.trust,
                  "vocab_size": config.vocab_size, "tokenizer_key": tok_key, "tokenizer_cached": tok_hit,
                  "train_tokens": (out / "train.bin").stat().st_size // TOKEN_DTYPE.itemsize,
                  "val_tokens": (out / "val.bin").stat().st_size // TOKEN_DTYPE.itemsize}
        (out / "prepare.json").write_text(json.dumps(report, sort_keys=True, indent=1) + "\n")
        if root.exists() and _load_cached(root, dataset.manifest.hash) is None:
            shutil.rmtree(root)  # a damaged folder from an older run: replace it
        try:
            os.replace(out, root)
        except OSError:
            if _load_cached(root, dataset.manifest.hash) is None:  # not a concurrent twin: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _stream(config: PrepareConfig, dataset: Dataset, split: str, path: Path, tok: Tokenizer, limit: int | None) -> int:
    """Encodes one split into `path` as uint16; returns the token count (at most `limit`)."""
    shards = dataset.manifest.split(split)
    written = 0
    with open(path, "wb") as f, tqdm(total=len(shards), desc=f"tokenize {split}", unit="shard",
                                     disable=not config.progress, file=sys.stderr) as bar:
        for shard in shards:
            for ids, _ in tokenizer.encode_documents(tok, read_documents(dataset.path(shard))):
                if limit is not None:
                    ids = ids[: limit - written]
                ids.astype(TOKEN_DTYPE).tofile(f)
                written += len(ids)
                bar.set_postfix(tokens=f"{written:,}", refresh=False)
                if limit is not None and written >= limit:
                    bar.update(bar.total - bar.n)
                    return written
            bar.update(1)
    return written


def holdout_start(tokens: np.ndarray) -> int:
    """Where the held-out tail starts: the last document start at or before ~90%, else exactly there."""
    cut = int(len(tokens) * (1 - HOLDOUT_FRACTION))
    starts = np.flatnonzero(np.asarray(tokens[:cut + 1]) == tokenizer.BOS_ID)
    return int(starts[-1]) if len(starts) and starts[-1] > 0 else cut


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise DataError(message)  # one line, not argparse's usage block


def parse_config(argv: list[str], env: Mapping[str, str] = os.environ) -> PrepareConfig:
    p = _Parser(prog="python -m trainer prepare", description="Build the dataset and tokenizer.")
    p.add_argument("--source", default="default", help="'default' (offline), 'climbmix' or a folder")
    p.add_argument("--home", type=Path, default=None, help="state folder (default $AUTOSWARM_HOME or ~/.autoswarm)")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--max-train-tokens", type=int, default=None)
    p.add_argument("--max-val-tokens", type=int, default=None)
    p.add_argument("--climbmix-shards", type=int, default=climbmix.DEFAULT_TRAIN_SHARDS)
    p.add_argument("--climbmix-url", default=climbmix.BASE_URL, help=argparse.SUPPRESS)
    p.add_argument("--pin-file", type=Path, default=None, help="JSON {shard name: sha256} for climbmix")
    p.add_argument("--expect-manifest", default=None, help="refuse unless the manifest hash is this")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    return PrepareConfig(
        source=a.source, home=a.home.expanduser() if a.home else default_home(env), vocab_size=a.vocab_size,
        max_train_tokens=a.max_train_tokens, max_val_tokens=a.max_val_tokens,
        climbmix_train_shards=a.climbmix_shards, climbmix_url=a.climbmix_url, pin_file=a.pin_file,
        expected_manifest_hash=a.expect_manifest, progress=not a.no_progress)


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv)
        _, report = run(config)
    except (DataError, DataFormatError) as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prepare: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

