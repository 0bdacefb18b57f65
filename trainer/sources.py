"""Turns a source name into a Dataset: "default" (offline corpus), "climbmix", or a local folder.

A local folder is read in place and described by hashing its files; nothing is copied. Its shards
are every *.parquet, *.jsonl, *.txt and *.md file below it (hidden files and folders skipped), in
sorted order. Validation shards are those whose path has a part starting with "val" (`val/…`,
`validation.parquet`, `val.txt`); if there is none and there are at least two shards, the last one
is the validation shard (climbmix's rule); with a single shard, prepare() holds out the tail of its
tokens instead.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from trainer import climbmix, offline_corpus
from trainer.data import SHARD_SUFFIXES, BadSource, Dataset, Manifest, NoText, describe_shard

SOURCES = ("default", "climbmix")


def resolve(
    source: str,
    *,
    data_dir: Path,
    climbmix_train_shards: int = climbmix.DEFAULT_TRAIN_SHARDS,
    climbmix_url: str = climbmix.BASE_URL,
    pin_file: Path | None = None,
) -> Dataset:
    """Builds, fetches or scans `source`; `data_dir` is the cache folder ($HOME/data)."""
    if source == "default":
        return offline_corpus.build(data_dir / "sources")
    if source == "climbmix":
        return climbmix.fetch(data_dir / "climbmix", num_train_shards=climbmix_train_shards,
                              base_url=climbmix_url, pin_file=pin_file)
    return scan_folder(Path(source).expanduser())


def scan_folder(root: Path) -> Dataset:
    if not root.is_dir():
        raise BadSource(f"{root}: no such folder (sources are 'default', 'climbmix' or a folder)")
    names = sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.suffix in SHARD_SUFFIXES and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    if not names:
        raise NoText(f"{root}: no {', '.join(SHARD_SUFFIXES)} files found")
    val = {name for name in names if _looks_like_val(name)}
    if not val and len(names) >= 2:
        val = {names[-1]}
    if len(val) == len(names):
        raise NoText(f"{root}: every file is a validation file; nothing to train on")
    shards = [describe_shard(root, name, "val" if name in val else "train") for name in names]
    return Dataset(Manifest.of(shards), root, f"folder:{root.name}", "tofu")


def _looks_like_val(name: str) -> bool:
    path = PurePosixPath(name)
    parts = [*path.parent.parts, path.stem]
    return any(part.lower().startswith("val") for part in parts)
