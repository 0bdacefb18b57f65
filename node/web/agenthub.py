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
import collections
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import HttpVersion11, web

from ledger.bodies import MAX_SHORT_TEXT, MAX_TEXT, Post
from ledger.errors import InvalidEntry, LedgerError
from ledger.fold import State
from ledger.keys import node_id_text
from swarm import gitrepo
from swarm.bundles import MAX_BUNDLE_BYTES, MAX_BUNDLE_OBJECTS, MAX_INFLATED_BYTES, apply_bundle, make_bundle
from swarm.errors import BundleRejected, SwarmError, UnknownObject
from swarm.gitobjects import BLOB, COMMIT, TREE, RawObject, parse_commit
from swarm.packfile import PackLimits, parse_bundle_header, parse_pack, resolve_pack, write_bundle, write_pack

from node.web.agents import OPERATOR, AgentRegistry, BadAgent
from node.web.backend import Backend, Submission
from node.errors import AlreadySubmitted, BadSubmission, NodeError, QueueFull
from node.research.history import ClaimRecord
from node.web.posts import Channel, HubNotes, IndexedPost, PostIndex, iso_time, parse_result

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 * 1024      # a request's JSON body; a post's content is at most MAX_POST_BYTES of it
READ_CHUNK_BYTES = 64 * 1024
MAX_POST_BYTES = MAX_TEXT       # UTF-8 bytes of a post: its entry stays far below the payload limit
DEFAULT_COMMITS, MAX_COMMITS = 20, 200
DEFAULT_POSTS, MAX_POSTS = 50, 200
MIN_PREFIX_DIGITS = 7
MAX_LINEAGE = 1000              # ancestors listed at most: claims could describe a very long chain
_HASH = re.compile(r"[0-9a-fA-F]{7,40}")
_ENTRY_ID = re.compile(r"[0-9a-f]{64}")


class ApiError(NodeError):
    """A request the API refuses; `status` is the HTTP status it answers with."""

    status = 400


class Unauthorized(ApiError):
    status = 401


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class TooLarge(ApiError):
    status = 413


Handler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application, backend: Backend, agents: AgentRegistry) -> None:
    """Mounts the AgentHub routes under /api on `app` (which the node creates and runs)."""
    hub = AgentHub(backend, agents, HubNotes.load(backend.home), PostIndex())
    route = hub.endpoint
    app.router.add_post("/api/register", route(hub.register, auth=False))
    app.router.add_route("POST", "/api/git/push", route(hub.push), expect_handler=_expect_bundle)
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


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _expect_bundle(request: web.Request) -> web.StreamResponse | None:
    # curl sends `Expect: 100-continue` before a large body: refuse an oversized one before it comes
    if request.content_length is not None and request.content_length > MAX_BUNDLE_BYTES:
        return _error(413, f"bundle of {request.content_length} bytes is over the limit of {MAX_BUNDLE_BYTES}")
    if request.version == HttpVersion11:
        if request.headers.get("Expect", "").lower() != "100-continue":
            return _error(417, "only Expect: 100-continue is understood")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim response is not part of the answer's size
    return None


async def _read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `max_bytes`."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise TooLarge(f"body of {request.content_length} bytes is over the limit of {max_bytes}")
    data = bytearray()
    async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
        data += chunk
        if len(data) > max_bytes:
            raise TooLarge(f"body is over the limit of {max_bytes} bytes")
    return bytes(data)


async def _read_json(request: web.Request) -> dict[str, Any]:
    raw = await _read_body(request, MAX_JSON_BYTES)
    try:
        data = json.loads(raw)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both are
        raise ApiError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise ApiError("the body must be a JSON object")
    return data


