"""The payer's spot-check secrets: one per job, committed in the job as its sha256 (`check_hash`)
and revealed only after the executor's receipt (ledger/market.py), so the executor can neither see
nor steer whether its job is picked for a replay.

Kept as files HOME/job-secrets/<check_hash hex>, mode 0600 from their first byte, written before
the job is published: a restart between the two still finds the secret. Knows nothing of the
market's loop or the ledger beyond the hash.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

SECRET_BYTES = 32
SECRETS_DIR = "job-secrets"


def new_secret(home: Path) -> bytes:
    """A fresh secret, stored under its hash; returns the hash for the job's `check_hash`."""
    secret = secrets.token_bytes(SECRET_BYTES)
    check_hash = hashlib.sha256(secret).digest()
    folder = home / SECRETS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(folder / check_hash.hex(), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return check_hash


def load_secret(home: Path, check_hash: bytes) -> bytes | None:
    """The secret behind `check_hash`, or None where this home never made it (or lost it)."""
    try:
        secret = (home / SECRETS_DIR / check_hash.hex()).read_bytes()[:SECRET_BYTES]
    except OSError:
        return None
    return secret if hashlib.sha256(secret).digest() == check_hash else None
