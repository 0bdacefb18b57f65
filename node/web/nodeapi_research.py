"""The node API's research routes: status, frontier, leaderboard, one commit, diffs, files, the
claim history, and submitting a train.py (nodeapi.py lists them).

Knows the node only through `NodeContext` and its Backend.
"""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ledger.bodies import MAX_TEXT
from ledger.fold import leaderboard
from ledger.keys import node_id_text
from swarm import gitrepo
from swarm.errors import UnknownObject

from node.contract import MAX_TRAIN_PY_BYTES, UNTRUSTED_HEADER
from node.research.history import ClaimRecord
from node.research.program import summarize
from node.web import views
from node.web.common import ApiError, NotFound, answer, limit, read_json, text_field
from node.web.nodeapi_base import (DEFAULT_LIMIT, MAX_LIMIT, TOP_N, NodeContext, balances, submission,
                                   verify_counts)

MAX_QUERY_CHARS = 200                # of a history search


def _claimed(r: ClaimRecord) -> tuple[float, bytes]:
    return (r.body.val_bpb if r.body.val_bpb is not None else float("inf"), r.id)


class ResearchRoutes:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    async def status(self, request: web.Request, agent: str) -> web.Response:
        ctx = self.ctx
        state = await ctx.state()
        signed = ctx.backend.ledger.spec
        spec = signed.spec
        return answer({
            "node_id": ctx.backend.node_id,
            "identities": sorted(node_id_text(k) for k in ctx.mine),
            "agent": agent,
            "node": ctx.backend.snapshot(),
            "swarm": {"name": spec.name, "swarm_id": signed.swarm_id.hex(), "time_budget_s": spec.time_budget_s,
                      "metric": spec.metric, "baseline_commit": spec.baseline_commit.hex(),
                      "platform_classes": spec.platform_classes, "allowed_files": spec.allowed_files},
            "platform_classes": list(ctx.backend.platform_classes),
            "entries": await ctx.backend.ledger.count(),
            "classes": {cls: views.class_summary(state, cls) for cls in spec.platform_classes},
            "records": len(state.records),
            "balances": balances(state, ctx.mine),
            "queued": [submission(s) for s in ctx.backend.queued()],
        })

    async def frontier(self, request: web.Request, agent: str) -> web.Response:
        ctx = self.ctx
        state = await ctx.state()
        history = ctx.backend.history
        counts = verify_counts(state)
        built_on = {r.body.parent for r in history.claims.values() if r.body.parent is not None}
        out: dict[str, Any] = {}
        for cls in ctx.classes():
            best = views.best_record(state, cls)
            ok = sorted((r for r in history.of_class(cls) if r.body.val_bpb is not None), key=_claimed)
            promising = [r for r in ok if r.id not in state.verified and (best is None or _claimed(r)[0] < best.value)]
            leaves: dict[bytes, ClaimRecord] = {}
            listed = {r.body.commit for r in promising[:TOP_N]}
            for r in ok:
                if r.body.commit not in built_on and r.body.commit not in listed:
                    leaves.setdefault(r.body.commit, r)
            out[cls] = {
                "best": None if best is None else {
                    "commit": best.commit.hex(), "claim": best.claim.hex(), "val_bpb": best.value, "record": best.n,
                    "prev_val_bpb": best.prev, **views.record_evidence(best), **ctx.author(best.author)},
                "promising": [ctx.claim_view(state, r, counts) for r in promising[:TOP_N]],
                "leaves": [ctx.claim_view(state, r, counts) for r in list(leaves.values())[:TOP_N]],
            }
        return answer({"baseline_commit": ctx.baseline.hex(), "classes": out,
                       "queued": [submission(s) for s in ctx.backend.queued()]})

    async def leaderboard(self, request: web.Request, agent: str) -> web.Response:
        ctx = self.ctx
        state = await ctx.state()
        cls = ctx.check_class(request.query.get("class") or ctx.default_class())
        counts = verify_counts(state)
        rows = []
        for rank, (cid, value) in enumerate(leaderboard(state, cls)[:limit(request, DEFAULT_LIMIT, MAX_LIMIT)], 1):
            record = ctx.backend.history.claims.get(cid)
            if record is not None:
                rows.append({"rank": rank, "value": value, **ctx.claim_view(state, record, counts)})
        return answer({"platform_class": cls, "best_val_bpb": state.best.get(cls), "rows": rows})

    async def commit(self, request: web.Request, agent: str) -> web.Response:
        ctx = self.ctx
        commit = await ctx.resolve(request.match_info["hash"])
        state = await ctx.state()
        history = ctx.backend.history
        try:
            info: gitrepo.CommitInfo | None = await gitrepo.commit_info(ctx.backend.repo, commit)
        except UnknownObject:
            info = None
        records = [history.claims[i] for i in history.by_commit.get(commit, [])]
        if info is None and not records:
            raise NotFound(f"commit {commit.hex()} is neither in this node's repository nor claimed")
        counts = verify_counts(state)
        ids = {r.id for r in records}
        parent = (info.parents[0] if info is not None and info.parents
                  else records[0].body.parent if records else None)
        return answer({
            "commit": commit.hex(), "parent": parent.hex() if parent else None,
            "in_repository": info is not None,
            "git": None if info is None else {"author": info.author, "time_s": info.time_s, "message": info.message,
                                               "untrusted": ctx.from_others(commit)},
            "diff_summary": await self.summary(commit, parent, records),
            "claims": [ctx.claim_view(state, r, counts) for r in sorted(records, key=lambda r: r.time_ms)],
            "verifications": [
                {"verify": vid.hex(), "claim": v.claim.hex(), "platform_class": v.platform_class,
                 "status": "ok" if v.value is not None else "failed", "val_bpb": v.value,
                 **ctx.author(v.author)}
                for vid, v in state.verifies.items() if v.claim in ids],
            "records": [{"platform_class": r.platform_class, "n": r.n, "claim": r.claim.hex(), "val_bpb": r.value,
                         "prev_val_bpb": r.prev, **views.record_evidence(r), **ctx.author(r.author)}
                        for r in state.records if r.commit == commit],
            "children": sorted({r.body.commit.hex() for r in history.claims.values() if r.body.parent == commit}),
            "queued": any(s.commit == commit for s in ctx.backend.queued()),
        })

    async def summary(self, commit: bytes, parent: bytes | None, records: list[ClaimRecord]) -> dict[str, Any] | None:
        """What changed against the parent, computed from git when both files are here."""
        repo = self.ctx.backend.repo
        if parent is not None:
            try:
                old = await gitrepo.read_file(repo, parent, "train.py")
                new = await gitrepo.read_file(repo, commit, "train.py")
            except UnknownObject:
                old = new = b""
            if old and new and max(len(old), len(new)) <= MAX_TRAIN_PY_BYTES:
                try:
                    text = await asyncio.to_thread(
                        summarize, old.decode("utf-8", "replace"), new.decode("utf-8", "replace"))
                    return {"text": text, "untrusted": False}  # our own parser's words about the code
                except (RecursionError, MemoryError):
                    pass  # a pathological program: fall back to what a claim said
        for r in records:
            if r.body.diff_summary:
                return {"text": r.body.diff_summary, **self.ctx.author(r.author)}
        return None

    async def diff(self, request: web.Request, agent: str) -> web.Response:
        ctx = self.ctx
        a = await ctx.resolve(request.match_info["a"])
        b = await ctx.resolve(request.match_info["b"])
        text = await gitrepo.diff(ctx.backend.repo, a, b)
        await ctx.state()
        flagged = ctx.from_others(a) or ctx.from_others(b)
        return web.Response(text=text, content_type="text/plain",
                            headers={UNTRUSTED_HEADER: "true" if flagged else "false"})

    async def file(self, request: web.Request, agent: str) -> web.Response:
        ctx = self.ctx
        commit = await ctx.resolve(request.match_info["hash"])
        data = await gitrepo.read_file(ctx.backend.repo, commit, "train.py")
        await ctx.state()
        return web.Response(body=data, content_type="text/plain", charset="utf-8",
                            headers={UNTRUSTED_HEADER: "true" if ctx.from_others(commit) else "false"})

    async def history(self, request: web.Request, agent: str) -> web.Response:
        ctx = self.ctx
        state = await ctx.state()
        q = text_field(request.query, "q", max_chars=MAX_QUERY_CHARS, required=False).strip().lower()
        most = limit(request, DEFAULT_LIMIT, MAX_LIMIT)
        counts = verify_counts(state)
        hits: list[ClaimRecord] = []
        for r in sorted(ctx.backend.history.claims.values(), key=lambda r: (r.time_ms, r.seq, r.id), reverse=True):
            b = r.body
            if not q or b.commit.hex().startswith(q) or q in b.message.lower() or q in b.diff_summary.lower():
                hits.append(r)
                if len(hits) >= most:
                    break
        return answer({"q": q, "claims": [ctx.claim_view(state, r, counts) for r in hits]})

    async def submit(self, request: web.Request, agent: str) -> web.Response:
        ctx = self.ctx
        data = await read_json(request)
        source = text_field(data, "train_py", max_chars=MAX_TRAIN_PY_BYTES, max_bytes=MAX_TRAIN_PY_BYTES)
        message = text_field(data, "message", max_chars=MAX_TEXT, required=False)  # a claim's message
        parent_text = data.get("parent")
        if parent_text is not None and not isinstance(parent_text, str):
            raise ApiError("parent must be a commit hash")
        state = await ctx.state()
        parent = await ctx.resolve(parent_text) if parent_text else ctx.best_commit(state, ctx.default_class())
        if not await gitrepo.has_commit(ctx.backend.repo, parent):
            raise ApiError(f"parent {parent.hex()} is not in this node's repository (push or fetch it first)")
        commit = await ctx.commit_train_py(parent, source, message.strip() or f"edit by {agent}", agent)
        item = await ctx.backend.submit(commit, agent)
        return answer({**submission(item), "queued": len(ctx.backend.queued())}, 202)
