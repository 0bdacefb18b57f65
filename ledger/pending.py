"""The pending area: entries that arrived before their dependencies, held in memory, bounded.

Knows nothing about SQLite or the fold; the store decides what is missing and what to retry.

Each waiting entry is filed under ONE missing dependency id (the first found missing). When the
store appends that id it calls `release`, gets back the entries filed under it and checks them
again; one that still misses something else is filed again under that. So an arrival costs one
dict lookup however many entries wait. One entry per (author, seq) slot: a second, different
entry for a taken slot is a fork, which the store reports.

The store changes the area inside a write transaction; `begin`/`commit`/`rollback` keep a
journal so a failed transaction leaves the area as it was before it.

Nothing waits for ever: an entry whose dependency has not come within `max_age_s` of its filing is
taken out by `expire` (the writer calls it before each batch, with its clock), so entries that
name ids nobody will ever send cannot keep honest out-of-order entries out of a full area.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

from ledger.entry import Entry

MAX_PENDING_ENTRIES = 10_000        # entries in the whole area
MAX_PENDING_PER_AUTHOR = 1_000      # entries of one author: one hostile feed cannot fill the area
MAX_PENDING_BYTES = 64 << 20        # wire bytes in the whole area (fraud entries may be 64 KiB each)
MAX_PENDING_AGE_S = 600.0           # an honest gap is filled by anti-entropy within seconds to minutes


@dataclass(frozen=True, slots=True)
class _Filed:
    entry: Entry
    missing: bytes  # the dependency id it is filed under
    order: int      # arrival number: release hands entries back in arrival order, even after a rollback
    since_s: float  # when it was filed, on the caller's clock


class Pending:
    def __init__(
        self, *, max_entries: int = MAX_PENDING_ENTRIES, max_per_author: int = MAX_PENDING_PER_AUTHOR,
        max_bytes: int = MAX_PENDING_BYTES, max_age_s: float = MAX_PENDING_AGE_S,
    ) -> None:
        if max_entries < 1 or max_per_author < 1 or max_bytes < 1 or not max_age_s > 0:
            raise ValueError("pending limits must be positive")
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self.max_per_author = max_per_author
        self.max_bytes = max_bytes
        self._bytes = 0
        self._slots: dict[tuple[bytes, int], _Filed] = {}
        self._waiting: dict[bytes, dict[tuple[bytes, int], _Filed]] = {}
        self._arrivals = itertools.count()
        self._per_author: Counter[bytes] = Counter()
        self._journal: list[tuple[bool, _Filed]] | None = None  # (added?, what)

    def __len__(self) -> int:
        return len(self._slots)

    def at(self, author: bytes, seq: int) -> Entry | None:
        filed = self._slots.get((author, seq))
        return filed.entry if filed is not None else None

    def full_reason(self, entry: Entry) -> str | None:
        """Why `entry` cannot be filed now, or None if there is room."""
        if len(self._slots) >= self.max_entries:
            return f"pending area full ({self.max_entries} entries)"
        if self._per_author[entry.author] >= self.max_per_author:
            return f"pending area full for this author ({self.max_per_author} entries)"
        if self._bytes + len(entry.wire) > self.max_bytes:
            return f"pending area full ({self.max_bytes} bytes)"
        return None

    def add(self, entry: Entry, missing: bytes, now_s: float = 0.0) -> None:
        """Files `entry` under the dependency id it waits for; the caller checked room and slot."""
        slot = (entry.author, entry.seq)
        if slot in self._slots:
            raise ValueError("pending slot already taken")  # the store checks first: a bug if hit
        self._file(_Filed(entry, missing, next(self._arrivals), now_s))

    def expire(self, now_s: float) -> list[Entry]:
        """Takes out every entry filed more than `max_age_s` before `now_s`, oldest first. Scans the
        area (at most MAX_PENDING_ENTRIES): the writer calls it once per batch."""
        old = sorted((f for f in self._slots.values() if now_s - f.since_s > self.max_age_s), key=lambda f: f.order)
        return [self._unfile(f).entry for f in old]

    def release(self, dep: bytes) -> list[Entry]:
        """Takes out every entry filed under `dep` (just appended), in arrival order."""
        waiting = self._waiting.get(dep)
        if not waiting:
            return []
        filed = sorted(waiting.values(), key=lambda f: f.order)
        for f in filed:
            self._unfile(f)
        return [f.entry for f in filed]

    def remove(self, author: bytes, seq: int) -> Entry | None:
        filed = self._slots.get((author, seq))
        if filed is None:
            return None
        self._unfile(filed)
        return filed.entry

    def remove_author_from(self, author: bytes, seq: int) -> list[Entry]:
        """Takes out the author's entries at `seq` or later (its feed froze there). Scans: rare."""
        slots = sorted(s for s in self._slots if s[0] == author and s[1] >= seq)
        return [self._unfile(self._slots[s]).entry for s in slots]

    # -- the journal around one write transaction

    def begin(self) -> None:
        self._journal = []

    def commit(self) -> None:
        self._journal = None

    def rollback(self) -> None:
        journal, self._journal = self._journal, None
        for added, filed in reversed(journal or []):
            if added:
                self._unfile(filed)
            else:
                self._file(filed)
        self._journal = None

    def _file(self, filed: _Filed) -> None:
        slot = (filed.entry.author, filed.entry.seq)
        self._slots[slot] = filed
        self._waiting.setdefault(filed.missing, {})[slot] = filed
        self._per_author[filed.entry.author] += 1
        self._bytes += len(filed.entry.wire)
        if self._journal is not None:
            self._journal.append((True, filed))

    def _unfile(self, filed: _Filed) -> _Filed:
        author, seq = filed.entry.author, filed.entry.seq
        del self._slots[(author, seq)]
        waiting = self._waiting[filed.missing]
        del waiting[(author, seq)]
        if not waiting:
            del self._waiting[filed.missing]
        self._per_author[author] -= 1
        if self._per_author[author] <= 0:
            del self._per_author[author]
        self._bytes -= len(filed.entry.wire)
        if self._journal is not None:
            self._journal.append((False, filed))
        return filed
