"""The dashboard's feeds: the newest items in ledger order, capped in count, in bytes, and per author.

A plain ring of the newest N items let anyone who can get entries into our ledger fill the
whole feed: strangers' posts within their quotas (swarm/quota.py stores up to 256 KiB per fresh
key) pushed every claim, verification and record off the page (issue 14). Here a stranger keeps
at most `max_per_author` items, and when the feed is over its count or its bytes, the item that
goes is the oldest of the stranger with the most items (then the most bytes). Protected authors
(our node, the authors the swarm valued: trusted verifiers, the creator, a positive balance;
items of no author, like a record's line) lose items only once no stranger's is left, oldest
first. The same rule as node/web/posts.py's channels, for the same reason.

Pure: the caller says who is protected. Items are the view model's dicts (node/web/views.py),
sized by their JSON, which is what a client is sent.
"""
from __future__ import annotations

import collections
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

Item = dict[str, Any]
Protected = Callable[[bytes], bool]


def item_bytes(item: Item) -> int:
    return len(json.dumps(item, separators=(",", ":")).encode())


class FeedRing:
    def __init__(self, max_items: int, max_bytes: int, max_per_author: int) -> None:
        if min(max_items, max_bytes, max_per_author) < 1:
            raise ValueError("feed caps must be positive")
        self.max_items, self.max_bytes, self.max_per_author = max_items, max_bytes, max_per_author
        self.bytes = 0
        self.evicted = 0                 # items dropped for a cap (still in the ledger)
        self._items: collections.OrderedDict[int, tuple[Item, bytes | None, int]] = collections.OrderedDict()
        self._by_author: dict[bytes, collections.OrderedDict[int, None]] = {}
        self._author_bytes: collections.Counter[bytes] = collections.Counter()
        self._held: dict[int, int] = {}  # id(item) -> its key, while held (so `kept` is exact)
        self._keys = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return (item for item, _, _ in self._items.values())

    def oldest(self) -> Item | None:
        return next(iter(self), None)

    def authors(self) -> list[bytes | None]:
        """The author of each held item, in the items' order."""
        return [author for _, author, _ in self._items.values()]

    def count_of(self, author: bytes) -> int:
        return len(self._by_author.get(author, ()))

    def add(self, item: Item, author: bytes | None, protected: Protected) -> None:
        """Appends `item` (by `author`; None: no author, protected), then evicts down to the caps."""
        key = next(self._keys)
        size = item_bytes(item)
        self._items[key] = (item, author, size)
        self._held[id(item)] = key
        self.bytes += size
        if author is not None:
            self._by_author.setdefault(author, collections.OrderedDict())[key] = None
            self._author_bytes[author] += size
            if not protected(author) and len(self._by_author[author]) > self.max_per_author:
                self._remove(next(iter(self._by_author[author])))
        while len(self._items) > self.max_items or (self.bytes > self.max_bytes and len(self._items) > 1):
            self._remove(self._victim(protected))

    def extend(self, pairs: Iterable[tuple[Item, bytes | None]], protected: Protected) -> None:
        for item, author in pairs:
            self.add(item, author, protected)

    def kept(self, items: Iterable[Item]) -> list[Item]:
        """Those of `items` the feed still holds (what a live client should be sent)."""
        return [i for i in items if id(i) in self._held]

    def _victim(self, protected: Protected) -> int:
        strangers = [a for a in self._by_author if not protected(a)]
        if not strangers:
            return next(iter(self._items))
        heaviest = max(strangers, key=lambda a: (len(self._by_author[a]), self._author_bytes[a]))
        return next(iter(self._by_author[heaviest]))

    def _remove(self, key: int) -> None:
        item, author, size = self._items.pop(key)
        del self._held[id(item)]
        self.bytes -= size
        self.evicted += 1
        if author is not None:
            mine = self._by_author[author]
            del mine[key]
            self._author_bytes[author] -= size
            if not mine:
                del self._by_author[author]
                del self._author_bytes[author]
