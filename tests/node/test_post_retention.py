"""node/web/posts.py under spam: per-channel and per-author caps, strangers evicted before the
node's own posts, and the heaviest stranger first (issue 14's 43-key flood, scaled down)."""
from __future__ import annotations

from pathlib import Path

from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.bodies import Post
from ledger.entry import Entry
from ledger.keys import Identity
from ledger.store import Ledger
from node.web.agenthub import AGENTHUB_KEY, add_routes
from node.web.common import own_keys
from node.web.posts import MAX_REPORTS_PER_AUTHOR, PostIndex
from tests.ledger import factory
from tests.node.hubkit import backend

SWARM = b"w" * 32
FEEDS = factory.Feeds(SWARM)
ROW = iter(range(1, 1 << 30))


def post(who: Identity, text: str, channel: str = "general") -> Entry:
    return FEEDS.sign(who, Post(channel=channel, text=text, reply_to=None))


def test_a_flood_of_fresh_keys_never_pushes_out_the_nodes_own_posts() -> None:
    me = factory.identity(1)
    index = PostIndex(max_per_channel=100, own=me.public_key, max_channel_bytes=400_000)
    mine = [post(me, f"mine {i}") for i in range(5)]
    for entry in mine:
        index.add(next(ROW), entry)
    attackers = [factory.identity(100 + k) for k in range(43)]
    for i in range(40):
        for who in attackers:
            index.add(next(ROW), post(who, f"{i}" + "x" * 8000))
    served = index.posts("general", 1000)
    assert {p.id for p in served} >= {e.id for e in mine}
    assert len(served) <= 100 and index.channels["general"].text_bytes <= 400_000
    assert index.counts["general"] == 5 + 43 * 40 and index.evicted == 43 * 40 - (len(served) - 5)


def test_the_heaviest_stranger_goes_first() -> None:
    index = PostIndex(max_per_channel=20)
    quiet, loud = factory.identity(2), factory.identity(3)
    index.add(next(ROW), post(quiet, "a point worth keeping"))
    for i in range(200):
        index.add(next(ROW), post(loud, f"spam {i}"))
    texts = [p.text for p in index.posts("general", 100)]
    assert "a point worth keeping" in texts and len(texts) == 20


def test_one_author_keeps_only_its_newest_posts_per_channel() -> None:
    index = PostIndex(max_per_author=5)
    who = factory.identity(4)
    for i in range(12):
        index.add(next(ROW), post(who, f"p{i}"))
    assert [p.text for p in index.posts("general", 100)] == [f"p{i}" for i in range(11, 6, -1)]


def test_one_author_cannot_fill_a_commits_reports() -> None:
    index = PostIndex()
    who, other = factory.identity(5), factory.identity(6)
    line = "commit:abcdef1 platform:cpu val_bpb:0.9 vram_gb:1.0 | try {}"
    for i in range(10):
        index.add(next(ROW), post(who, line.format(i), channel="results"))
    index.add(next(ROW), post(other, line.format("other"), channel="results"))
    authors = [p.author for p in index.reports("abcdef1")]
    assert authors.count(who.public_key) == MAX_REPORTS_PER_AUTHOR and other.public_key in authors


KEYS = [factory.identity(200 + i) for i in range(6)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3000), st.sampled_from(["a", "b"])), max_size=120))
def test_caps_hold_whatever_arrives(stream: list[tuple[int, int, str]]) -> None:
    own = KEYS[0].public_key
    index = PostIndex(max_per_channel=15, own=own, max_per_author=6, max_channel_bytes=12_000)
    sent: dict[str, list[Entry]] = {"a": [], "b": []}
    for who, size, channel in stream:
        entry = post(KEYS[who], "y" * size, channel)
        index.add(next(ROW), entry)
        sent[channel].append(entry)
    for name, kept in index.channels.items():
        served = index.posts(name, 1000)
        assert len(served) <= 15 and kept.text_bytes <= 12_000
        for key in KEYS:
            assert sum(1 for p in served if p.author == key.public_key) <= 6
        order = [e.id for e in sent[name]]
        positions = [order.index(p.id) for p in served]
        assert positions == sorted(positions, reverse=True)   # newest first, as received
        # the node's own posts go only when no stranger's post is left to drop
        mine = [e for e in sent[name] if e.author == own]
        if any(p.author != own for p in served):
            newest_own = mine[-6:]
            budget_ok = sum(len(_text(e)) for e in newest_own) <= 12_000 and len(newest_own) <= 15
            if budget_ok:
                assert {e.id for e in newest_own} <= {p.id for p in served}


async def test_a_trusted_verifiers_posts_outlast_a_flood_read_from_a_real_ledger(tmp_path: Path) -> None:
    """PostIndex.sync reads who the swarm valued from the ledger's fold: the spec's verifier."""
    creator, verifier = factory.identity(10), factory.identity(11)
    spec = factory.make_spec(creator, [verifier])
    feeds = factory.Feeds(spec.swarm_id)
    async with Ledger.open(tmp_path / "l.sqlite", spec) as ledger:
        kept = [await _append(ledger, feeds.sign(verifier, Post(channel="general", text=f"v{i}", reply_to=None)))
                for i in range(3)]
        for k in range(30):
            await _append(ledger, feeds.sign(factory.identity(300 + k), Post(channel="general", text="z" * 500,
                                                                              reply_to=None)))
        index = PostIndex(max_per_channel=10)
        assert await index.sync(ledger) == 33
    served = {p.id for p in index.posts("general", 100)}
    assert len(served) == 10 and {e.id for e in kept} <= served


async def _append(ledger: Ledger, entry: Entry) -> Entry:
    assert (await ledger.append(entry)).status.value == "appended"
    return entry


def _text(entry: Entry) -> str:
    assert isinstance(entry.body, Post)
    return entry.body.text


def test_every_key_of_the_node_is_protected() -> None:
    """A node posts under its research key and, when it verifies, its verifier key: both are ours."""
    research, verifier = factory.identity(30), factory.identity(31)
    index = PostIndex(max_per_channel=10, own=frozenset({research.public_key, verifier.public_key}))
    ours = [post(research, "from the research key"), post(verifier, "from the verifier key")]
    for entry in ours:
        index.add(next(ROW), entry)
    for i in range(50):
        index.add(next(ROW), post(factory.identity(200 + i % 7), f"stranger {i}"))
    assert {p.id for p in index.posts("general", 100)} >= {e.id for e in ours}


async def test_the_hub_index_protects_the_nodes_keys(tmp_path: Path) -> None:
    """The AgentHub routes build their index with the node's own keys (before, with none)."""
    async with backend(tmp_path) as kit:
        app = web.Application()
        add_routes(app, kit, kit.agents)
        own = app[AGENTHUB_KEY].index.own
        assert kit.me.public_key in own and own == own_keys(kit)
