"""Datasets as manifests of shard hashes, and reading documents out of shard files.

A dataset is a folder of shard files plus a `Manifest`: the sorted list of shards, each with its
name (a relative path), SHA-256, size in bytes and split ("train" or "val"). The manifest hash is
the SHA-256 of its canonical JSON, so two nodes that hold the same bytes agree on the hash no matter
where the files came from, and a swarm spec can pin a whole dataset with one hex string. Nodes can
later fetch a missing shard from a peer by its hash.

A shard holds documents:
    *.parquet  one document per row of the string column `text` (the climbmix layout)
    *.jsonl    one JSON object per line with a string field "text" (what the offline default writes)
    *.txt/.md  the whole file is one document

Knows nothing of tokenizers or of how shards are obtained (see trainer.download, trainer.sources).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from trainer.errors import TrainerError

SPLITS = ("train", "val")
SHARD_SUFFIXES = (".parquet", ".jsonl", ".txt", ".md")
MANIFEST_FORMAT = 1
HASH_CHUNK_BYTES = 1 << 20
PARQUET_BATCH_ROWS = 1024
TEXT_COLUMN = "text"


class DataError(TrainerError):
    """Base of every error raised while finding, fetching or reading dataset text."""


class BadManifest(DataError):
    """A manifest or shard description is malformed."""


class ShardMismatch(DataError):
    """A shard's bytes do not hash to what the manifest or a pin says."""


class NoText(DataError):
    """A source holds no usable text (empty folder, no `text` column, only empty documents)."""


class BadSource(DataError):
    """A source name or folder does not exist or cannot be read."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(obj: object) -> str:
    """SHA-256 of the canonical JSON of `obj`: sorted keys, no spaces, ASCII only."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def is_sha256_hex(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


@dataclass(frozen=True, slots=True)
class Shard:
    name: str        # relative POSIX path inside the dataset folder
    sha256: str      # lowercase hex
    size_bytes: int
    split: str       # "train" or "val"

    def __post_init__(self) -> None:
        path = PurePosixPath(self.name)
        # Names become paths on the receiving node: refuse anything that could leave the folder.
        if not self.name or path.is_absolute() or ".." in path.parts or "\\" in self.name:
            raise BadManifest(f"shard name {self.name!r} is not a plain relative path")
        if path.suffix not in SHARD_SUFFIXES:
            raise BadManifest(f"shard {self.name!r}: suffix must be one of {SHARD_SUFFIXES}")
        if not is_sha256_hex(self.sha256):
            raise BadManifest(f"shard {self.name!r}: sha256 must be 64 lowercase hex digits")
        if self.size_bytes < 0:
            raise BadManifest(f"shard {self.name!r}: negative size")
        if self.split not in SPLITS:
            raise BadManifest(f"shard {self.name!r}: split must be one of {SPLITS}")

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "sha256": self.sha256, "size_bytes": self.size_bytes, "split": self.split}


