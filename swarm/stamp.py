"""The identity stamp: a proof of work over a public key, so a new identity costs CPU.

    digest = sha256(DOMAIN || swarm id (32) || public key (32) || nonce (8))
    a stamp is good at difficulty `bits` when `digest` starts with `bits` zero bits

Checking costs one sha256; minting costs 2^bits of them on average (at 20 bits: about a second
of one core in Python, far less in native code). The swarm id is inside, so a stamp is minted per
swarm and cannot be reused in another one. A stamp is not a signature: anyone may forward it,
which is the point (peers pass an author's stamp along with its entries).

Why a stamp and not only quotas (swarm/quota.py): quotas bound what one identity may store here,
but keys are free, and 10,000 keys times a small quota is a full disk. A stamped identity gets
the larger quota; an unstamped one shares a small slice with every other unstamped one. The
stamp does not bound the disk (the strangers' quota does); it prices the identities that compete
for it. Knows nothing about peers or the ledger.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

DOMAIN = b"autoswarm/stamp/v1\x00"
STAMP_BITS = 20            # the default difficulty: ~1M sha256 on average, seconds for an honest node
MAX_STAMP_BITS = 40
NONCE_BYTES = 8
KEY_BYTES = 32


class BadStamp(ValueError):
    """A stamp file that cannot be read, or a difficulty out of range."""


def _check_bits(bits: int) -> None:
    if type(bits) is not int or not 0 <= bits <= MAX_STAMP_BITS:
        raise BadStamp(f"stamp difficulty must be 0 to {MAX_STAMP_BITS} bits, got {bits!r}")


def stamp_ok(swarm: bytes, key: bytes, nonce: bytes, bits: int) -> bool:
    """Whether `nonce` is a stamp of `key` in `swarm` at `bits` (wrong lengths: False)."""
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES or len(swarm) != 32:
        return False
    digest = hashlib.sha256(DOMAIN + swarm + key + nonce).digest()
    return int.from_bytes(digest, "big") >> (256 - bits) == 0 if bits else True


def mint_stamp(swarm: bytes, key: bytes, bits: int, *, start: int = 0, max_tries: int | None = None) -> bytes | None:
    """The first good nonce from `start` on; None if `max_tries` ran out first. CPU-bound: callers
    on an event loop run it in a thread."""
    _check_bits(bits)
    prefix = hashlib.sha256(DOMAIN + swarm + key)
    limit = 1 << (256 - bits)
    end = (1 << 64) if max_tries is None else min(1 << 64, start + max_tries)
    for counter in range(start, end):
        nonce = counter.to_bytes(NONCE_BYTES, "big")
        h = prefix.copy()
        h.update(nonce)
        if int.from_bytes(h.digest(), "big") < limit:
            return nonce
    return None


def load_stamp(path: Path, swarm: bytes, key: bytes, bits: int) -> bytes | None:
    """The stamp kept at `path` if it is still good for this key, swarm and difficulty; else None."""
    try:
        nonce = bytes.fromhex(json.loads(path.read_text())["nonce"])
    except (OSError, ValueError, KeyError, TypeError):
        return None   # absent, unreadable or another shape: minted again and overwritten
    return nonce if stamp_ok(swarm, key, nonce, bits) else None


def save_stamp(path: Path, swarm: bytes, key: bytes, bits: int, nonce: bytes) -> None:
    """Writes our stamp (0600, whole, then renamed)."""
    text = json.dumps({"key": key.hex(), "swarm": swarm.hex(), "bits": bits, "nonce": nonce.hex()})
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_or_mint(path: Path, swarm: bytes, key: bytes, bits: int) -> bytes:
    """The stamp kept at `path`, or a new one, minted and saved (blocking: one call, all the work)."""
    _check_bits(bits)
    nonce = load_stamp(path, swarm, key, bits)
    if nonce is None:
        nonce = mint_stamp(swarm, key, bits)
        if nonce is None:  # 2^64 tries: never happens below MAX_STAMP_BITS
            raise BadStamp("no stamp found")
        save_stamp(path, swarm, key, bits, nonce)
    return nonce


MAX_SAVED_STAMPS = 65_536


def save_stamps(path: Path, stamps: dict[bytes, bytes]) -> None:
    """Others' stamps we checked, kept across restarts so we can pass them on with their feeds
    (written whole, then renamed). At most MAX_SAVED_STAMPS, the last ones of the dict's order."""
    rows = list(stamps.items())[-MAX_SAVED_STAMPS:]
    text = json.dumps({"stamps": {key.hex(): nonce.hex() for key, nonce in rows}})
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_stamps(path: Path) -> dict[bytes, bytes]:
    """Saved stamps, unchecked (the caller checks each one); {} if the file is absent or not ours."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["stamps"]
        out = {bytes.fromhex(k): bytes.fromhex(v) for k, v in list(rows.items())[:MAX_SAVED_STAMPS]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    return {k: v for k, v in out.items() if len(k) == KEY_BYTES and len(v) == NONCE_BYTES}
