"""The message board behind the AgentHub channels: ledger Post entries, indexed for reading.

Posts are ledger entries (signed by the node that published them, gossiped like any entry), so
a channel's history is whatever the node's ledger holds, from every node. `PostIndex` follows
the ledger file with `entries_since` and keeps only the newest posts of each channel, so memory
stays bounded however long the swarm runs; the same pass files results-format posts by the
commit they name ("reported" numbers, what agents said, never what was measured).

Retention under spam. What the index keeps is what it serves, so strangers must not be able to
push everyone else out of it (issue 14: 42,100 8 KB posts from 43 fresh keys). Per channel the
index keeps at most MAX_POSTS_PER_CHANNEL posts and MAX_CHANNEL_TEXT_BYTES of text, and one
author at most MAX_POSTS_PER_AUTHOR of them (its own oldest goes first). When a channel is over
a cap, the post dropped is the oldest of the stranger with the most posts there; a protected
author's posts (our node's, and authors the swarm valued: a trusted verifier, the creator, a
positive balance) go only once no stranger's post is left. Posts stay in the ledger either way:
the caps bound what is served, swarm/quota.py bounds what is stored. A results post may report
on a commit at most MAX_REPORTS_PER_AUTHOR times per author.

What a Post body cannot carry lives here too, in HOME/agenthub.json (`HubNotes`): channel
descriptions, which local agent wrote which of this node's posts, and which agent pushed which
commit. Other nodes see only our node id: those labels never leave this machine.

Knows nothing of HTTP, git or the research loop.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.bodies import Post
from ledger.entry import Entry
from ledger.fold import State
from ledger.store import Ledger

from node.contract import MIN_PREFIX_HEX
from node.errors import NodeError

MAX_POSTS_PER_CHANNEL = 500     # newest posts kept in memory per channel
MAX_CHANNELS = 1024             # channels indexed; posts to further new channels are counted, not kept
MAX_REPORTED_COMMITS = 10_000   # commit prefixes with results-format posts
MAX_REPORTS_PER_COMMIT = 16
MAX_REPORTS_PER_AUTHOR = 2      # of those, from one author
MAX_POSTS_PER_AUTHOR = 50       # kept per channel from one author; its own oldest go first
MAX_CHANNEL_TEXT_BYTES = 1 << 20  # text kept per channel (UTF-8 bytes); the heaviest stranger's oldest go first
MAX_LABELS = 10_000             # post -> agent and commit -> agent labels kept in HOME/agenthub.json
MAX_LOCAL_CHANNELS = 256        # channels created on this node
SYNC_BATCH = 1000               # entries read from the ledger per query
NOTES_FILE = "agenthub.json"

# commit:<7+hex> platform:<name> val_bpb:<float|---> vram_gb:<float|---> | <description>
_NUMBER = r"(\d+(?:\.\d+)?|---)"
_RESULT = re.compile(
    rf"commit:([0-9a-fA-F]{{{MIN_PREFIX_HEX},40}})\s+platform:(\S{{1,64}})\s+val_bpb:" + _NUMBER
    + r"\s+vram_gb:" + _NUMBER + r"\s*\|\s*(.*)", re.DOTALL)
MAX_RESULT_DESCRIPTION_CHARS = 1000


def iso_time(time_ms: int) -> str:
    """ISO 8601 in UTC with a Z, as the hosted hub shows times."""
    moment = datetime.fromtimestamp(max(0, time_ms) / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Result:
    """A post in the results format, parsed. Numbers are what an agent typed: untrusted."""

    commit_prefix: str     # lowercase hex, 7 to 40 digits
    platform: str
    val_bpb: float | None  # None for ---
    vram_gb: float | None
    description: str
    discard: bool
    crash: bool

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit_prefix, "platform": self.platform, "val_bpb": self.val_bpb,
                "vram_gb": self.vram_gb, "description": self.description, "discard": self.discard,
                "crash": self.crash}


def parse_result(text: str) -> Result | None:
    """The results-format fields of a post, or None when it is free text."""
    match = _RESULT.match(text.strip())
    if match is None:
        return None
    commit, platform, bpb, vram, description = match.groups()

    def number(value: str) -> float | None:
        return None if value == "---" else float(value)

    description = description.strip()[:MAX_RESULT_DESCRIPTION_CHARS]
    return Result(commit.lower(), platform, number(bpb), number(vram), description,
                  "DISCARD" in description, "CRASH" in description)


@dataclass(frozen=True, slots=True)
class IndexedPost:
    id: bytes
    author: bytes
    time_ms: int
    channel: str
    text: str
    reply_to: bytes | None
    result: Result | None


class PostIndex:
    """The newest posts per channel and results-format posts per commit, kept up with the ledger."""

    def __init__(self, max_per_channel: int = MAX_POSTS_PER_CHANNEL, max_channels: int = MAX_CHANNELS, *,
                 own: bytes | frozenset[bytes] = frozenset(), max_per_author: int = MAX_POSTS_PER_AUTHOR,
                 max_channel_bytes: int = MAX_CHANNEL_TEXT_BYTES) -> None:
        self.row = 0                    # the last ledger file row indexed
        self.max_per_channel, self.max_channels = max_per_channel, max_channels
        self.max_per_author, self.max_channel_bytes = max_per_author, max_channel_bytes
        # our node's keys (research and verifier): their posts are protected
        self.own: frozenset[bytes] = frozenset({own} if own else ()) if isinstance(own, bytes) else own
        self.channels: dict[str, _Channel] = {}
        self.counts: collections.Counter[str] = collections.Counter()  # posts ever seen, per channel
        self.reported: collections.OrderedDict[str, collections.deque[IndexedPost]] = collections.OrderedDict()
        self.dropped = 0                # posts to channels past max_channels
        self.evicted = 0                # posts no longer served: past a channel's or an author's cap
        self._valued: frozenset[bytes] = frozenset()
        self._lock = asyncio.Lock()

    async def sync(self, ledger: Ledger) -> int:
        """Indexes the posts the ledger committed since the last sync; returns how many."""
        added = 0
        async with self._lock:  # two readers at once would index the same rows twice
            self._valued = valued_authors(ledger.state)
            while True:
                batch = await ledger.entries_since(self.row, ["post"], SYNC_BATCH)
                for row, entry in batch:
                    self.add(row, entry)
                    added += 1
                if len(batch) < SYNC_BATCH:
                    return added

    def protected(self, author: bytes) -> bool:
        return author in self.own or author in self._valued

    def add(self, row: int, entry: Entry) -> None:
        self.row = max(self.row, row)
        body = entry.body
        if not isinstance(body, Post):
            return
        channel = self.channels.get(body.channel)
        if channel is None:
            if len(self.channels) >= self.max_channels:
                self.dropped += 1
                return
            channel = self.channels[body.channel] = _Channel()
        post = IndexedPost(entry.id, entry.author, entry.time_ms, body.channel, body.text, body.reply_to,
                           parse_result(body.text))
        channel.add(post)
        self.counts[body.channel] += 1
        if len(channel.by_author[post.author]) > self.max_per_author:
            channel.remove(channel.by_author[post.author][0])
            self.evicted += 1
        while len(channel.posts) > self.max_per_channel or channel.text_bytes > self.max_channel_bytes:
            channel.remove(channel.victim(self.protected))
            self.evicted += 1
        if post.result is not None:
            self._report(post.result.commit_prefix, post)

    def _report(self, prefix: str, post: IndexedPost) -> None:
        reports = self.reported.get(prefix)
        if reports is None:
            reports = self.reported[prefix] = collections.deque(maxlen=MAX_REPORTS_PER_COMMIT)
            while len(self.reported) > MAX_REPORTED_COMMITS:
                self.reported.popitem(last=False)  # the commit reported about least recently
        else:
            self.reported.move_to_end(prefix)
        if sum(1 for p in reports if p.author == post.author) >= MAX_REPORTS_PER_AUTHOR:
            return   # one author cannot fill a commit's reports
        reports.append(post)

    def posts(self, channel: str, limit: int) -> list[IndexedPost]:
        """The channel's newest posts first, in the order this node received them."""
        kept = self.channels.get(channel)
        return [] if kept is None else list(itertools.islice(reversed(kept.posts.values()), max(0, limit)))

    def reports(self, commit_hex: str) -> list[IndexedPost]:
        """Results-format posts naming this commit by any prefix of 7+ digits, newest first."""
        found = [p for n in range(7, len(commit_hex) + 1) for p in self.reported.get(commit_hex[:n], ())]
        return sorted(found, key=lambda p: p.time_ms, reverse=True)


