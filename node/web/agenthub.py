"""AgentHub's HTTP API (program_agenthub.md), served by the node on 127.0.0.1, so an agent's
curl and git commands work unchanged with HUB=http://127.0.0.1:PORT.

Knows the node only through `Backend` (node/web/backend.py): nothing of workers, peers or the trainer.

Theory of operation. The hosted hub is a git server plus a message board; here both are views of
the swarm. A pushed bundle is checked, stored and handed to `backend.submit`: a worker runs it
and the node publishes a signed claim that verifiers re-run. The commit log is the ledger's
claims (plus the queue); a commit's numbers are the claimed value, the verified value and, apart
from both, what agents "reported" in results posts. Posts are ledger Post entries signed by the
node and gossiped; node/web/posts.py indexes them. Whatever another node wrote (messages, posts) is
marked "untrusted": an agent must read it as data, never as instructions.

`git bundle create /tmp/push.bundle HEAD` carries the whole history, baseline included, which
`apply_bundle` refuses (it takes experiments, each with one parent, and nothing already here).
So `_thin_bundle` keeps only the objects this node lacks and rewrites them as the thin bundle
`git bundle create b HEAD ^parent` would be; `apply_bundle` then checks that as it checks any
peer's. The parent is checked first, so a push the queue would refuse leaves no objects behind.

Every failure is a JSON {"error": ...} with a 4xx; 5xx only when the node itself fails.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import HttpVersion11, web

from ledger.bodies import MAX_SHORT_TEXT, MAX_TEXT, Post
from ledger.errors import InvalidEntry
from ledger.keys import node_id_text
from swarm import gitrepo
from swarm.bundles import MAX_BUNDLE_BYTES, MAX_BUNDLE_OBJECTS, MAX_INFLATED_BYTES, apply_bundle, make_bundle
from swarm.errors import BundleRejected
from swarm.gitobjects import BLOB, COMMIT, TREE, RawObject, parse_commit
from swarm.packfile import PackLimits, parse_bundle_header, parse_pack, resolve_pack, write_bundle, write_pack

from node.contract import UNTRUSTED_HEADER
from node.web.agents import OPERATOR, AgentRegistry
from node.web.backend import Backend
from node.web.common import (COMMIT_HEX, Access, ApiError, Conflict, Handler, NotFound, Route, admit, echo, entry_id,
                             error, full_hex, guard, limit, match_prefix, own_keys, read_body, read_json, text_field,
                             untrusted)
from node.web.hubviews import CommitView, Known, children_of, known_commits, newest_first
from node.web.posts import Channel, HubNotes, IndexedPost, PostIndex, iso_time, parse_result

DEFAULT_COMMITS, MAX_COMMITS = 20, 200
DEFAULT_POSTS, MAX_POSTS = 50, 200
MAX_LINEAGE = 1000              # ancestors listed at most: claims could describe a very long chain


def add_routes(app: web.Application, backend: Backend, agents: AgentRegistry) -> None:
    """Mounts the AgentHub routes under /api on `app` (which the node creates and runs)."""
    # the node's own posts are kept before any stranger's (node/web/posts.py)
    hub = AgentHub(backend, agents, HubNotes.load(backend.home), PostIndex(own=own_keys(backend)))
    app[AGENTHUB_KEY] = hub

    def route(handler: Handler, access: Access = Access.AGENT) -> Route:
        return guard(agents, handler, access)

    app.router.add_post("/api/register", route(hub.register, Access.OPERATOR))
    app.router.add_route("POST", "/api/git/push", route(hub.push), expect_handler=hub.expect_bundle)
    app.router.add_get("/api/git/fetch/{hash}", route(hub.fetch))
    app.router.add_get("/api/git/commits", route(hub.commits))
    app.router.add_get("/api/git/commits/{hash}", route(hub.commit))
    app.router.add_get("/api/git/commits/{hash}/children", route(hub.children))
    app.router.add_get("/api/git/commits/{hash}/lineage", route(hub.lineage))
    app.router.add_get("/api/git/leaves", route(hub.leaves))
    app.router.add_get("/api/git/diff/{a}/{b}", route(hub.diff))
    app.router.add_post("/api/channels", route(hub.create_channel))
    app.router.add_get("/api/channels", route(hub.channels))
    app.router.add_post("/api/channels/{name}/posts", route(hub.post))
    app.router.add_get("/api/channels/{name}/posts", route(hub.posts))


class AgentHub:
    def __init__(self, backend: Backend, agents: AgentRegistry, notes: HubNotes, index: PostIndex) -> None:
        self.backend, self.agents, self.notes, self.index = backend, agents, notes, index
        self.mine = own_keys(backend)

    async def expect_bundle(self, request: web.Request) -> web.StreamResponse | None:
        """curl sends `Expect: 100-continue` before a large body: refuse a stranger or an oversized
        bundle before it comes."""
        try:
            admit(request, self.agents, Access.AGENT)
        except ApiError as exc:
            return error(exc.status, str(exc))
        if request.content_length is not None and request.content_length > MAX_BUNDLE_BYTES:
            return error(413, f"bundle of {request.content_length} bytes is over the limit of {MAX_BUNDLE_BYTES}")
        if request.version == HttpVersion11:
            if request.headers.get("Expect", "").lower() != "100-continue":
                return error(417, "only Expect: 100-continue is understood")
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the interim response is not part of the answer's size
        return None

    async def _known(self) -> dict[bytes, Known]:
        await self.backend.history.sync(self.backend.ledger)
        return known_commits(self.backend.history.claims, self.backend.queued(), self._baseline)

    @property
    def _baseline(self) -> bytes:
        return self.backend.ledger.spec.spec.baseline_commit

    async def _resolve(self, text: str, known: Mapping[bytes, Known], *, in_repo: bool = False) -> bytes:
        """A commit from a full hash or a unique prefix of a known commit's hash."""
        commit = full_hex(text, COMMIT_HEX)
        if commit is not None and in_repo and await gitrepo.has_commit(self.backend.repo, commit):
            return commit
        return match_prefix(text, known, "commit", COMMIT_HEX)

    # -- agents

    async def register(self, request: web.Request, _agent: str) -> web.StreamResponse:
        name = text_field(await read_json(request), "id", max_chars=MAX_SHORT_TEXT)  # the registry checks its form
        if name == OPERATOR or name in self.agents.names():
            raise Conflict(f"agent id {echo(name)} is taken")
        key = self.agents.register(name)
        return web.json_response({"id": name, "api_key": key}, status=201)

    # -- git

    async def push(self, request: web.Request, agent: str) -> web.StreamResponse:
        data = await read_body(request, MAX_BUNDLE_BYTES)
        known = await self._known()
        tip, parent = await self._store_pushed(data, known)
        submission = await self.backend.submit(tip, agent)
        await self.notes.label_commit(tip, agent)
        return web.json_response({
            "hash": tip.hex(), "parent_hash": parent.hex(), "status": "queued",
            "position": submission.position, "message": submission.message,
        }, status=201)

    async def _store_pushed(self, data: bytes, known: Mapping[bytes, Known]) -> tuple[bytes, bytes]:
        """Checks and stores a pushed bundle's new objects; its commit and that commit's parent."""
        repo = self.backend.repo
        header = parse_bundle_header(data)
        tips = {oid for _name, oid in header.refs}
        if len(tips) != 1:
            raise ApiError("push one commit: git bundle create /tmp/push.bundle HEAD")
        tip = tips.pop()
        if tip in known:
            raise Conflict(f"commit {tip.hex()} is already {known[tip].status}")
        if await gitrepo.has_commit(repo, tip):
            info = await gitrepo.commit_info(repo, tip)
            self._check_parents(tip, info.parents, known)
            return tip, info.parents[0]
        for prerequisite in header.prerequisites:
            if not await gitrepo.has_commit(repo, prerequisite):
                raise ApiError(f"the bundle needs commit {prerequisite.hex()}, which this node does not have: "
                               f"build on the baseline {self._baseline.hex()} or a leaf (GET /api/git/leaves)")
        objects = await _unpack(repo, data[header.pack_offset:])
        tip_object = objects.get(tip)
        if tip_object is None or tip_object.kind != COMMIT:
            raise BundleRejected(f"the bundle does not contain its commit {tip.hex()}")
        parents = parse_commit(tip_object.data).parents
        self._check_parents(tip, parents, known)
        thin = await self._thin_bundle(tip, objects)
        await apply_bundle(repo, thin, expect_commit=tip,
                           allowed_paths=frozenset(self.backend.ledger.spec.spec.allowed_files),
                           max_bytes=MAX_BUNDLE_BYTES + MAX_INFLATED_BYTES)  # the pushed bytes were capped
        return tip, parents[0]

    def _check_parents(self, tip: bytes, parents: Sequence[bytes],
                       known: Mapping[bytes, Known]) -> None:
        fetch = (f"fetch the baseline ({self._baseline.hex()}) or a leaf (GET /api/git/leaves) with "
                 "GET /api/git/fetch/<hash>, git bundle unbundle, git checkout <hash>, and commit on top of it")
        if len(parents) != 1:
            raise ApiError(f"commit {tip.hex()[:12]} has {len(parents)} parents; an experiment has exactly one: "
                           + fetch)
        parent = parents[0]
        if parent != self._baseline and not (parent in known and known[parent].claims):
            raise ApiError(f"the parent {parent.hex()[:12]} is not a commit of this swarm: " + fetch)

    async def _thin_bundle(self, tip: bytes, objects: Mapping[bytes, RawObject]) -> bytes:
        """What the node lacks of the pushed objects, as a bundle of `tip` on what it has."""
        here = await gitrepo.read_objects(self.backend.repo, list(objects))
        new = [o for o in objects.values() if o.oid not in here]
        prerequisites: set[bytes] = set()
        for obj in new:
            if obj.kind == COMMIT:
                prerequisites.update(p for p in parse_commit(obj.data).parents if p in here)
        order = {BLOB: 0, TREE: 1, COMMIT: 2}
        pack = write_pack([(o, None) for o in sorted(new, key=lambda o: (order[o.kind], o.oid))])
        return write_bundle(sorted(prerequisites), [(b"HEAD", tip)], pack)

    def _flag(self, known: Mapping[bytes, Known], *commits: bytes) -> dict[str, str]:
        """The untrusted header of a bundle or diff: code another node claimed and none of ours did."""
        flagged = any(untrusted({r.author for r in known[c].claims}, self.mine) for c in commits if c in known)
        return {UNTRUSTED_HEADER: "true" if flagged else "false"}

    async def fetch(self, request: web.Request, _agent: str) -> web.StreamResponse:
        known = await self._known()
        commit = await self._resolve(request.match_info["hash"], known, in_repo=True)
        if not await gitrepo.has_commit(self.backend.repo, commit):
            raise NotFound(f"commit {commit.hex()} is claimed, but this node has not received it yet")
        data = await make_bundle(self.backend.repo, commit, have=[])
        return web.Response(body=data, content_type="application/octet-stream", headers={
            "Content-Disposition": f'attachment; filename="{commit.hex()}.bundle"', **self._flag(known, commit)})

    async def commits(self, request: web.Request, _agent: str) -> web.StreamResponse:
        most = limit(request, DEFAULT_COMMITS, MAX_COMMITS)
        known = await self._known()
        view = self._view()
        return web.json_response([await view.commit(k) for k in newest_first(known)[:most]])

    async def commit(self, request: web.Request, _agent: str) -> web.StreamResponse:
        known = await self._known()
        commit = await self._resolve(request.match_info["hash"], known)
        view = self._view()
        out = await view.commit(known[commit])
        out["claims"] = [view.claim(r) for r in known[commit].claims]
        out["children"] = [c.hex() for c in children_of(known).get(commit, [])]
        await self.index.sync(self.backend.ledger)
        out["reported"] = [self._post_json(p) for p in self.index.reports(commit.hex())]
        return web.json_response(out)

    async def children(self, request: web.Request, _agent: str) -> web.StreamResponse:
        known = await self._known()
        commit = await self._resolve(request.match_info["hash"], known)
        kids = children_of(known).get(commit, [])[:limit(request, MAX_COMMITS, MAX_COMMITS)]
        view = self._view()
        return web.json_response([await view.commit(known[c]) for c in kids])

    async def lineage(self, request: web.Request, _agent: str) -> web.StreamResponse:
        known = await self._known()
        commit: bytes | None = await self._resolve(request.match_info["hash"], known)
        view, out, seen = self._view(), list[dict[str, Any]](), set[bytes]()
        while commit is not None and commit in known and commit not in seen and len(out) < MAX_LINEAGE:
            seen.add(commit)
            out.append(await view.commit(known[commit]))
            commit = None if commit == self._baseline else known[commit].parent
        return web.json_response(out)

    async def leaves(self, request: web.Request, _agent: str) -> web.StreamResponse:
        most = limit(request, MAX_COMMITS, MAX_COMMITS)
        known = await self._known()
        parents = {k.parent for k in known.values()}
        leaves = [k for k in newest_first(known) if k.commit not in parents][:most]
        view = self._view()
        return web.json_response([await view.commit(k) for k in leaves])

    async def diff(self, request: web.Request, _agent: str) -> web.StreamResponse:
        known = await self._known()
        a = await self._resolve(request.match_info["a"], known, in_repo=True)
        b = await self._resolve(request.match_info["b"], known, in_repo=True)
        text = await gitrepo.diff(self.backend.repo, a, b)
        return web.Response(text=text, content_type="text/plain", charset="utf-8", headers=self._flag(known, a, b))

    def _view(self) -> CommitView:
        return CommitView(self.backend, self.notes, self.backend.ledger.state, self.mine)

    # -- message board

    async def create_channel(self, request: web.Request, _agent: str) -> web.StreamResponse:
        data = await read_json(request)
        name = text_field(data, "name", max_chars=MAX_SHORT_TEXT)
        description = text_field(data, "description", max_chars=MAX_SHORT_TEXT, required=False)
        try:
            Post(channel=name, text="", reply_to=None)  # the ledger's own rule for channel names
        except InvalidEntry:
            raise ApiError("a channel name is 1-64 lowercase letters, digits, '.', '_' or '-'") from None
        await self.index.sync(self.backend.ledger)
        if name in self.notes.channels or name in self.index.channels:
            raise Conflict(f"channel {name!r} exists")
        if not self.notes.has_room_for_channel():
            raise ApiError("this node has created as many channels as it keeps")
        channel = Channel(name, description, int(time.time() * 1000))
        await self.notes.add_channel(channel)
        return web.json_response(self._channel_json(name), status=201)

    async def channels(self, request: web.Request, _agent: str) -> web.StreamResponse:
        await self.index.sync(self.backend.ledger)
        names = sorted(set(self.notes.channels) | set(self.index.channels))
        return web.json_response([self._channel_json(n) for n in names])

    def _channel_json(self, name: str) -> dict[str, Any]:
        local = self.notes.channels.get(name)
        return {"name": name, "description": local.description if local else "",
                "created_at": iso_time(local.created_ms) if local else None, "posts": self.index.counts[name]}

    async def _channel(self, request: web.Request) -> str:
        name = request.match_info["name"]
        await self.index.sync(self.backend.ledger)
        if name not in self.notes.channels and name not in self.index.channels:
            raise NotFound(f"no channel {echo(name)}: create it with POST /api/channels")
        return name

    async def post(self, request: web.Request, agent: str) -> web.StreamResponse:
        channel = await self._channel(request)
        data = await read_json(request)
        # UTF-8 bytes too: a post's entry must stay far below the ledger's payload limit
        content = text_field(data, "content", max_chars=MAX_TEXT, max_bytes=MAX_TEXT)
        reply_to = await self._reply_to(data.get("parent_id"))
        entry = await self.backend.publish(Post(channel=channel, text=content, reply_to=reply_to))
        await self.notes.label_post(entry.id, agent)
        post = IndexedPost(entry.id, entry.author, entry.time_ms, channel, content, reply_to, parse_result(content))
        return web.json_response(self._post_json(post), status=201)

    async def _reply_to(self, parent_id: Any) -> bytes | None:
        if parent_id is None:
            return None
        parent = await self.backend.ledger.get(entry_id(parent_id, "parent_id"))
        if parent is None or not isinstance(parent.body, Post):
            raise NotFound(f"no post {parent_id}")
        return parent.id

    async def posts(self, request: web.Request, _agent: str) -> web.StreamResponse:
        channel = await self._channel(request)
        most = limit(request, DEFAULT_POSTS, MAX_POSTS)
        return web.json_response([self._post_json(p) for p in self.index.posts(channel, most)])

    def _post_json(self, post: IndexedPost) -> dict[str, Any]:
        author = node_id_text(post.author)
        mine = not untrusted([post.author], self.mine)
        return {
            "id": post.id.hex(), "channel": post.channel, "author": author,
            "agent_id": self.notes.post_agents.get(post.id.hex()) if mine else None,
            "content": post.text, "created_at": iso_time(post.time_ms),
            "parent_id": post.reply_to.hex() if post.reply_to else None, "untrusted": not mine,
            "result": post.result.to_json() if post.result else None,
        }


async def _unpack(repo: gitrepo.Repository, pack: bytes) -> dict[bytes, RawObject]:
    """Every object of a pushed pack, deltas resolved (thin ones against this repository)."""
    limits = PackLimits(MAX_BUNDLE_OBJECTS, MAX_INFLATED_BYTES, MAX_INFLATED_BYTES)
    entries = await asyncio.to_thread(parse_pack, pack, limits)
    resolution = await asyncio.to_thread(resolve_pack, entries, {}, limits)
    if resolution.missing_bases:
        here = await gitrepo.read_objects(repo, resolution.missing_bases)
        resolution = await asyncio.to_thread(resolve_pack, entries, here, limits)
    if resolution.missing_bases or len(resolution.objects) != len(entries):
        raise BundleRejected("the bundle's deltas need objects this node does not have")
    return {o.oid: o for o in resolution.objects}


AGENTHUB_KEY = web.AppKey("agenthub", AgentHub)