def _text_field(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise ApiError(f"{name!r} must be a string")
    return value


def _is_unicode(text: str) -> bool:
    """False for a lone surrogate (JSON's \\ud800), which no ledger entry can carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _limit(request: web.Request, default: int, most: int) -> int:
    text = request.query.get("limit", str(default))
    if not text.isdigit() or len(text) > 6:
        raise ApiError(f"limit must be a whole number from 1 to {most}")
    return max(1, min(int(text), most))


@dataclass(frozen=True, slots=True)
class Known:
    """A commit the swarm knows: claimed by some node, or queued here."""

    commit: bytes
    parent: bytes | None
    claims: tuple[ClaimRecord, ...]  # oldest first
    queued: Submission | None
    time_ms: int                     # of the first claim; 0 while only queued


def known_commits(claims: Mapping[bytes, ClaimRecord], queued: list[Submission]) -> dict[bytes, Known]:
    """Pure: every claimed or queued commit, with the parent its first claim names."""
    by_commit: dict[bytes, list[ClaimRecord]] = collections.defaultdict(list)
    for record in claims.values():
        by_commit[record.body.commit].append(record)
    known: dict[bytes, Known] = {}
    for commit, records in by_commit.items():
        records.sort(key=lambda r: (r.time_ms, r.id))
        known[commit] = Known(commit, records[0].body.parent, tuple(records), None, records[0].time_ms)
    for item in queued:
        if item.commit not in known:
            known[item.commit] = Known(item.commit, item.parent, (), item, 0)
    return known


def newest_first(known: Mapping[bytes, Known]) -> list[Known]:
    """Queued commits first (they have no claim yet), then by their first claim's time."""
    return sorted(known.values(), key=lambda k: (k.queued is not None, k.time_ms, k.commit), reverse=True)


class AgentHub:
    def __init__(self, backend: Backend, agents: AgentRegistry, notes: HubNotes, index: PostIndex) -> None:
        self.backend, self.agents, self.notes, self.index = backend, agents, notes, index
        self.me = backend.node_id

    # -- plumbing

    def endpoint(self, fn: Handler, *, auth: bool = True) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Wraps a handler: the bearer check, then every failure as one JSON error line."""
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                agent = ""
                if auth:
                    found = self.agents.authenticate(request.headers.get("Authorization"))
                    if found is None:
                        raise Unauthorized("missing or unknown key: send Authorization: Bearer <api_key> "
                                           "(POST /api/register gives one)")
                    agent = found
                return await fn(request, agent)
            except ApiError as exc:
                return _error(exc.status, str(exc))
            except BadSubmission as exc:
                return _error(409 if isinstance(exc, AlreadySubmitted) else 429 if isinstance(exc, QueueFull) else 400,
                              str(exc))
            except BundleRejected as exc:
                return _error(400, f"bundle rejected: {exc}")
            except UnknownObject as exc:
                return _error(404, str(exc))
            except InvalidEntry as exc:
                return _error(400, str(exc))
            except (SwarmError, LedgerError, NodeError) as exc:
                log.warning("agenthub %s %s: %s", request.method, request.path, exc)
                return _error(503, f"the node could not do this now: {exc}")
            except ConnectionError:
                raise  # the client went away: nobody to answer
            except Exception:
                log.exception("agenthub %s %s failed", request.method, request.path)
                return _error(500, "internal error; the node logged it")
        return handle

    async def _known(self) -> dict[bytes, Known]:
        await self.backend.history.sync(self.backend.ledger)
        return known_commits(self.backend.history.claims, self.backend.queued())

    @property
    def _baseline(self) -> bytes:
        return self.backend.ledger.spec.spec.baseline_commit

    async def _resolve(self, text: str, known: Mapping[bytes, Known], *, in_repo: bool = False) -> bytes:
        """A commit from a full hash or a unique prefix of a known commit's hash."""
        if not _HASH.fullmatch(text):
            raise ApiError(f"not a commit hash: give {MIN_PREFIX_DIGITS} to 40 hex digits")
        text = text.lower()
        if len(text) == 40:
            commit = bytes.fromhex(text)
            if commit in known or commit == self._baseline:
                return commit
            if in_repo and await gitrepo.has_commit(self.backend.repo, commit):
                return commit
            raise NotFound(f"commit {text} is not known here")
        matches = {c for c in (*known, self._baseline) if c.hex().startswith(text)}
        if not matches:
            raise NotFound(f"no known commit starts with {text}")
        if len(matches) > 1:
            raise ApiError(f"{text} is ambiguous ({len(matches)} commits): give more digits")
        return matches.pop()

    # -- agents

    async def register(self, request: web.Request, _agent: str) -> web.StreamResponse:
        name = _text_field(await _read_json(request), "id")
        if name == OPERATOR or name in self.agents.names():
            raise Conflict(f"agent id {name!r} is taken")
        try:
            key = self.agents.register(name)
        except BadAgent as exc:
            raise ApiError(str(exc)) from None
        return web.json_response({"id": name, "api_key": key}, status=201)

    # -- git

    async def push(self, request: web.Request, agent: str) -> web.StreamResponse:
        data = await _read_body(request, MAX_BUNDLE_BYTES)
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
            raise Conflict(f"commit {tip.hex()} is already {'queued' if known[tip].queued else 'claimed'}")
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

    async def fetch(self, request: web.Request, _agent: str) -> web.StreamResponse:
        commit = await self._resolve(request.match_info["hash"], await self._known(), in_repo=True)
        if not await gitrepo.has_commit(self.backend.repo, commit):
            raise NotFound(f"commit {commit.hex()} is claimed, but this node has not received it yet")
        data = await make_bundle(self.backend.repo, commit, have=[])
        return web.Response(body=data, content_type="application/octet-stream",
                            headers={"Content-Disposition": f'attachment; filename="{commit.hex()}.bundle"'})

    async def commits(self, request: web.Request, _agent: str) -> web.StreamResponse:
        limit = _limit(request, DEFAULT_COMMITS, MAX_COMMITS)
        known = await self._known()
        view = self._view()
        return web.json_response([await view.commit(k) for k in newest_first(known)[:limit]])

    async def commit(self, request: web.Request, _agent: str) -> web.StreamResponse:
        known = await self._known()
        commit = await self._resolve(request.match_info["hash"], known)
        view = self._view()
        if commit not in known:  # the baseline before its claim
            return web.json_response({"hash": commit.hex(), "parent_hash": None, "status": "baseline",
                                      "claims": [], "reported": [], "untrusted": False})
        out = await view.commit(known[commit])
        out["claims"] = [view.claim(r) for r in known[commit].claims]
        out["children"] = [c.hex() for c in _children(known).get(commit, [])]
        await self.index.sync(self.backend.ledger)
        out["reported"] = [self._post_json(p) for p in self.index.reports(commit.hex())]
        return web.json_response(out)

    async def children(self, request: web.Request, _agent: str) -> web.StreamResponse:
        known = await self._known()
        commit = await self._resolve(request.match_info["hash"], known)
        kids = _children(known).get(commit, [])[:_limit(request, MAX_COMMITS, MAX_COMMITS)]
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
        limit = _limit(request, MAX_COMMITS, MAX_COMMITS)
        known = await self._known()
        parents = {k.parent for k in known.values()}
        leaves = [k for k in newest_first(known) if k.commit not in parents][:limit]
        view = self._view()
        return web.json_response([await view.commit(k) for k in leaves])

    async def diff(self, request: web.Request, _agent: str) -> web.StreamResponse:
        known = await self._known()
        a = await self._resolve(request.match_info["a"], known, in_repo=True)
        b = await self._resolve(request.match_info["b"], known, in_repo=True)
        text = await gitrepo.diff(self.backend.repo, a, b)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    def _view(self) -> _CommitView:
        return _CommitView(self.backend, self.notes, self.backend.ledger.state)

    # -- message board

    async def create_channel(self, request: web.Request, _agent: str) -> web.StreamResponse:
        data = await _read_json(request)
        name = _text_field(data, "name")
        description = "" if data.get("description") is None else _text_field(data, "description")
        try:
            Post(channel=name, text="", reply_to=None)  # the ledger's own rule for channel names
        except InvalidEntry:
            raise ApiError("a channel name is 1-64 lowercase letters, digits, '.', '_' or '-'") from None
        if len(description) > MAX_SHORT_TEXT:
            raise ApiError(f"description is longer than {MAX_SHORT_TEXT} characters")
        if not _is_unicode(description):
            raise ApiError("description is not valid Unicode text")
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
            raise NotFound(f"no channel {name[:64]!r}: create it with POST /api/channels")
        return name

    async def post(self, request: web.Request, agent: str) -> web.StreamResponse:
        channel = await self._channel(request)
        data = await _read_json(request)
        content = _text_field(data, "content")
        if not content.strip():
            raise ApiError("content is empty")
        if not _is_unicode(content):
            raise ApiError("content is not valid Unicode text")
        size = len(content.encode("utf-8"))
        if size > MAX_POST_BYTES or len(content) > MAX_TEXT:
            raise TooLarge(f"content is {size} bytes; a post holds at most {MAX_POST_BYTES}")
        reply_to = await self._reply_to(data.get("parent_id"))
        entry = await self.backend.publish(Post(channel=channel, text=content, reply_to=reply_to))
        await self.notes.label_post(entry.id, agent)
        post = IndexedPost(entry.id, entry.author, entry.time_ms, channel, content, reply_to, parse_result(content))
        return web.json_response(self._post_json(post), status=201)

    async def _reply_to(self, parent_id: Any) -> bytes | None:
        if parent_id is None:
            return None
        if not isinstance(parent_id, str) or not _ENTRY_ID.fullmatch(parent_id):
            raise ApiError("parent_id must be a post id (64 lowercase hex digits)")
        parent = await self.backend.ledger.get(bytes.fromhex(parent_id))
        if parent is None or not isinstance(parent.body, Post):
            raise NotFound(f"no post {parent_id}")
        return parent.id

    async def posts(self, request: web.Request, _agent: str) -> web.StreamResponse:
        channel = await self._channel(request)
        limit = _limit(request, DEFAULT_POSTS, MAX_POSTS)
        return web.json_response([self._post_json(p) for p in self.index.posts(channel, limit)])

    def _post_json(self, post: IndexedPost) -> dict[str, Any]:
        author = node_id_text(post.author)
        mine = author == self.me
        return {
            "id": post.id.hex(), "channel": post.channel, "author": author,
            "agent_id": self.notes.post_agents.get(post.id.hex()) if mine else None,
            "content": post.text, "created_at": iso_time(post.time_ms),
            "parent_id": post.reply_to.hex() if post.reply_to else None, "untrusted": not mine,
            "result": post.result.to_json() if post.result else None,
        }


def _children(known: Mapping[bytes, Known]) -> dict[bytes, list[bytes]]:
    """Parent -> its known children, newest first."""
    out: dict[bytes, list[bytes]] = collections.defaultdict(list)
    for k in newest_first(known):
        if k.parent is not None:
            out[k.parent].append(k.commit)
    return out


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


class _CommitView:
    """One request's JSON of commits: the fold's numbers and labels read once."""

    def __init__(self, backend: Backend, notes: HubNotes, state: State) -> None:
        self.backend, self.notes, self.state = backend, notes, state
        self.verifications = collections.Counter(v.claim for v in state.verifies.values())

    def claim(self, record: ClaimRecord) -> dict[str, Any]:
        author = node_id_text(record.author)
        body = record.body
        return {
            "id": record.id.hex(), "author": author, "platform": body.platform_class, "status": body.status,
            "val_bpb": body.val_bpb, "verified_val_bpb": self.state.verified.get(record.id),
            "verifications": self.verifications[record.id], "created_at": iso_time(record.time_ms),
            "message": body.message, "untrusted": author != self.backend.node_id,
        }

    async def commit(self, known: Known) -> dict[str, Any]:
        hex_id = known.commit.hex()
        out: dict[str, Any] = {"hash": hex_id, "parent_hash": known.parent.hex() if known.parent else None}
        if known.queued is not None:
            item = known.queued
            created_s = await self._commit_time_s(known.commit)
            out.update(agent_id=item.agent, author=self.backend.node_id, message=item.message,
                       created_at=iso_time(created_s * 1000) if created_s is not None else None,
                       platform=None, status="queued", val_bpb=None, verified_val_bpb=None, verifications=0,
                       claims=0, position=item.position, untrusted=False)
            return out
        own = [r for r in known.claims if node_id_text(r.author) == self.backend.node_id]
        primary = (own or list(known.claims))[0]
        author = node_id_text(primary.author)
        mine = author == self.backend.node_id
        same = [r for r in known.claims if r.body.platform_class == primary.body.platform_class]
        verified = [self.state.verified[r.id] for r in same if r.id in self.state.verified]
        out.update(
            agent_id=(self.notes.commit_agents.get(hex_id) or author) if mine else author,
            author=author, message=primary.body.message, created_at=iso_time(primary.time_ms),
            platform=primary.body.platform_class, status=primary.body.status, val_bpb=primary.body.val_bpb,
            verified_val_bpb=min(verified) if verified else None,
            verifications=sum(self.verifications[r.id] for r in same), claims=len(known.claims),
            untrusted=not mine,
        )
        return out

    async def _commit_time_s(self, commit: bytes) -> int | None:
        try:
            return (await gitrepo.commit_info(self.backend.repo, commit)).time_s
        except SwarmError:
            return None
