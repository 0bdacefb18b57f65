"""A compile cache that candidates cannot poison: a harness-built base, a private copy per run.

torch.compile's caches (TorchInductor's and Triton's, ~60 s of a cold start on a GPU) live under
the work folder (sandbox_env points TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR at WORK/.cache).
A candidate may write anything there, so nothing it wrote is ever reused by another run:
  - the BASE cache is only ever filled from a run of the genesis train.py, the harness's own
    program (byte-identical to trainer/train.py), and only once (publish refuses to overwrite);
  - every run starts from a private copy of the base (seed), never a link into it, so what a
    candidate writes, even over a copied file, dies with its work folder.
Candidates whose graphs match the genesis program's (most edits touch a few lines) start warm.

The base lives in a folder the caller owns, keyed by the harness hash, the profile and the
torch version (base_dir), because a cache is only valid for the code and compiler that built it.

Knows nothing of training: folders in, folders out.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

from trainer.harness import HARNESS_DIR, harness_hash

CACHE_DIR_NAME = ".cache"  # under the work folder; sandbox_env puts the compilers' caches here
GENESIS = HARNESS_DIR / "train.py"


def base_dir(root: Path, profile_name: str) -> Path:
    """Where the base cache for this harness, profile and torch lives under `root`."""
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "none"
    return Path(root) / f"{harness_hash()[:16]}-{profile_name}-torch{torch_version}"


def is_genesis(candidate_sha256: str) -> bool:
    return hashlib.sha256(GENESIS.read_bytes()).hexdigest() == candidate_sha256


def seed(work: Path, base: Path | None) -> bool:
    """Copies the base cache (if there is one) into `work`'s private cache folder; True if copied."""
    target = work / CACHE_DIR_NAME
    if base is None or not base.is_dir():
        return False
    shutil.copytree(base, target, symlinks=False, dirs_exist_ok=True)
    for dirpath, _, filenames in os.walk(target):  # the copy is the run's own: writable
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return True


def publish(work: Path, base: Path) -> bool:
    """Makes `work`'s cache the base, read-only, if there is none yet; True if it did.

    The caller guarantees that `work` ran the genesis program (is_genesis). The copy is made
    under a temporary name and renamed into place, so a reader never sees half a cache.
    """
    source = work / CACHE_DIR_NAME
    if base.exists() or not source.is_dir():
        return False
    base.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{base.name}-", dir=base.parent))
    try:
        shutil.copytree(source, staging, symlinks=False, dirs_exist_ok=True,
                        ignore_dangling_symlinks=True)
        for dirpath, _, filenames in os.walk(staging, topdown=False):
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o444)
            os.chmod(dirpath, 0o555)
        os.rename(staging, base)
        return True
    except OSError:
        _remove(staging)
        return base.exists()


def _remove(path: Path) -> None:
    for dirpath, _, _ in os.walk(path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path, ignore_errors=True)