@dataclass(frozen=True, slots=True)
class Manifest:
    shards: tuple[Shard, ...]  # sorted by name, names unique

    def __post_init__(self) -> None:
        names = [s.name for s in self.shards]
        if names != sorted(set(names)):
            raise BadManifest("shards must be sorted by name with no duplicates")
        if not any(s.split == "train" for s in self.shards):
            raise BadManifest("a manifest needs at least one train shard")

    @classmethod
    def of(cls, shards: list[Shard] | tuple[Shard, ...]) -> Manifest:
        return cls(tuple(sorted(shards, key=lambda s: s.name)))

    def to_json(self) -> dict[str, object]:
        return {"format": MANIFEST_FORMAT, "shards": [s.to_json() for s in self.shards]}

    def encode(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.encode()).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(s.size_bytes for s in self.shards)

    def split(self, split: str) -> tuple[Shard, ...]:
        return tuple(s for s in self.shards if s.split == split)

    @classmethod
    def decode(cls, raw: bytes) -> Manifest:
        try:
            obj = json.loads(raw)
            if obj["format"] != MANIFEST_FORMAT:
                raise BadManifest(f"unknown manifest format {obj['format']!r}")
            shards = [Shard(str(s["name"]), str(s["sha256"]), int(s["size_bytes"]), str(s["split"]))
                      for s in obj["shards"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise BadManifest(f"malformed manifest: {exc}") from exc
        manifest = cls(tuple(shards))
        # Only the canonical bytes are a manifest: the hash of anything else would be ambiguous.
        if manifest.encode() != raw:
            raise BadManifest("manifest bytes are not in canonical form")
        return manifest


@dataclass(frozen=True, slots=True)
class Dataset:
    """A manifest plus the folder on this machine where its shard files live."""
    manifest: Manifest
    root: Path
    source: str       # human label: "default", "climbmix", "folder:<name>"
    trust: str        # "pinned": every hash was known in advance; "tofu": trusted on first use

    def __post_init__(self) -> None:
        if self.trust not in ("pinned", "tofu"):
            raise BadManifest(f"trust must be 'pinned' or 'tofu', not {self.trust!r}")

    def path(self, shard: Shard) -> Path:
        return self.root / shard.name

    def verify(self) -> None:
        """Re-hashes every shard file; raises ShardMismatch on the first difference."""
        for shard in self.manifest.shards:
            path = self.path(shard)
            if not path.is_file() or path.stat().st_size != shard.size_bytes:
                raise ShardMismatch(f"{path}: missing or not {shard.size_bytes} bytes")
            if sha256_file(path) != shard.sha256:
                raise ShardMismatch(f"{path}: sha256 differs from the manifest")

    def documents(self, split: str) -> Iterator[str]:
        for shard in self.manifest.split(split):
            yield from read_documents(self.path(shard))


def describe_shard(root: Path, name: str, split: str) -> Shard:
    path = root / name
    return Shard(name=name, sha256=sha256_file(path), size_bytes=path.stat().st_size, split=split)


def check_pins(manifest: Manifest, pins: Mapping[str, str]) -> str:
    """Checks shard hashes against `pins` (name -> sha256); returns "pinned" or "tofu".

    A pinned name with another hash is an error; a shard with no pin is trusted on first use,
    and the caller must say so to the user.
    """
    unpinned = 0
    for shard in manifest.shards:
        want = pins.get(shard.name)
        if want is None:
            unpinned += 1
        elif want != shard.sha256:
            raise ShardMismatch(f"{shard.name}: sha256 {shard.sha256[:12]}… but pinned {want[:12]}…")
    return "tofu" if unpinned else "pinned"


def read_documents(path: Path) -> Iterator[str]:
    """Yields the non-empty documents of one shard file, in file order."""
    suffix = path.suffix
    try:
        if suffix == ".parquet":
            yield from _read_parquet(path)
        elif suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                for line_no, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    text = json.loads(line).get(TEXT_COLUMN)
                    if not isinstance(text, str):
                        raise NoText(f"{path}:{line_no}: no string field {TEXT_COLUMN!r}")
                    if text:
                        yield text
        elif suffix in (".txt", ".md"):
            text = path.read_text(encoding="utf-8")
            if text.strip():
                yield text
        else:
            raise BadSource(f"{path}: not a shard file (want one of {SHARD_SUFFIXES})")
    except UnicodeDecodeError as exc:
        raise NoText(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except (OSError, ValueError) as exc:
        raise BadSource(f"{path}: unreadable ({exc})") from exc


def _read_parquet(path: Path) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        if TEXT_COLUMN not in pf.schema_arrow.names:
            raise NoText(f"{path}: no {TEXT_COLUMN!r} column (columns: {pf.schema_arrow.names})")
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[TEXT_COLUMN]):
            for text in batch.column(0).to_pylist():
                if isinstance(text, str) and text:
                    yield text
    except pa.ArrowException as exc:
        raise BadSource(f"{path}: not a readable parquet file ({exc})") from exc
