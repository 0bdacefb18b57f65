"""The dashboard's view model: pure functions from the ledger's state and entries to plain data.

Knows nothing about HTTP, HTML or the clock: the caller passes `now_ms`, the fold's State, the
claim bodies (node/research/history.py) and the node's live snapshot, and gets back JSON-able dicts that
the page renders as text. Every string in the output is *data*: the HTML side escapes it and
the page's script only ever sets `textContent`, so nothing here needs to be safe markup.

Shapes. A table is `{"columns": [str], "rows": [[cell]]}` and a cell `{"text": str}` with an
optional `"href"` (always a path this module built, never text from an entry). A feed item is
`{"row", "kind", "time", "text", "href"}`. The server renders both into the first page and the
script renders the same shapes from the live stream, so the two cannot drift apart.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ledger import credits, market
from ledger.bodies import UCR_PER_CREDIT, Admit, Claim, Fraud, Hypothesis, Insight, Mint, Post, Transfer, Verify
from ledger.entry import Entry
from ledger.fold import RecordRow, State
from ledger.keys import short_id

from node.research.history import ClaimRecord

HOUR_MS = 3_600_000
MAX_TEXT_CHARS = 300         # of untrusted text in one feed line or table cell
MAX_SOTA_ROWS = 100          # newest records shown on the path to SOTA
MAX_EARNERS = 10
MAX_PEERS = 100              # rows of the peers table
MAX_PEER_COLUMNS = 12
MAX_VERIFY_ROWS = 50         # on one experiment's page
FEED_KINDS = ("claim", "verify", "mint", "transfer", "post", "admit", "fraud", "hypothesis", "insight")

# (key, label) of the headline numbers, in page order
STATS = (
    ("experiments", "experiments"), ("completed", "completed"), ("failed", "failed"), ("running", "running"),
    ("queued", "queued"), ("workers_busy", "workers busy"), ("peers", "peers"), ("per_hour", "experiments / hour"),
    ("verified", "verified"), ("refuted", "refuted"), ("records", "records"), ("entries", "ledger entries"),
)

Cell = dict[str, str]
Table = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything one summary is computed from."""

    state: State
    claims: Mapping[bytes, ClaimRecord]   # claim id -> body, time (node/research/history.py)
    snapshot: Mapping[str, Any]           # Backend.snapshot(): workers, peers, counters
    queued: int                           # submissions waiting in this node's queue
    me: bytes | None                      # this node's research key, for "my balance"
    entries: int                          # rows in the ledger
    now_ms: int


# -- small formatters (text only)

