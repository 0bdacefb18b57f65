"""The dashboard's feeds are capped in count, bytes and per stranger (node/web/feedring.py): a flood
of strangers' posts within their quotas no longer pushes the research off the page (issue 14)."""
from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from ledger.bodies import Post
from tests.ledger.factory import identity
from tests.node.hubkit import backend
from tests.node.test_dashboard import get, seed, serve

from node.web import dashboard
from node.web.feedring import FeedRing, item_bytes

PROTECTED = {b"p1", b"p2"}


def is_protected(author: bytes) -> bool:
    return author in PROTECTED


adds = st.lists(st.tuples(st.sampled_from([b"p1", b"p2", b"s1", b"s2", b"s3", b"s4", None]),
                          st.integers(min_value=0, max_value=400)), max_size=200)


@given(adds, st.integers(1, 30), st.integers(200, 6000), st.integers(1, 8))
def test_caps_hold_and_protected_items_go_last(stream: list[tuple[bytes | None, int]], max_items: int,
                                               max_bytes: int, per_author: int) -> None:
    ring = FeedRing(max_items, max_bytes, per_author)
    for row, (author, size) in enumerate(stream):
        before = list(ring)
        item = {"row": row, "kind": "post", "time": "", "text": "x" * size, "href": None}
        ring.add(item, author, is_protected)
        held = list(ring)
        assert len(held) <= max_items
        assert ring.bytes == sum(item_bytes(i) for i in held)
        assert ring.bytes <= max_bytes or len(held) == 1
        assert [i["row"] for i in held] == sorted(i["row"] for i in held)   # ledger order kept
        authors = {id(i): a for i, a in zip(held, ring.authors())}
        for stranger in (b"s1", b"s2", b"s3", b"s4"):
            assert sum(1 for a in authors.values() if a == stranger) <= per_author
        lost = [i for i in before if id(i) not in {id(h) for h in held}]
        if any(_author_of(stream, i["row"]) in PROTECTED or _author_of(stream, i["row"]) is None for i in lost):
            # a protected item went: no stranger's item may be left
            assert all(a in PROTECTED or a is None for a in authors.values())


def _author_of(stream: list[tuple[bytes | None, int]], row: int) -> bytes | None:
    return stream[row][0]


def test_kept_names_only_the_items_still_held() -> None:
    ring = FeedRing(3, 10_000, 2)
    items = [{"row": r, "text": "t"} for r in range(4)]
    for item in items:
        ring.add(item, b"s1", is_protected)
    assert ring.kept(items) == items[2:] and ring.evicted == 2


async def test_a_strangers_flood_leaves_the_research_in_the_feed(tmp_path: Path) -> None:
    async with backend(tmp_path) as kit:
        await seed(kit)
        app = web.Application()
        dashboard.add_routes(app, kit)
        runner, url = await serve(app)
        try:
            hub = app[dashboard.HUB_KEY]
            await hub.poll()
            research = [i for i in hub.feed if i["kind"] in ("claim", "verify", "record", "mint")]
            assert research
            strangers = [identity(9300 + i) for i in range(25)]
            for n in range(12):
                for who in strangers:
                    await kit.publish_as(who, Post(channel="general", text=f"{n} " + "spam " * 60, reply_to=None))
            await hub.poll()
            status, _, text = await get(f"{url}/dashboard/state.json")
            assert status == 200
            feed = json.loads(text)["feed"]
            assert len(feed) <= dashboard.MAX_FEED_ITEMS
            assert sum(item_bytes(i) for i in feed) <= dashboard.MAX_FEED_BYTES
            assert hub.feed.evicted > 0
            # every item the research made is still there; what went was the strangers' posts
            held = {(i["row"], i["kind"]) for i in feed}
            assert all((i["row"], i["kind"]) in held for i in research), research
            for who in strangers:
                assert hub.feed.count_of(who.public_key) <= dashboard.MAX_FEED_PER_AUTHOR
        finally:
            await runner.cleanup()
