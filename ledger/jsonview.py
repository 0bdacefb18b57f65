"""Entries and specs as JSON-ready values, for people and for `jq`: the CLI's output format.

One-way and lossy by design (a view, never parsed back): bytes become lowercase hex, public keys
become node id text, floats stay floats. Signed bytes are only ever the wire, never this.
"""
from __future__ import annotations

from typing import Any

from ledger.bodies import KEY_BYTES, Body
from ledger.entry import Entry
from ledger.keys import node_id_text
from ledger.spec import SignedSpec

# Body fields that hold public keys rather than hashes (both are 32 bytes, so length cannot tell).
_KEY_FIELDS = frozenset({"to", "verifier", "creator", "verifiers"})


def plain(value: Any, *, key_field: bool = False) -> Any:
    """`value` with bytes as hex (or node ids where `key_field`), recursively."""
    if isinstance(value, bytes):
        return node_id_text(value) if key_field and len(value) == KEY_BYTES else value.hex()
    if isinstance(value, list):
        return [plain(v, key_field=key_field) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v, key_field=key_field) for k, v in value.items()}
    return value


def body_view(body: Body) -> dict[str, Any]:
    return {name: plain(v, key_field=name in _KEY_FIELDS) for name, v in body.to_map().items()}


def entry_view(entry: Entry, row: int | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {} if row is None else {"row": row}
    view.update(
        id=entry.id.hex(),
        author=node_id_text(entry.author),
        seq=entry.seq,
        prev=None if entry.prev is None else entry.prev.hex(),
        kind=entry.kind,
        time_ms=entry.time_ms,
        body=body_view(entry.body),
    )
    return view


def spec_view(signed: SignedSpec) -> dict[str, Any]:
    return {"swarm_id": signed.swarm_id.hex(), **body_view(signed.spec)}
