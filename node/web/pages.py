"""The dashboard's HTML: pure functions from the view model (node/web/views.py) to markup.

Every string reaches HTML through `_e` (html.escape); links are paths the view model built. No
IO, no Hub: node/web/dashboard.py passes what a page shows.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote

from node.web import views

NODE_ID_SHOWN_CHARS = 12


@dataclass(frozen=True, slots=True)
class Heading:
    """What every page's header names: the swarm and this node."""

    swarm: str
    node_id: str


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _table(table_id: str, table: dict[str, Any]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in table["columns"])
    rows = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table["rows"])
    if not rows:  # the script writes the same placeholder
        rows = f'<tr><td class="empty" colspan="{max(1, len(table["columns"]))}">none yet</td></tr>'
    return f'<div class="scroll"><table id="{_e(table_id)}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _cell(c: dict[str, str]) -> str:
    href = c.get("href")
    inner = f'<a href="{_e(href)}">{_e(c["text"])}</a>' if href and href.startswith("/") else _e(c["text"])
    return f"<td>{inner}</td>"


def _item(item: dict[str, Any]) -> str:
    text = _e(item["text"])
    href = item.get("href")
    body = f'<a href="{_e(href)}">{text}</a>' if href else text
    return (f'<li data-row="{int(item["row"])}" data-kind="{_e(item["kind"])}"><time>{_e(item["time"])}</time> '
            f'<span class="kind k-{_e(item["kind"])}">{_e(item["kind"])}</span> <span class="text">{body}</span></li>')


def _page(title: str, body: str, attrs: str = "") -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            "<meta name=\"color-scheme\" content=\"light dark\">"
            f"<title>{_e(title)}</title><link rel=\"stylesheet\" href=\"/dashboard/static/dashboard.css\">"
            "<link rel=\"icon\" href=\"/dashboard/static/favicon.svg\" type=\"image/svg+xml\">"
            "<script src=\"/dashboard/static/dashboard.js\" defer></script></head>"
            f"<body{attrs}>{body}</body></html>")


def _header(head: Heading, live: bool) -> str:
    status = '<span id="live" class="live">connecting…</span>' if live else ""
    return (f'<header><h1><a href="/">autoswarm</a></h1><span class="sub">swarm {_e(head.swarm)} · node '
            f'{_e(head.node_id[:NODE_ID_SHOWN_CHARS])}</span>{status}</header>')


def render_index(head: Heading, summary: dict[str, Any], row: int, feed: Iterable[dict[str, Any]],
                 credit_feed: Iterable[dict[str, Any]]) -> str:
    """The first page: the view model's summary and the feeds (oldest first), as of ledger `row`."""
    stats = summary["stats"]
    cards = "".join(f'<div><dt>{_e(label)}</dt><dd id="s-{_e(key)}">{_e(stats[key])}</dd></div>'
                    for key, label in views.STATS)
    tables = summary["tables"]
    charts_html = {
        kind: "".join(
            f'<img data-chart="/dashboard/chart/{kind}/{quote(cls, safe="")}.svg" '
            f'src="/dashboard/chart/{kind}/{quote(cls, safe="")}.svg?v={row}" '
            f'alt="{_e(kind)} chart for {_e(cls)}" width="640" height="260">'
            for cls in summary["classes"])
        for kind in ("progress", "residuals")
    }
    feed_html = "".join(_item(i) for i in reversed(list(feed)))
    credit_html = "".join(_item(i) for i in reversed(list(credit_feed)))
    c = summary["credits"]
    body = (
        _header(head, live=True) + "<main>"
        f'<section class="wide"><dl class="stats">{cards}</dl></section>'
        f'<section><h2>Best val_bpb per class</h2>{_table("t-best", tables["best"])}</section>'
        f'<section><h2>Progress</h2><p class="note">every experiment (dots: claimed), the running best '
        f'(line: verified), records (large dots)</p>{charts_html["progress"]}</section>'
        f'<section class="tall"><h2>Research feed</h2><ol id="feed" class="feed">{feed_html}</ol></section>'
        f'<section><h2>Path to SOTA</h2>{_table("t-sota", tables["sota"])}</section>'
        f'<section><h2>Verification residuals</h2><p class="note">verifier minus claimant; median (line) and '
        f'5–95% range (band)</p>{charts_html["residuals"]}</section>'
        f'<section><h2>Credits</h2><p>this node: <strong id="c-balance">{_e(c["balance"])}</strong> · minted in '
        f'the swarm: <span id="c-minted">{_e(c["minted"])}</span></p><h3>Top earners</h3>'
        f'{_table("t-earners", tables["earners"])}<h3>History</h3>'
        f'<ol id="credit-feed" class="feed">{credit_html}</ol></section>'
        f'<section class="wide"><h2>Jobs</h2><p class="note">the credits market: GPU time bought with credits '
        f'(price per GPU-second; held in escrow until settled)</p>{_table("t-jobs", tables["jobs"])}</section>'
        f'<section><h2>Workers</h2>{_table("t-workers", tables["workers"])}</section>'
        f'<section><h2>Peers</h2>{_table("t-peers", tables["peers"])}</section>'
        "</main>"
    )
    return _page(f"autoswarm · {head.swarm}", body, f' data-page="index" data-row="{row}"')


def _diff_html(diff: str) -> str:
    """The unified diff, escaped, one span per line so added and removed lines can be coloured."""
    out = []
    for line in diff.splitlines(keepends=True):
        kind = ("file" if line.startswith(("+++", "---")) else "add" if line.startswith("+")
                else "del" if line.startswith("-") else "hunk" if line.startswith("@@") else "ctx")
        out.append(f'<span class="{kind}">{_e(line)}</span>')
    return "".join(out)


def render_experiment(head: Heading, view: dict[str, Any], diff: str) -> str:
    fields = "".join(f"<dt>{_e(f['label'])}</dt><dd>{_e(f['text'])}</dd>" for f in view["fields"])
    parent = f'<p><a href="{_e(view["parent_href"])}">parent experiment</a></p>' if view["parent_href"] else ""
    body = (
        _header(head, live=False) + "<main>"
        f'<section class="wide"><h2 id="title">{_e(view["title"])}</h2><dl class="fields">{fields}</dl>{parent}</section>'
        f'<section><h2>Loss curve</h2><img src="/experiment/{_e(view["id"])}/loss.svg" alt="loss curve" '
        f'width="640" height="260"></section>'
        f'<section><h2>Verifications</h2>{_table("t-verifications", view["verifications"])}</section>'
        f'<section class="wide"><h2>Message and log</h2><p class="note">untrusted text from the claim\'s author, '
        f'shown as text</p><pre id="message" class="untrusted">{_e(view["message"] or "(none)")}</pre>'
        f'<pre id="summary" class="untrusted">{_e(view["diff_summary"] or "(no diff summary)")}</pre></section>'
        f'<section class="wide"><h2>Diff</h2><pre id="diff" class="diff">{_diff_html(diff)}</pre></section>'
        "</main>"
    )
    return _page(f"experiment {view['title']}", body, ' data-page="experiment"')
