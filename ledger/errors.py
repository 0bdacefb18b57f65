"""The ledger's exception tree. Foreign exceptions (msgpack, cryptography, sqlite) never escape."""
from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger package raises."""


class InvalidEntry(LedgerError):
    """Bytes or fields that are not a valid entry: bad encoding, type, size or kind."""


class InvalidSignature(InvalidEntry):
    """A signature that does not verify over the bytes as received."""


class InvalidSpec(LedgerError):
    """A swarm spec that does not decode, validate or verify."""


class KeyFileError(LedgerError):
    """An identity file that is missing, malformed or readable by others."""


class StoreError(LedgerError):
    """The SQLite file is not a ledger, or refuses an operation."""


class Tampered(StoreError):
    """The file's rows no longer match their chain, signatures or derived tables."""
