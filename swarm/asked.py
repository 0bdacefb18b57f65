"""What we asked one peer for, so the entries it sends back are never penalized for our quotas.

Pure bookkeeping per link, the clock passed in. A full heads table asks for anything we lack; a
heads delta or a want asks for some authors' feeds; a want by id asks for those entries. Digests
ask for nothing (the peer answers a digest with its heads, and entries then flow to it, not to
us), so they are not counted here — unlike swarm/limits.py's request window, which slows answers
down instead of dropping them and so may be broad.

What asking forgives. Refusals for volume (an identity's byte rate, a subnet's hourly share) are
what an honest catch-up runs into, so an answer is never blamed for them. A refusal because the
author holds its whole quota here is different: a node under our rules never holds more of an
author than its quota, and sends the author's stamp ahead of its feed, so an honest answer
causes one only where quotas differ between nodes (a test or lab setting) or a stamp was
forgotten. Those are forgiven from a small bucket per link (`forgive`). Without it the ask
itself was the hole: every link starts with our full heads, which asks for "anything we lack",
so a flooder that pushed fresh keys' entries from its first second was never penalized for the
first ASKED_WINDOW_S of its link (issue 14). Now it runs the bucket dry within a few hundred
refused entries and is banned (swarm/limits.py).
"""
from __future__ import annotations

from collections import OrderedDict

from swarm.limits import TokenBucket
from swarm.protocol import Heads, HeadsDelta, Message, Want, WantIds

ASKED_WINDOW_S = 30.0       # an answer may come this long after the ask (a big catch-up is paged)
MAX_ASKED = 4096            # authors and ids remembered per link; the oldest are forgotten
FORGIVEN_BURST = 64.0       # over-quota refusals of asked-for entries forgiven per link at once ...
FORGIVEN_PER_S = 1.0        # ... and per second after that (the score also recovers 1 point/s)


class Asked:
    def __init__(self) -> None:
        self.all_until_s = 0.0
        self.forgiven = 0           # over-quota refusals forgiven so far on this link
        self._forgive: TokenBucket | None = None
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

    def forgive(self, now_s: float) -> bool:
        """Whether one more asked-for entry refused for its author's quota goes unpenalized."""
        if self._forgive is None:
            self._forgive = TokenBucket.full(FORGIVEN_PER_S, FORGIVEN_BURST, now_s)
        if not self._forgive.take(1.0, now_s):
            return False
        self.forgiven += 1
        return True


def _remember(table: OrderedDict[bytes, float], key: bytes, until_s: float) -> None:
    table[key] = until_s
    table.move_to_end(key)
    if len(table) > MAX_ASKED:
        table.popitem(last=False)
