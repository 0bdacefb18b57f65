"""The node API's shared memory and money: hypotheses and insights (read and published), and the
node's credits (nodeapi.py lists the routes).

Knows the node only through `NodeContext` and its Backend.
"""
from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ledger.bodies import MAX_LIST, MAX_SHORT_TEXT, MAX_TEXT, Hypothesis, Insight, Mint, Transfer
from ledger.entry import Entry
from ledger.keys import node_id_text
from ledger.store import Ledger

from node.web.agents import OPERATOR
from node.web.common import answer, entry_id, limit, read_json, str_list, text_field
from node.web.nodeapi_base import DEFAULT_LIMIT, MAX_LIMIT, TOP_N, NodeContext, balances, credits

KEPT_NOTES = 2000                    # hypotheses / insights / own credit events held in memory, newest
INDEX_PAGE = 1000                    # entries read per step when an index catches up with the file


class EntryWindow:
    """A bounded, oldest-first window over the entries of some kinds, kept up with the file by row."""

    def __init__(self, kinds: tuple[str, ...], keep: Callable[[Entry], bool], size: int = KEPT_NOTES) -> None:
        self.kinds, self.keep = kinds, keep
        self.entries: collections.deque[Entry] = collections.deque(maxlen=size)
        self._row = 0
        self._lock = asyncio.Lock()

    async def update(self, ledger: Ledger) -> list[Entry]:
        async with self._lock:
            while True:
                rows = await ledger.entries_since(self._row, self.kinds, INDEX_PAGE)
                self.entries.extend(e for _, e in rows if self.keep(e))
                if rows:
                    self._row = rows[-1][0]
                if len(rows) < INDEX_PAGE:
                    return list(self.entries)


class NotesRoutes:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.notes = {
            "hypotheses": EntryWindow(("hypothesis",), lambda e: True),
            "insights": EntryWindow(("insight",), lambda e: True),
        }
        self.money = EntryWindow(("mint", "transfer"), self._touches_me)

    def _touches_me(self, entry: Entry) -> bool:
        body, mine = entry.body, self.ctx.mine
        return (isinstance(body, (Mint, Transfer)) and body.to in mine) or (
            isinstance(body, Transfer) and entry.author in mine)

    async def list_notes(self, request: web.Request, agent: str) -> web.Response:
        which = request.match_info["which"]
        most = limit(request, DEFAULT_LIMIT, MAX_LIMIT)
        tag = request.query.get("tag")
        entries = await self.notes[which].update(self.ctx.backend.ledger)
        rows = []
        for entry in reversed(entries):
            if tag and not (isinstance(entry.body, Hypothesis) and tag in entry.body.tags):
                continue
            rows.append(self.note_view(entry))
            if len(rows) >= most:
                break
        return answer({which: rows})

    async def add_note(self, request: web.Request, agent: str) -> web.Response:
        which = request.match_info["which"]
        data = await read_json(request)
        label = "" if agent == OPERATOR else f"{agent}: "  # a label only: the node signs it
        # peers decode at most MAX_TEXT characters: a longer note would not travel
        text = label + text_field(data, "text", max_chars=MAX_TEXT - len(label))
        if which == "hypotheses":
            body: Hypothesis | Insight = Hypothesis(
                text=text, tags=str_list(data, "tags", max_items=MAX_LIST, max_chars=MAX_SHORT_TEXT))
        else:
            sources = [entry_id(s.strip().lower(), "a source")
                       for s in str_list(data, "sources", max_items=MAX_LIST, max_chars=MAX_SHORT_TEXT)]
            body = Insight(text=text, sources=sources)
        entry = await self.ctx.backend.publish(body)
        return answer(self.note_view(entry), 201)

    def note_view(self, entry: Entry) -> dict[str, Any]:
        body = entry.body
        view: dict[str, Any] = {"id": entry.id.hex(), "time_ms": entry.time_ms, **self.ctx.author(entry.author)}
        if isinstance(body, Hypothesis):
            view.update(text=body.text, tags=body.tags)
        elif isinstance(body, Insight):
            view.update(text=body.text, sources=[s.hex() for s in body.sources])
        return view

    async def credits(self, request: web.Request, agent: str) -> web.Response:
        ctx = self.ctx
        state = await ctx.state()
        most = limit(request, DEFAULT_LIMIT, MAX_LIMIT)
        events = []
        for entry in reversed(await self.money.update(ctx.backend.ledger)):
            body = entry.body
            if not isinstance(body, (Mint, Transfer)):
                continue
            delta = (body.amount if body.to in ctx.mine else 0) - (
                body.amount if isinstance(body, Transfer) and entry.author in ctx.mine else 0)
            verdict = state.verdicts.get(entry.id)
            events.append({
                "id": entry.id.hex(), "kind": entry.kind, "time_ms": entry.time_ms,
                "reason": body.reason if isinstance(body, Mint) else "transfer",
                "memo": body.memo if isinstance(body, Transfer) else "",
                "from": node_id_text(entry.author), "to": node_id_text(body.to), "amount_ucr": body.amount,
                "delta_ucr": delta, "delta_credits": credits(delta),
                "valid": verdict == "", "invalid_reason": verdict or None,
            })
            if len(events) >= most:
                break
        top = sorted(((k, v) for k, v in state.balances.items() if v > 0), key=lambda kv: (-kv[1], kv[0]))[:TOP_N]
        return answer({
            "balances": balances(state, ctx.mine),
            "total_ucr": sum(state.balances.get(k, 0) for k in ctx.mine),
            "history": events,
            "top": [{"node": node_id_text(k), "ucr": v, "credits": credits(v), "mine": k in ctx.mine}
                    for k, v in top],
            "total_minted_ucr": state.total_minted_ucr,
        })