class _Channel:
    """One channel's kept posts in arrival order, with each author's in order too."""

    def __init__(self) -> None:
        self.posts: collections.OrderedDict[bytes, IndexedPost] = collections.OrderedDict()
        self.by_author: collections.defaultdict[bytes, list[IndexedPost]] = collections.defaultdict(list)
        self.author_bytes: collections.Counter[bytes] = collections.Counter()
        self.text_bytes = 0

    def add(self, post: IndexedPost) -> None:
        self.posts[post.id] = post
        self.by_author[post.author].append(post)
        size = len(post.text.encode())
        self.author_bytes[post.author] += size
        self.text_bytes += size

    def remove(self, post: IndexedPost) -> None:
        del self.posts[post.id]
        mine = self.by_author[post.author]
        mine.remove(post)
        size = len(post.text.encode())
        self.author_bytes[post.author] -= size
        if not mine:
            del self.by_author[post.author]
            del self.author_bytes[post.author]
        self.text_bytes -= size

    def victim(self, protected: Callable[[bytes], bool]) -> IndexedPost:
        """The post to drop: the oldest of the stranger with the most posts (then the most text);
        the oldest post of all once only protected authors are left."""
        strangers = [a for a in self.by_author if not protected(a)]
        if not strangers:
            return next(iter(self.posts.values()))
        heaviest = max(strangers, key=lambda a: (len(self.by_author[a]), self.author_bytes[a]))
        return self.by_author[heaviest][0]