def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """One line of at most `limit` characters: untrusted text never spans lines or screens."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def bpb(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def signed_bpb(value: float | None) -> str:
    return "—" if value is None else f"{value:+.4f}"


def record_evidence(record: RecordRow) -> dict[str, Any]:
    """A record's paired evidence for the APIs (ledger/evidence.py): its estimated gain over the best
    before it, that gain's 95% interval and the paired replays (seeds) behind it; None and 0 for a
    record the quorum rule made (a baseline)."""
    return {"gain_bpb": record.gain, "gain_low_bpb": record.low, "gain_high_bpb": record.high,
            "seeds": record.seeds}


def evidence_text(record: RecordRow) -> str:
    """`gain 0.0840 [0.0610, 0.1070], 5 seeds`, or "" for a record without paired evidence."""
    if record.gain is None:
        return ""
    interval = "" if record.low is None or record.high is None else f" [{bpb(record.low)}, {bpb(record.high)}]"
    return f"gain {bpb(record.gain)}{interval}, {record.seeds} seed{'s' if record.seeds != 1 else ''}"


def cr(ucr: int) -> str:
    return f"{ucr / UCR_PER_CREDIT:,.3f} cr"


def utc(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def who(key: bytes) -> str:
    return short_id(key) if len(key) == 32 else key.hex()[:12]


def experiment_href(claim_id: bytes) -> str:
    return f"/experiment/{claim_id.hex()}"


def cell(text: str, href: str | None = None) -> Cell:
    return {"text": text, "href": href} if href else {"text": text}


def _table(columns: Sequence[str], rows: list[list[Cell]]) -> Table:
    return {"columns": list(columns), "rows": rows}


# -- headline numbers

def _workers(snapshot: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    workers = snapshot.get("workers")
    return [w for w in workers if isinstance(w, Mapping)] if isinstance(workers, list) else []


def _busy(worker: Mapping[str, Any]) -> bool:
    return any(bool(worker.get(k)) for k in ("busy", "what", "running", "task"))


def _verifying(worker: Mapping[str, Any]) -> bool:
    # node/research/loop.py names a re-run "verify <claim>"; anything else a worker runs is an experiment
    if worker.get("kind") == "verify":
        return True
    return any(str(worker.get(k) or "").startswith("verify ") for k in ("running", "what", "task"))


def stats(inp: Inputs) -> dict[str, int]:
    state, workers = inp.state, _workers(inp.snapshot)
    completed = sum(1 for c in state.claims.values() if c.claimed is not None)
    since = inp.now_ms - HOUR_MS
    busy = [w for w in workers if _busy(w)]
    peers = inp.snapshot.get("peers")
    return {
        "experiments": len(state.claims),
        "completed": completed,
        "failed": len(state.claims) - completed,
        "running": sum(1 for w in busy if not _verifying(w)),
        "queued": inp.queued,
        "workers_busy": len(busy),
        "workers": len(workers),
        "peers": len(peers) if isinstance(peers, list) else 0,
        "per_hour": sum(1 for c in inp.claims.values() if since < c.time_ms <= inp.now_ms),
        "verified": len(state.verified),
        "refuted": len(state.refuted),
        "records": len(state.records),
        "entries": inp.entries,
    }


# -- tables

def classes(state: State) -> list[str]:
    """The spec's platform classes, then any other class a claim names, in a stable order."""
    seen = list(state.spec.platform_classes)
    extra = sorted({c.platform_class for c in state.claims.values()} - set(seen))
    return seen + extra


def best_record(state: State, cls: str) -> RecordRow | None:
    """The class's current record: the newest row of its path to SOTA (the fold keeps them in order)."""
    return next((r for r in reversed(state.records) if r.platform_class == cls), None)


def class_summary(state: State, cls: str) -> dict[str, Any]:
    """One platform class in numbers: its best, how many claims, verifications and records.

    The one summary `python -m node status`, the node's API and the dashboard all show."""
    best = best_record(state, cls)
    claims = [c for c in state.claims.values() if c.platform_class == cls]
    return {
        "best_val_bpb": state.best.get(cls),
        "best_commit": best.commit.hex() if best else None,
        "best_claim": best.claim.hex() if best else None,
        "records": sum(1 for r in state.records if r.platform_class == cls),
        "claims": len(claims),
        "claims_ok": sum(1 for c in claims if c.claimed is not None),
        "verified": sum(1 for cid in state.verified if cid in state.claims and state.claims[cid].platform_class == cls),
        "noise_bpb": state.spec.noise_bpb.get(cls),
    }


def _change(claims: Mapping[bytes, ClaimRecord], claim_id: bytes) -> str:
    record = claims.get(claim_id)
    if record is None:
        return ""
    return clip(record.body.message or record.body.diff_summary, 120)


def best_table(state: State) -> Table:
    rows = []
    for cls in classes(state):
        last, numbers = best_record(state, cls), class_summary(state, cls)
        rows.append([
            cell(cls), cell(bpb(numbers["best_val_bpb"])),
            cell(last.commit.hex()[:10], experiment_href(last.claim)) if last else cell("—"),
            cell(who(last.author)) if last else cell("—"),
            cell(str(numbers["records"])), cell(str(numbers["claims"])), cell(bpb(numbers["noise_bpb"])),
        ])
    return _table(("class", "best val_bpb", "commit", "author", "records", "experiments", "noise"), rows)


def sota_table(state: State, claims: Mapping[bytes, ClaimRecord]) -> Table:
    rows = []
    for r in reversed(state.records[-MAX_SOTA_ROWS:]):
        delta = None if r.prev is None else r.value - r.prev
        rows.append([
            cell(r.platform_class), cell(f"#{r.n}"), cell(bpb(r.value), experiment_href(r.claim)),
            cell(signed_bpb(delta)), cell(_change(claims, r.claim)), cell(who(r.author)),
            cell(str(len(state.measured.get(r.claim, {})))), cell(evidence_text(r) or "quorum"),
        ])
    return _table(("class", "record", "val_bpb", "delta", "change", "author", "verifications", "evidence"), rows)


