"""The harness hash: one sha256 over the fixed trainer sources, for the swarm spec.

"Fixed" is everything in the trainer package except the mutable train.py (and caches), read in a
stable order (sorted relative POSIX paths), each path and content length-prefixed so that no two
different trees hash alike. Knows nothing of how the hash is used.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

HARNESS_DIR = Path(__file__).resolve().parent
MUTABLE_FILES = frozenset({"train.py"})
_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def harness_files(root: Path = HARNESS_DIR) -> list[Path]:
    """The files the hash covers, in hashing order."""
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part in _SKIPPED_DIRS for part in rel.parts) or path.name.endswith(_SKIPPED_SUFFIXES):
            continue
        if rel.as_posix() in MUTABLE_FILES or not path.is_file():
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def harness_hash(root: Path = HARNESS_DIR) -> str:
    digest = hashlib.sha256(b"autoswarm-harness-v1\0")
    for path in harness_files(root):
        name = path.relative_to(root).as_posix().encode()
        content = path.read_bytes()
        digest.update(len(name).to_bytes(8, "little") + name)
        digest.update(len(content).to_bytes(8, "little") + content)
    return digest.hexdigest()
