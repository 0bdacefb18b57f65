"""The pending area: bounds, release by dependency, and a rollback that restores it exactly."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.entry import Entry
from ledger.pending import Pending
from tests.ledger.factory import Feeds, identity, make_spec, post

SPEC = make_spec(identity(500), [identity(501)])
AUTHORS = [identity(510 + i) for i in range(3)]
# four entries per author, signed once: seq 1..4
ENTRIES: list[Entry] = []
for _who in AUTHORS:
    _feeds = Feeds(SPEC.swarm_id)
    ENTRIES += [_feeds.sign(_who, post(str(n))) for n in range(4)]
DEPS = [bytes([d]) * 32 for d in range(4)]


def snapshot(p: Pending) -> tuple[object, ...]:
    slots = sorted((e.author, e.seq, e.id) for e in (p.at(a.public_key, s) for a in AUTHORS for s in range(1, 5)) if e)
    return len(p), tuple(slots)


def test_limits_release_and_remove() -> None:
    p = Pending(max_entries=3, max_per_author=2)
    a = [e for e in ENTRIES if e.author == AUTHORS[0].public_key]
    b = [e for e in ENTRIES if e.author == AUTHORS[1].public_key]
    p.add(a[1], DEPS[0])
    p.add(a[2], DEPS[0])
    assert p.full_reason(a[3]) is not None  # per author
    p.add(b[1], DEPS[1])
    assert "3 entries" in (p.full_reason(ENTRIES[-1]) or "")  # in total
    assert p.release(DEPS[0]) == [a[1], a[2]] and len(p) == 1
    assert p.release(DEPS[0]) == []
    assert p.remove(b[0].author, 2) == b[1] and len(p) == 0
    small = Pending(max_bytes=len(a[1].wire) + len(a[2].wire) - 1)
    small.add(a[1], DEPS[0])
    assert "bytes" in (small.full_reason(a[2]) or "")


def filled(before: list[tuple[int, int]]) -> Pending:
    p = Pending(max_entries=8, max_per_author=4)
    for i, d in before:
        e = ENTRIES[i]
        if p.at(e.author, e.seq) is None and p.full_reason(e) is None:
            p.add(e, DEPS[d])
    return p


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "release", "remove", "freeze"]),
                          st.integers(0, len(ENTRIES) - 1), st.integers(0, 3)), max_size=30),
       st.lists(st.tuples(st.integers(0, len(ENTRIES) - 1), st.integers(0, 3)), max_size=6))
def test_rollback_restores_the_area_exactly(ops: list[tuple[str, int, int]], before: list[tuple[int, int]]) -> None:
    p, untouched = filled(before), filled(before)
    p.begin()
    for op, i, d in ops:
        e = ENTRIES[i]
        if op == "add" and p.at(e.author, e.seq) is None and p.full_reason(e) is None:
            p.add(e, DEPS[d])
        elif op == "release":
            p.release(DEPS[d])
        elif op == "remove":
            p.remove(e.author, e.seq)
        elif op == "freeze":
            p.remove_author_from(e.author, e.seq)
    p.rollback()
    assert snapshot(p) == snapshot(untouched)
    # each entry is filed under the same dependency as before, in the same order
    assert [p.release(dep) for dep in DEPS] == [untouched.release(dep) for dep in DEPS]
    assert len(p) == 0


def test_entries_expire_after_the_age_limit_oldest_first() -> None:
    p = Pending(max_age_s=10.0)
    a = [e for e in ENTRIES if e.author == AUTHORS[0].public_key]
    p.add(a[1], DEPS[0], now_s=100.0)
    p.add(a[2], DEPS[1], now_s=105.0)
    assert p.expire(110.0) == [] and len(p) == 2    # exactly at the limit: still waiting
    assert p.expire(110.5) == [a[1]] and len(p) == 1
    assert p.expire(1000.0) == [a[2]] and len(p) == 0 and p.release(DEPS[1]) == []