def earners_table(state: State) -> Table:
    top = sorted(((v, k) for k, v in state.balances.items() if v > 0), key=lambda p: (-p[0], p[1]))[:MAX_EARNERS]
    return _table(("node", "balance"), [[cell(who(k)), cell(cr(v))] for v, k in top])


MAX_JOB_ROWS = 50           # newest jobs of the credits market


def jobs_table(state: State) -> Table:
    """The credits market's jobs, newest first: open, running and settled, with what each cost."""
    rows = []
    for job_id in sorted(state.jobs, key=lambda j: (state.jobs[j].time_ms, j), reverse=True)[:MAX_JOB_ROWS]:
        info = state.jobs[job_id]
        escrow = state.escrows.get(info.payment) if info.payment is not None else None
        offer = state.offers.get(escrow.offer) if escrow is not None else None
        receipt = state.receipts.get(info.receipt) if info.receipt is not None else None
        if info.status == "settled":
            paid, _ = market.settle_amount(state, job_id)
            outcome = f"paid {cr(paid)}"
        elif info.status == "refunded":
            outcome = "refunded"
        else:
            outcome = info.status if info.status == "cancelled" else "—"
        rows.append([
            cell(job_id.hex()[:12]), cell(info.status), cell(who(info.author)),
            cell(who(escrow.executor) if escrow is not None else "—"),
            cell(f"{offer.price_ucr_per_gpu_s if offer else info.job.price_ucr_per_gpu_s} ucr/GPU-s"),
            cell(str(info.job.max_gpu_s)), cell(f"{receipt.gpu_s:.1f}" if receipt is not None else "—"),
            cell(outcome),
        ])
    return _table(("job", "status", "payer", "executor", "price", "max GPU-s", "GPU-s used", "outcome"), rows)


# the peer counters (swarm/stats.py) worth a column, in this order; others follow while there is room
PEER_COLUMNS = ("node", "addr", "rtt_ms", "entries_in", "entries_out", "duplicates_in", "pending_in", "bytes_in",
                "bytes_out", "dropped_out", "score", "rejects")
_NODE_ID_CHARS = 54