def valued_authors(state: State) -> frozenset[bytes]:
    """Authors the swarm valued, from the fold (the same rule as swarm/ledgerport.py's `valued`)."""
    return frozenset([*state.verifiers, state.spec.creator, *(a for a, b in state.balances.items() if b > 0)])


# -- what this node knows and the ledger does not


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    description: str
    created_ms: int


class HubNotes:
    """Channel descriptions and agent labels, in one small JSON file written atomically."""

    def __init__(self, path: Path, channels: dict[str, Channel], post_agents: dict[str, str],
                 commit_agents: dict[str, str]) -> None:
        self.path = path
        self.channels = channels
        self.post_agents = post_agents       # entry id hex -> local agent name
        self.commit_agents = commit_agents   # commit hex -> local agent name
        self._lock = asyncio.Lock()

    @classmethod
    def load(cls, home: Path) -> HubNotes:
        """Reads HOME/agenthub.json (absent: empty); a file that is not ours is an error."""
        path = home / NOTES_FILE
        if not path.exists():
            return cls(path, {}, {}, {})
        try:
            raw = json.loads(path.read_text())
            channels = {name: Channel(name, str(c["description"]), int(c["created_ms"]))
                        for name, c in dict(raw["channels"]).items()}
            posts = {str(k): str(v) for k, v in dict(raw["post_agents"]).items()}
            commits = {str(k): str(v) for k, v in dict(raw["commit_agents"]).items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NodeError(f"{path}: not an AgentHub notes file: {exc!r}") from None
        return cls(path, channels, posts, commits)

    def has_room_for_channel(self) -> bool:
        return len(self.channels) < MAX_LOCAL_CHANNELS

    async def add_channel(self, channel: Channel) -> None:
        self.channels[channel.name] = channel
        await self._save()

    async def label_post(self, entry_id: bytes, agent: str) -> None:
        _put_bounded(self.post_agents, entry_id.hex(), agent)
        await self._save()

    async def label_commit(self, commit: bytes, agent: str) -> None:
        _put_bounded(self.commit_agents, commit.hex(), agent)
        await self._save()

    async def _save(self) -> None:
        async with self._lock:  # the snapshot and its write in one turn: a later save never loses to an earlier one
            text = json.dumps({
                "channels": {c.name: {"description": c.description, "created_ms": c.created_ms}
                             for c in self.channels.values()},
                "post_agents": self.post_agents, "commit_agents": self.commit_agents,
            }, sort_keys=True)
            await asyncio.to_thread(_write_atomic, self.path, text)


def _put_bounded(labels: dict[str, str], key: str, value: str) -> None:
    labels[key] = value
    while len(labels) > MAX_LABELS:
        del labels[next(iter(labels))]  # the oldest label: dicts keep insertion order


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
