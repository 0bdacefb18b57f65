"""What we asked one peer for, so the entries it sends back are never penalized for our quotas.

Pure bookkeeping per link, the clock passed in. A full heads table asks for anything we lack; a
heads delta or a want asks for some authors' feeds; a want by id asks for those entries. Digests
ask for nothing (the peer answers a digest with its heads, and entries then flow to it, not to
us), so they are not counted here — unlike swarm/limits.py's request window, which slows answers
down instead of dropping them and so may be broad.
"""
from __future__ import annotations

from collections import OrderedDict

from swarm.protocol import Heads, HeadsDelta, Message, Want, WantIds

ASKED_WINDOW_S = 30.0       # an answer may come this long after the ask (a big catch-up is paged)
MAX_ASKED = 4096            # authors and ids remembered per link; the oldest are forgotten


class Asked:
    def __init__(self) -> None:
        self.all_until_s = 0.0
        self._authors: OrderedDict[bytes, float] = OrderedDict()
        self._ids: OrderedDict[bytes, float] = OrderedDict()

    def note(self, message: Message, now_s: float) -> None:
        until = now_s + ASKED_WINDOW_S
        if isinstance(message, Heads):
            self.all_until_s = until
        elif isinstance(message, HeadsDelta):
            for author, _, _ in message.heads:
                _remember(self._authors, author, until)
        elif isinstance(message, Want):
            for author, _ in message.wants:
                _remember(self._authors, author, until)
        elif isinstance(message, WantIds):
            for eid in message.ids:
                _remember(self._ids, eid, until)

    def covers(self, author: bytes, eid: bytes, now_s: float) -> bool:
        """Whether an entry of `author` with id `eid` answers something we asked for recently."""
        return (now_s < self.all_until_s or now_s < self._authors.get(author, 0.0)
                or now_s < self._ids.get(eid, 0.0))


def _remember(table: OrderedDict[bytes, float], key: bytes, until_s: float) -> None:
    table[key] = until_s
    table.move_to_end(key)
    if len(table) > MAX_ASKED:
        table.popitem(last=False)
