"""Ed25519 identities: the node's private key on disk, and node ids (public keys) as text.

A node id is the 32-byte public key. Its text form is `as` followed by the key in lowercase
RFC 4648 base32 without padding: no 0/1/8/9, so nothing reads as O, l, B or g. `short_id` keeps
the first 12 characters for humans; `parse_node_id` accepts only the full form.
"""
from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import InvalidSignature, KeyFileError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_PEM_LIMIT_BYTES = 4096
_ID_PREFIX = "as"


def node_id_text(public_key: bytes) -> str:
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"a node id is {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}")
    return _ID_PREFIX + base64.b32encode(public_key).decode().rstrip("=").lower()


def short_id(public_key: bytes) -> str:
    return node_id_text(public_key)[:12]


def parse_node_id(text: str) -> bytes:
    body = text.strip()
    if not body.startswith(_ID_PREFIX) or len(body) != len(_ID_PREFIX) + 52:
        raise ValueError(f"not a node id: {text!r}")
    try:
        raw = base64.b32decode(body[len(_ID_PREFIX):].upper() + "====")
    except ValueError:
        raise ValueError(f"not a node id: {text!r}") from None
    if node_id_text(raw) != body:
        # base32 leaves 4 spare bits in the last character and accepts upper case: one key, one text
        raise ValueError(f"not a node id: {text!r} (not the canonical text of a key)")
    return raw


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> None:
    """Raises InvalidSignature unless `signature` is the key's signature of `message`."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (_CryptoInvalidSignature, ValueError):
        raise InvalidSignature("signature does not verify") from None


@dataclass(frozen=True, slots=True)
class Identity:
    """A node's private key. Never leaves the node; never enters a sandbox."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity from a 32-byte seed: for tests and RFC 8032 vectors."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def node_id(self) -> str:
        return node_id_text(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def save(self, path: Path) -> None:
        """Writes the key as PKCS#8 PEM, created with mode 0600 and never overwritten."""
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyFileError(f"{path}: already exists; refusing to overwrite an identity") from None
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: Path) -> Identity:
        path = Path(path)
        try:
            st = path.stat()
        except OSError as exc:
            raise KeyFileError(f"{path}: {exc.strerror}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{path}: readable by others (mode {stat.S_IMODE(st.st_mode):o}); run chmod 600 on it"
            )
        if st.st_size > _PEM_LIMIT_BYTES:
            raise KeyFileError(f"{path}: {st.st_size} bytes is too large for a key file")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path}: not a PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: not an Ed25519 key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        if Path(path).exists():
            return cls.load(path)
        identity = cls.generate()
        identity.save(path)
        return identity
