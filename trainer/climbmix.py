"""The real autoresearch data: karpathy/climbmix-400b-shuffle parquet shards from Hugging Face.

Facts we mirror from autoresearch: shards are `shard_{index:05d}.parquet` under BASE_URL, the text
is in the `text` column, shard 06542 (the last one) is the pinned validation shard, and a run uses
the first N shards (10 by default) for training.

Pinning, honestly: these machines cannot reach Hugging Face, so no SHA-256 of a real shard is known
to us and `PINNED_SHA256` ships empty. The trust model is therefore layered:
  1. a pin — from `PINNED_SHA256` or a JSON pin file `{"shard_00000.parquet": "<sha256>", ...}` —
     is binding: a download with another hash is deleted and raises HashMismatch;
  2. a shard without a pin is trusted on first use: its hash is recorded in `tofu.json` next to
     the shards, later runs hold it to that hash, and the dataset reports trust "tofu";
  3. a swarm spec pins the manifest hash, which covers every shard hash at once; prepare() compares
     it when given `expected_manifest_hash`, so a node in a pinned swarm never trains on other bytes.
A maintainer who downloads the shards once can publish `tofu.json` as the pin file.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trainer.data import BadManifest, Dataset, Manifest, Shard, check_pins, is_sha256_hex
from trainer.download import DEFAULT_MAX_BYTES, download

BASE_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
MAX_SHARD = 6542
VAL_SHARD = MAX_SHARD          # pinned validation shard, as in autoresearch
DEFAULT_TRAIN_SHARDS = 10
DOWNLOAD_WORKERS = 4           # parallel files; more mostly adds contention on one link
PINNED_SHA256: Mapping[str, str] = {}  # none known yet: see the module docstring
TOFU_FILE = "tofu.json"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def load_pins(path: Path | None) -> dict[str, str]:
    """Built-in pins plus those in a JSON pin file, which may add but not contradict."""
    pins = dict(PINNED_SHA256)
    if path is None:
        return pins
    try:
        extra = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BadManifest(f"pin file {path}: unreadable ({exc})") from exc
    if not isinstance(extra, dict):
        raise BadManifest(f"pin file {path}: want an object of name -> sha256")
    for name, digest in extra.items():
        if not isinstance(digest, str) or not is_sha256_hex(digest):
            raise BadManifest(f"pin file {path}: {name!r} has no valid sha256")
        if pins.get(name, digest) != digest:
            raise BadManifest(f"pin file {path}: {name} contradicts a built-in pin")
        pins[name] = digest
    return pins


def fetch(
    cache_dir: Path,
    *,
    num_train_shards: int = DEFAULT_TRAIN_SHARDS,
    base_url: str = BASE_URL,
    val_shard: int = VAL_SHARD,
    pin_file: Path | None = None,
    max_shard_bytes: int = DEFAULT_MAX_BYTES,
    workers: int = DOWNLOAD_WORKERS,
    backoff_s: float = 1.0,
) -> Dataset:
    """Downloads (or finds in `cache_dir`) the first `num_train_shards` shards and the val shard."""
    if not 1 <= num_train_shards <= MAX_SHARD:
        raise BadManifest(f"num_train_shards must be in 1..{MAX_SHARD}")
    if val_shard < num_train_shards:
        raise BadManifest("the validation shard must not be one of the training shards")
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    pins = load_pins(pin_file)
    tofu = _read_tofu(root)
    wanted = [(shard_name(i), "train") for i in range(num_train_shards)] + [(shard_name(val_shard), "val")]

    def one(item: tuple[str, str]) -> Shard:
        name, split = item
        expected = pins.get(name) or tofu.get(name)
        got = download(f"{base_url}/{name}", root / name, sha256=expected,
                       max_bytes=max_shard_bytes, backoff_s=backoff_s)
        return Shard(name, got.sha256, got.size_bytes, split)

    # Threads, not processes: the work is network and hashing, both of which release the GIL.
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="climbmix-download") as pool:
        shards = list(pool.map(one, wanted))
    manifest = Manifest.of(shards)
    trust = check_pins(manifest, pins)
    new = {s.name: s.sha256 for s in shards if s.name not in pins and s.name not in tofu}
    if new:
        _write_tofu(root, {**tofu, **new})
    if trust == "tofu":
        print(f"climbmix: {sum(s.name not in pins for s in shards)} shard(s) have no pinned sha256; "
              f"trusting on first use (hashes recorded in {root / TOFU_FILE})", file=sys.stderr)
    return Dataset(manifest, root, "climbmix", trust)


def _read_tofu(root: Path) -> dict[str, str]:
    path = root / TOFU_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadManifest(f"{path}: unreadable ({exc})") from exc
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str) and is_sha256_hex(v)}


def _write_tofu(root: Path, hashes: dict[str, str]) -> None:
    tmp = root / (TOFU_FILE + ".tmp")
    tmp.write_text(json.dumps(hashes, sort_keys=True, indent=1) + "\n")
    tmp.replace(root / TOFU_FILE)
