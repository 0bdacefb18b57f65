"""The node API's credits-market routes: list, show, buy (submit) and cancel jobs. Buying spends
the operator's credits, so `nodeapi.add_routes` mounts the POSTs for the operator only.

node/market/loop.py runs the market; node/market/policy.py checks requests and shapes rows.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from ledger.bodies import MAX_LIST, MAX_SHORT_TEXT, Receipt, Settle
from ledger.fold import State
from ledger.keys import node_id_text
from swarm import gitrepo

from node.contract import MAX_TRAIN_PY_BYTES
from node.market.policy import BadJobRequest, JobRequest, job_row, job_rows
from node.web.backend import MarketPort
from node.web.common import ENTRY_ID_HEX, ApiError, Unavailable, answer, limit, match_prefix, read_json, str_list, text_field
from node.web.nodeapi_base import DEFAULT_LIMIT, MAX_LIMIT, NodeContext

JOB_EXPIRY_S = 3600                  # a job's default expiry, from submission


class MarketRoutes:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def market(self) -> MarketPort:
        found = self.ctx.backend.market
        if found is None:
            raise Unavailable("this node runs no credits market")
        return found

    def job_view(self, state: State, job_id: bytes) -> dict[str, Any]:
        row = job_row(state, job_id)
        payer, executor = row["payer"], row["executor"]
        mine = self.ctx.mine
        return {**row, "payer": node_id_text(payer) if isinstance(payer, bytes) else None,
                "executor": node_id_text(executor) if isinstance(executor, bytes) else None,
                "mine": payer in mine, "executor_mine": executor in mine}

    def job_id(self, text: str, state: State) -> bytes:
        return match_prefix(text, state.jobs, "job", ENTRY_ID_HEX)

    async def jobs(self, request: web.Request, agent: str) -> web.Response:
        state = self.ctx.backend.ledger.state
        rows = job_rows(state, limit(request, DEFAULT_LIMIT, MAX_LIMIT))
        return answer({"jobs": [self.job_view(state, bytes.fromhex(str(r["job"]))) for r in rows]})

    async def job(self, request: web.Request, agent: str) -> web.Response:
        ledger = self.ctx.backend.ledger
        state = ledger.state
        job_id = self.job_id(request.match_info["id"], state)
        view = self.job_view(state, job_id)
        info = state.jobs[job_id]
        for key, ref in (("receipt", info.receipt), ("settle", info.settle)):
            entry = await ledger.get(ref) if ref is not None else None
            body = entry.body if entry is not None else None
            if isinstance(body, Receipt) and entry is not None:
                view["receipt"] = {"id": entry.id.hex(), "status": body.status, "gpu_s": body.gpu_s,
                                   "metrics": body.metrics, "artifacts": [a.hex() for a in body.artifacts],
                                   "log_tail": body.log_tail, **self.ctx.author(entry.author)}
            elif isinstance(body, Settle) and entry is not None:
                view["settle"] = {"id": entry.id.hex(), "outcome": body.outcome, "amount_ucr": body.amount,
                                  "reason": body.reason, **self.ctx.author(entry.author)}
            elif key == "receipt":
                view["receipt"] = None
        return answer(view)

    async def _job_commit(self, data: dict[str, Any], agent: str) -> bytes:
        """The commit a job runs: named, or a train.py committed on the best commit we have."""
        ctx = self.ctx
        repo = ctx.backend.repo
        if isinstance(data.get("commit"), str) and data["commit"]:
            commit = await ctx.resolve(data["commit"])
            if not await gitrepo.has_commit(repo, commit):
                raise ApiError(f"commit {commit.hex()} is not in this node's repository")
            return commit
        source = text_field(data, "train_py", max_chars=MAX_TRAIN_PY_BYTES, max_bytes=MAX_TRAIN_PY_BYTES)
        parent = ctx.best_commit(await ctx.state(), ctx.default_class())
        if not await gitrepo.has_commit(repo, parent):
            parent = ctx.baseline  # the best is another node's, not fetched here
        return await ctx.commit_train_py(parent, source, f"job by {agent}", agent)

    async def submit_job(self, request: web.Request, agent: str) -> web.Response:
        ctx = self.ctx
        market = self.market()
        data = await read_json(request)
        commit = await self._job_commit(data, agent)
        numbers = {}
        for name, default in (("max_gpu_s", None), ("price_ucr_per_gpu_s", None), ("expires_s", JOB_EXPIRY_S)):
            value = data.get(name, default)
            if type(value) is not int:
                raise ApiError(f"{name} must be a whole number")
            numbers[name] = value
        # the ledger's Job checks the names and the count of args against its own limits
        job_type = text_field({"job_type": data.get("job_type", "train")}, "job_type", max_chars=MAX_SHORT_TEXT)
        platform_class = text_field({"platform_class": data.get("platform_class") or ctx.default_class()},
                                    "platform_class", max_chars=MAX_SHORT_TEXT)
        args = str_list(data, "args", max_items=MAX_LIST, max_chars=MAX_SHORT_TEXT)
        try:
            bundle = await market.keep_bundle(commit, ctx.baseline)
            entry = await market.submit(JobRequest(
                job_type=job_type, commit=commit, bundle=bundle, args=tuple(args), platform_class=platform_class,
                max_gpu_s=numbers["max_gpu_s"], price_ucr_per_gpu_s=numbers["price_ucr_per_gpu_s"],
                expires_s=numbers["expires_s"]))
        except BadJobRequest as exc:
            raise ApiError(str(exc)) from None
        return answer(self.job_view(ctx.backend.ledger.state, entry.id), 202)

    async def cancel_job(self, request: web.Request, agent: str) -> web.Response:
        market = self.market()
        job_id = self.job_id(request.match_info["id"], self.ctx.backend.ledger.state)
        try:
            await market.cancel(job_id)
        except BadJobRequest as exc:
            raise ApiError(str(exc)) from None
        return answer(self.job_view(self.ctx.backend.ledger.state, job_id))