def _plain(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else str(value)
    if isinstance(value, str) and len(value) == _NODE_ID_CHARS and value.startswith("as"):
        return value[:12]  # a node id, shown as everywhere else on the page
    return clip(str(value), 80)


def dicts_table(items: Any, limit: int, prefer: Sequence[str] = ()) -> Table:
    """Any list of flat dicts (peers, workers) as a table of text; unknown shapes become empty.

    Columns are the `prefer`red keys that occur, then other keys in order of appearance, at most
    MAX_PEER_COLUMNS."""
    rows_in = [i for i in items if isinstance(i, Mapping)][:limit] if isinstance(items, list) else []
    columns = [c for c in prefer if any(c in item for item in rows_in)][:MAX_PEER_COLUMNS]
    for item in rows_in:
        for key in item:
            if str(key) not in columns and len(columns) < MAX_PEER_COLUMNS:
                columns.append(str(key))
    rows = [[cell(_plain(item.get(c, ""))) for c in columns] for item in rows_in]
    return _table([clip(c, 40) for c in columns], rows)


def summary(inp: Inputs) -> dict[str, Any]:
    """The live part of the page: sent whole on connect and whenever it changes."""
    state = inp.state
    mine = state.balances.get(inp.me, 0) if inp.me is not None else 0
    return {
        "stats": stats(inp),
        "tables": {
            "best": best_table(state),
            "sota": sota_table(state, inp.claims),
            "earners": earners_table(state),
            "jobs": jobs_table(state),
            "peers": dicts_table(inp.snapshot.get("peers"), MAX_PEERS, PEER_COLUMNS),
            "workers": dicts_table(inp.snapshot.get("workers"), MAX_PEERS),
        },
        "credits": {"balance": cr(mine), "balance_ucr": mine, "minted": cr(state.total_minted_ucr),
                    "minted_ucr": state.total_minted_ucr},
        "classes": classes(state),
    }


# -- the research feed

def feed_item(row: int, entry: Entry, state: State) -> dict[str, Any]:
    """One line of the live feed for an entry of any kind."""
    body, author = entry.body, who(entry.author)
    href: str | None = None
    if isinstance(body, Claim):
        result = bpb(body.val_bpb) if body.val_bpb is not None else body.status
        text = f"{author} claimed {body.commit.hex()[:10]} on {body.platform_class}: {result}"
        if body.message:
            text += f" — {clip(body.message, 160)}"
        href = experiment_href(entry.id)
    elif isinstance(body, Verify):
        claim = state.claims.get(body.claim)
        claimed = f" (claimed {bpb(claim.claimed)})" if claim is not None else ""
        result = bpb(body.val_bpb) if body.val_bpb is not None else body.status
        text = f"{author} verified {body.commit.hex()[:10]} on {body.platform_class}: {result}{claimed}"
        if body.claim in state.refuted:
            text += " — refuted: the claim does not reproduce"
        href = experiment_href(body.claim)
    elif isinstance(body, Mint):
        text = f"{author} minted {cr(body.amount)} to {who(body.to)} for a {body.reason}"
        if body.reason == "record":
            href = experiment_href(body.subject)
    elif isinstance(body, Transfer):
        text = f"{author} paid {cr(body.amount)} to {who(body.to)}"
        if body.memo:
            text += f" — {clip(body.memo, 120)}"
    elif isinstance(body, Post):
        text = f"{author} in #{body.channel}: {clip(body.text)}"
    elif isinstance(body, (Hypothesis, Insight)):
        text = f"{author} {body.kind}: {clip(body.text)}"
    elif isinstance(body, Admit):
        text = f"{author} admitted verifier {who(body.verifier)} for {', '.join(body.platform_classes)}"
    elif isinstance(body, Fraud):
        text = f"{author} published a fork proof"
    else:
        text = f"{author} {entry.kind}"
    return {"row": row, "kind": entry.kind, "time": utc(entry.time_ms), "text": text, "href": href}


def record_item(row: int, time_ms: int, record: RecordRow, claims: Mapping[bytes, ClaimRecord]) -> dict[str, Any]:
    """The feed line of a new record, placed at the verification that made it (`row`, `time_ms`)."""
    delta = "" if record.prev is None else f" ({signed_bpb(record.value - record.prev)})"
    change = _change(claims, record.claim)
    evidence = evidence_text(record)
    text = (f"record #{record.n} on {record.platform_class}: {bpb(record.value)}{delta} by {who(record.author)}"
            + (f" — {change}" if change else "") + (f" ({evidence})" if evidence else ""))
    return {"row": row, "kind": "record", "time": utc(time_ms), "text": text, "href": experiment_href(record.claim)}


def is_credit(item: Mapping[str, Any]) -> bool:
    return item.get("kind") in ("mint", "transfer")


# -- chart data

def progress(state: State, claims: Mapping[bytes, ClaimRecord], cls: str
             ) -> tuple[list[tuple[int, float]], list[tuple[int, float]], list[tuple[int, float]], list[int]]:
    """(every finished experiment, the running best's steps, the records, each experiment's time_ms).

    The x of a point is the experiment's number in the class (1, 2, ... in the order this node
    learned of them), not its author's clock, which a peer could set to anything. Dots are the
    claimants' numbers; the step line and record marks are the verifiers' (canonical) values.
    """
    points: list[tuple[int, float]] = []
    number: dict[bytes, int] = {}
    times: list[int] = []
    for r in claims.values():
        if r.body.platform_class != cls:
            continue
        number[r.id] = n = len(number) + 1
        times.append(r.time_ms)
        if r.body.val_bpb is not None:
            points.append((n, r.body.val_bpb))
    marks = sorted((number[r.claim], r.value) for r in state.records if r.platform_class == cls and r.claim in number)
    steps: list[tuple[int, float]] = []
    for n, v in marks:
        if not steps or v < steps[-1][1]:
            steps.append((n, v))
    return points, steps, marks, times


def residuals(state: State, cls: str) -> list[float]:
    """Trusted verifiers' measured minus claimed val_bpb, for every finished re-run in the class."""
    out = []
    for v in state.verifies.values():
        claim = state.claims.get(v.claim)
        if (v.platform_class == cls and v.value is not None and claim is not None and claim.claimed is not None
                and credits.trusted(state, v.author, cls)):
            out.append(v.value - claim.claimed)
    return out


# -- one experiment

def experiment(record: ClaimRecord, state: State, parent_claim: bytes | None) -> dict[str, Any]:
    """The facts of one claim and its verifications; message and summary stay untrusted text."""
    body = record.body
    verifications = [
        [cell(who(v.author)), cell(bpb(v.value)),
         cell(signed_bpb(None if v.value is None or body.val_bpb is None else v.value - body.val_bpb)),
         cell("trusted" if credits.trusted(state, v.author, v.platform_class) else "untrusted")]
        for v in state.verifies.values() if v.claim == record.id
    ][:MAX_VERIFY_ROWS]
    fields = [
        ("claim", record.id.hex()), ("author", who(record.author)), ("time", utc(record.time_ms) + " UTC"),
        ("commit", body.commit.hex()), ("parent", body.parent.hex() if body.parent else "— (baseline)"),
        ("class", body.platform_class), ("status", body.status), ("claimed val_bpb", bpb(body.val_bpb)),
        ("verified val_bpb", bpb(state.verified.get(record.id)) if record.id not in state.refuted
         else f"refuted: verifiers measured {bpb(state.refuted[record.id])}"), ("steps", f"{body.num_steps} / {body.planned_steps}"),
        ("seed", str(body.seed)), ("training", f"{body.training_s:.1f} s"), ("wall", f"{body.wall_s:.1f} s"),
        ("peak memory", f"{body.peak_vram_mb:.0f} MB"),
    ]
    return {
        "id": record.id.hex(),
        "title": f"{body.commit.hex()[:10]} on {body.platform_class}",
        "fields": [{"label": k, "text": v} for k, v in fields],
        "parent_href": experiment_href(parent_claim) if parent_claim is not None else None,
        "message": body.message,
        "diff_summary": body.diff_summary,
        "verifications": _table(("verifier", "measured", "vs claimed", "trust"), verifications),
        "loss_curve": list(body.loss_curve),
    }


# -- Prometheus

def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(inp: Inputs, serving: Mapping[str, int]) -> str:
    """The text exposition format (version 0.0.4): one gauge or counter per headline number."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> None:
        lines.append(f"# HELP autoswarm_{name} {help_text}")
        lines.append(f"# TYPE autoswarm_{name} {kind}")
        for labels, value in samples:
            lines.append(f"autoswarm_{name}{labels} {value:g}" if isinstance(value, float)
                         else f"autoswarm_{name}{labels} {value}")

    s, state = stats(inp), inp.state
    helps = {"experiments": "Claims in the ledger, every node's, failures included.",
             "completed": "Claims with a val_bpb.", "failed": "Claims that crashed, timed out or were rejected.",
             "running": "Experiments running on this node's workers.", "queued": "Submissions waiting on this node.",
             "workers_busy": "Workers of this node with work.", "workers": "Workers of this node.",
             "peers": "Connected peers.", "per_hour": "Claims in the last hour.",
             "verified": "Claims verified by a quorum.", "refuted": "Claims whose verified value is off by more than the noise.",
             "records": "Records on the path to SOTA.",
             "entries": "Entries in this node's ledger."}
    for key, help_text in helps.items():
        metric(key, "gauge", help_text, [("", s[key])])
    metric("best_val_bpb", "gauge", "Best verified val_bpb per platform class.",
           [(f'{{platform_class="{_label(c)}"}}', float(v)) for c, v in sorted(state.best.items())])
    metric("minted_ucr", "gauge", "Micro-credits minted in the swarm.", [("", state.total_minted_ucr)])
    if inp.me is not None:
        metric("balance_ucr", "gauge", "This node's balance in micro-credits.", [("", state.balances.get(inp.me, 0))])
    for key, value in sorted(serving.items()):
        metric(f"dashboard_{key}", "counter" if key.endswith("_total") else "gauge",
               f"Dashboard serving: {key.replace('_', ' ')}.", [("", value)])
    return "\n".join(lines) + "\n"
