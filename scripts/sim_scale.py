"""A large swarm in one process: N simulated nodes for a simulated day, in discrete simulated time.

    .venv/bin/python scripts/sim_scale.py --nodes 1000 --hours 24      # one JSON object per figure

What is real: identities and signed entries (`ledger.entry.sign_entry`); the fold
(`ledger.fold.apply`), run at sampled nodes over the day's entries in the order each of them received
them; the dial choice that builds the graph (`swarm.peertable.choose_dials`, rng passed in); the push
rule of `swarm/gossip.py` (`Replicator._appended`: on first receipt an entry goes to every connected
peer that neither sent it to us nor announced it nor was sent it — our own entries in full to all of
them, others' in full to `swarm.heads.split_targets`' choice of EAGER_FANOUT and by id (`Have`) to
the rest, who ask for it (`WantIds`) after PULL_AFTER_S); the bytes of every frame (`swarm.protocol
.encode_message` of `Entries`, `Have`, `WantIds`, `Heads` pages from `swarm.heads.heads_pages`,
`HeadsDelta`, `Digest`, `Ping`, `Pong`, at the intervals and with the full-vs-delta schedule that
`swarm/links.py` and `swarm/connection.py` use); and one node's ledger file, written through
`ledger.store.Ledger` with the day's wires. `--flood` and `--heads full` give the protocol as it was
before lazy forwarding and heads deltas.

What is modelled: each link has a one-way latency drawn once (uniform, `latency_s`); a node's uplink
sends frames one after another at `uplink_bps`; a hop costs `ingest_s` (check, append, forward).
No frame is lost. The fake trainer (scripts/sim_day.py, with the per-node folds and the ledger
file): every node runs one worker (one GPU) that finishes an experiment every `budget_s` + overhead
and publishes a claim; an improvement (a claim below the best verified value by more than the
noise) is re-run by a trusted verifier when it next frees up, which publishes the verify and the
mints the credit rules allow, as tests/ledger/factory.py's valid history does.

Theory of operation. Entries do not contend for links (a node's uplink is busy well under 1% of the
time; `uplink_busy` reports it), so an entry's flood depends only on its origin: the simulator floods
once per origin (an event heap of receipts and forwards) and keeps per node the time it got the entry
and the frames it sent and received. The day's workload then replays through those floods: arrival
time of entry e at node v = publish time + delay[origin(e)][v], and a node's traffic is its frame
counts per origin times the bytes of that origin's frames. Knows nothing about asyncio or sockets
(scripts/sim_day.py's `ledger_bytes` writes the real SQLite ledger).
"""
from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))   # scripts/sim_day.py, when loaded by path

from sim_day import (  # noqa: E402  (CLASS, identity and make_spec are used from here by scripts/bench_scale.py)
    CLASS, changed_authors_per_round, fold_at, fold_digests, heads_of, identity, ledger_bytes, make_spec, run_day,
)
from swarm.connection import PING_INTERVAL_S  # noqa: E402
from swarm.gossip import EAGER_FANOUT, PULL_AFTER_S, PULL_MIN_S, PULL_RTT_FACTOR  # noqa: E402
from swarm.heads import heads_pages, split_targets  # noqa: E402
from swarm.links import FULL_HEADS_EVERY, FULL_SYNC_EVERY  # noqa: E402
from swarm.peerconfig import ANTI_ENTROPY_INTERVAL_S  # noqa: E402
from swarm.peertable import PeerTable, choose_dials  # noqa: E402
from swarm.protocol import Digest, Entries, Have, HeadsDelta, Ping, Pong, WantIds, encode_message  # noqa: E402

TCP_IP_BYTES_PER_FRAME = 52   # IPv4 + TCP with timestamps; ws framing is added per frame size


@dataclass(frozen=True, slots=True)
class SimConfig:
    nodes: int = 1000
    hours: float = 24.0
    dials: int = 3                      # outbound connections per node: average degree about 2x
    peers_known: int = 64               # addresses a node learnt by peer exchange before dialing
    verifiers: int = 10                 # trusted verifiers among the nodes
    latency_s: tuple[float, float] = (0.010, 0.120)  # one-way, per link, uniform
    uplink_bps: float = 100e6
    ingest_s: float = 0.005             # per hop: signature check, durable append, hand to the pusher
    budget_s: float = 300.0             # one experiment's training budget
    overhead_s: tuple[float, float] = (20.0, 60.0)   # per experiment, outside the trainer
    improve_p: float = 0.05             # chance that an experiment beats the best, shrinking as k/(k+20)
                                        # with k improvements so far: the easy wins go first
    loss_points: int = 16               # of the loss curve carried in a claim (node/research/loop.py MAX_LOSS_POINTS)
    fold_sample: int = 8                # nodes whose fold is computed in their own arrival order
    # The gossip as built (swarm/gossip.py): a node forwards a peer's entry in full to `eager` of its
    # peers and announces its id to the others (its own entries still go in full to all); a node told
    # of an entry it lacks asks for it after `pull_after_s`. None: the old flood, full copies to all.
    eager: int | None = EAGER_FANOUT
    pull_after_s: float = PULL_AFTER_S
    pull_rtt_factor: float = PULL_RTT_FACTOR   # ... or after this many round trips of the announcer's link
    pull_from: str = "first"            # the announcer asked: "first" to announce, or "random" of those known
    eager_in: int | None = None         # a node takes full forwarded copies from this many of its links at most
    lazy_fanout: int | None = None      # experiment: ids of a forwarded entry to this many of the other peers at most
    heads: str = "delta"                # the periodic heads rounds: "delta" as built, "full" as before
    seed: int = 1


# ------------------------------------------------------------------------------------- the graph


def build_graph(cfg: SimConfig, rng: random.Random) -> list[list[int]]:
    """Undirected adjacency lists: every node dials `cfg.dials` addresses of those it knows."""
    addr = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:7400" for i in range(cfg.nodes)]
    index = {a: i for i, a in enumerate(addr)}
    adj: list[set[int]] = [set() for _ in range(cfg.nodes)]
    for i in range(cfg.nodes):
        table = PeerTable()
        for j in rng.sample(range(cfg.nodes), min(cfg.peers_known, cfg.nodes)):
            table.add(addr[j])
        picked = choose_dials(table, connected=[addr[j] for j in adj[i]], banned=(), own=(addr[i],),
                              want=cfg.dials, now_s=0.0, rng=rng)
        for a in picked:
            adj[i].add(index[a])
            adj[index[a]].add(i)
    return [sorted(s) for s in adj]


# ------------------------------------------------------------------------------------- floods


@dataclass(slots=True)
class Flood:
    """One entry's flood from `origin`: when each node appended it, and the frames each moved."""

    held_s: np.ndarray        # float64 [nodes]: time since publish at which the node appended it
    sent: np.ndarray          # int32 [nodes]: frames carrying it that the node sent
    received: np.ndarray      # int32 [nodes]: frames carrying it that the node received (duplicates too)
    announced: np.ndarray | None = None   # int32 [nodes]: ids announced or asked for, sent + received


def flood(adj: list[list[int]], latency: dict[tuple[int, int], float], origin: int, frame_bytes: int,
          cfg: SimConfig) -> Flood:
    n = len(adj)
    held = np.full(n, math.inf)
    sent = np.zeros(n, np.int32)
    received = np.zeros(n, np.int32)
    heard_from: list[set[int] | None] = [None] * n   # peers known to hold it (swarm: conn.knows)
    tx_s = frame_bytes * 8 / cfg.uplink_bps
    # events: (time, kind, node, sender); kind 0 = a frame arrives, 1 = the node forwards
    events: list[tuple[float, int, int, int]] = [(0.0, 1, origin, -1)]
    held[origin] = 0.0
    heard_from[origin] = set()
    while events:
        t, kind, v, u = heapq.heappop(events)
        if kind == 0:
            received[v] += 1
            known = heard_from[v]
            if known is None:                 # first receipt: appended after the ingest cost
                heard_from[v] = {u}
                held[v] = t + cfg.ingest_s
                heapq.heappush(events, (held[v], 1, v, u))
            else:
                known.add(u)
            continue
        known = heard_from[v]
        assert known is not None
        busy_s = t
        for w in adj[v]:
            if w in known:
                continue
            known.add(w)
            busy_s += tx_s                    # the uplink sends one frame after another
            sent[v] += 1
            heapq.heappush(events, (busy_s + latency[(v, w) if v < w else (w, v)], 0, w, v))
    return Flood(held, sent, received)


def lazy_flood(adj: list[list[int]], latency: dict[tuple[int, int], float], origin: int, frame_bytes: int,
               cfg: SimConfig, rng: random.Random, eager_order: list[list[int]] | None = None) -> Flood:
    """The flood as built (`cfg.eager` not None): full frames to a few, ids to the rest."""
    n = len(adj)
    held = np.full(n, math.inf)
    sent = np.zeros(n, np.int32)
    received = np.zeros(n, np.int32)
    announced = np.zeros(n, np.int32)
    known: list[set[int]] = [set() for _ in range(n)]
    pulling = [False] * n
    announcers: list[list[int]] = [[] for _ in range(n)]
    busy_s = [0.0] * n
    tx_s = frame_bytes * 8 / cfg.uplink_bps

    def lat(a: int, b: int) -> float:
        return latency[(a, b) if a < b else (b, a)]

    def send_full(t: float, v: int, w: int) -> None:
        busy_s[v] = max(t, busy_s[v]) + tx_s
        sent[v] += 1
        heapq.heappush(events, (busy_s[v] + lat(v, w), 0, w, v))

    # kinds: 0 full frame at v from u; 1 v forwards; 2 id announced to v by u; 3 v's pull timer; 4 want at v from u
    # links on which v takes forwarded copies in full (the others send v ids only): its first eager_in
    takes_full = [set(a if cfg.eager_in is None else a[:cfg.eager_in]) for a in (eager_order or adj)]
    events: list[tuple[float, int, int, int]] = [(0.0, 1, origin, -1)]
    held[origin] = 0.0
    while events:
        t, kind, v, u = heapq.heappop(events)
        if kind == 0:
            received[v] += 1
            known[v].add(u)
            if held[v] == math.inf:
                held[v] = t + cfg.ingest_s
                heapq.heappush(events, (held[v], 1, v, u))
        elif kind == 1:
            targets = [w for w in adj[v] if w not in known[v]]
            # own entries go to all peers; others' by the built rule
            if v == origin:
                full, lazy = targets, []
            else:
                willing = [w for w in targets if v in takes_full[w]]
                full, _ = split_targets(willing, cfg.eager, rng)
                lazy, _ = split_targets([w for w in targets if w not in full], cfg.lazy_fanout, rng)
            for w in full:
                known[v].add(w)
                send_full(t, v, w)
            for w in lazy:
                known[v].add(w)
                announced[v] += 1
                heapq.heappush(events, (t + lat(v, w), 2, w, v))
        elif kind == 2:
            announced[v] += 1
            known[v].add(u)
            announcers[v].append(u)
            if held[v] == math.inf and not pulling[v]:
                pulling[v] = True
                # as gossip.Replicator.pull_delay_s: a few round trips of the link, pull_after_s at most
                delay_s = min(cfg.pull_after_s, max(PULL_MIN_S, cfg.pull_rtt_factor * 2 * lat(u, v)))
                heapq.heappush(events, (t + delay_s, 3, v, u))
        elif kind == 3:
            pulling[v] = False
            if held[v] == math.inf:
                announced[v] += 1
                if cfg.pull_from == "random":
                    u = rng.choice(announcers[v])
                heapq.heappush(events, (t + lat(v, u), 4, u, v))
        else:
            announced[v] += 1
            send_full(t, v, u)
    return Flood(held, sent, received, announced)


# ------------------------------------------------------------------------------------- figures


def frame_bytes(message: Any) -> int:
    """Bytes of one websocket frame carrying `message`, and the TCP/IP headers of its packet."""
    payload = len(encode_message(message))
    return payload + (2 if payload < 126 else 4 if payload < 65536 else 10) + TCP_IP_BYTES_PER_FRAME


def busiest_node(v: int, adj: list[list[int]], floods: list[Flood], by_origin: np.ndarray, full_bytes: np.ndarray,
                 id_bytes: np.ndarray, sync_bytes: np.ndarray, hours: float, entries: int) -> dict[str, Any]:
    """Where the busiest node's bytes go: full copies sent and received per entry, id frames (`Have`,
    `WantIds`) per entry, and GB/day of each kind."""
    per_entry = [float(by_origin @ np.array([getattr(f, name)[v] for f in floods]) / entries)
                 for name in ("sent", "received")]
    ids = (float(by_origin @ np.array([f.announced[v] for f in floods if f.announced is not None]) / entries)
           if floods[0].announced is not None else 0.0)
    day = 24 / hours / 1e9
    return {"node": v, "degree": len(adj[v]), "full_sent_per_entry": round(per_entry[0], 2),
            "full_received_per_entry": round(per_entry[1], 2), "id_frames_per_entry": round(ids, 2),
            "gb_per_day": {"full": round(float(full_bytes[v]) * day, 3), "ids": round(float(id_bytes[v]) * day, 3),
                           "anti_entropy_and_pings": round(float(sync_bytes[v]) * day, 3)}}


def simulate(cfg: SimConfig, *, ledger_dir: Path | None = None) -> dict[str, Any]:
    """Runs the whole simulation; returns the figures (and the evidence behind them) as a dict."""
    rng = random.Random(cfg.seed)
    t0 = time.process_time()
    adj = build_graph(cfg, rng)
    latency = {(v, w): rng.uniform(*cfg.latency_s) for v in range(cfg.nodes) for w in adj[v] if v < w}
    ids = [identity(i) for i in range(cfg.nodes)]
    spec = make_spec(ids[:cfg.verifiers])
    typical = frame_bytes(Entries((b"\x00" * 1200,)))
    if cfg.eager is not None:
        # each node's links in the order it keeps them eager (connection order: here random)
        eager_order = [random.Random(cfg.seed * 7 + v).sample(a, len(a)) for v, a in enumerate(adj)]
        floods = [lazy_flood(adj, latency, o, typical, cfg, random.Random(cfg.seed * 1_000_003 + o), eager_order)
                  for o in range(cfg.nodes)]
    else:
        floods = [flood(adj, latency, o, typical, cfg) for o in range(cfg.nodes)]
    arrival = np.stack([f.held_s for f in floods])
    day = run_day(cfg, spec, ids, arrival, rng)
    t_sim = time.process_time() - t0

    # propagation: per entry, the time until the last node holds it
    to_all_s = np.array([arrival[p.origin].max() for p in day.published])
    # traffic: entry frames per node, by origin; then the anti-entropy and pings every link carries
    per_origin = np.zeros(cfg.nodes)
    for p in day.published:
        per_origin[p.origin] += frame_bytes(Entries((p.entry.wire,)))
    moved = np.stack([f.sent + f.received for f in floods])        # [origin, node]
    entry_bytes = per_origin @ moved                                 # [node]
    full_bytes = entry_bytes.copy()
    id_bytes = np.zeros(cfg.nodes)
    by_origin = np.bincount([p.origin for p in day.published], minlength=cfg.nodes)
    id_frame_bytes = frame_bytes(Have((b"\x00" * 32,)))   # one id per frame, as the built code sends it
    assert id_frame_bytes == frame_bytes(WantIds((b"\x00" * 32,)))
    if cfg.eager is not None:
        id_bytes = id_frame_bytes * (by_origin @ np.stack([f.announced for f in floods if f.announced is not None]))
        entry_bytes = entry_bytes + id_frame_bytes * (by_origin @ np.stack([f.announced for f in floods
                                                                             if f.announced is not None]))
    tips = {a: (s, h[:8]) for a, (s, h) in heads_of(day).items()}
    full_heads_bytes = sum(frame_bytes(page) for page in heads_pages(tips))
    round_s = ANTI_ENTROPY_INTERVAL_S * FULL_SYNC_EVERY
    if cfg.heads == "delta":
        # as swarm/links.py: every FULL_HEADS_EVERY-th heads round sends the full pages, the others a
        # HeadsDelta of the rows changed on that link since the last round (a digest when none did),
        # less the rows whose head entry the link already carried (sent, received or announced:
        # swarm.heads.heads_delta's peer_holds). Every flood crosses every link (each holder
        # forwards to all its peers not known to hold it), so the rows left are those of entries
        # still in flight: at most the entries published within the mean time to reach every node.
        in_flight = len(day.published) / (cfg.hours * 3600) * float(to_all_s.mean())
        changed = min(changed_authors_per_round(day, round_s, cfg.hours), math.ceil(in_flight))
        delta_bytes = (frame_bytes(HeadsDelta(tuple((bytes([1]) + k.to_bytes(31, "big"), 1, b"t" * 8)
                                                    for k in range(changed))))
                       if changed else frame_bytes(Digest(b"\x00" * 32)))
        heads_bytes = (full_heads_bytes + (FULL_HEADS_EVERY - 1) * delta_bytes) / FULL_HEADS_EVERY
    else:
        heads_bytes = full_heads_bytes
    hours = cfg.hours
    per_link_side_per_h = (3600 / ANTI_ENTROPY_INTERVAL_S * ((FULL_SYNC_EVERY - 1) / FULL_SYNC_EVERY)
                           * frame_bytes(Digest(b"\x00" * 32))
                           + 3600 / round_s * heads_bytes
                           + 3600 / PING_INTERVAL_S * (frame_bytes(Ping(2**61)) + frame_bytes(Pong(2**61))))
    degree = np.array([len(a) for a in adj])
    sync_bytes = degree * 2 * per_link_side_per_h * hours            # each side sends and receives
    total = entry_bytes + sync_bytes
    frames_sent = by_origin @ np.stack([f.sent for f in floods])   # [node]
    busy = float(frames_sent.max()) * typical * 8 / cfg.uplink_bps / (hours * 3600)

    # folds: every node holds every entry (each flood reached all); sampled nodes fold in their own order
    reached_all = bool(np.isfinite(arrival).all())
    sample = sorted({int(np.argmax(arrival.max(axis=0))), *rng.sample(range(cfg.nodes), cfg.fold_sample - 1)})
    assert day.state is not None
    reference = fold_digests(day.state)
    differ: dict[str, list[int]] = {name: [] for name in reference}   # table -> sampled nodes that differ
    waited: dict[int, int] = {}
    records_at: dict[int, int] = {}
    for v in sample:
        state, waited[v] = fold_at(spec, day, arrival, v)
        records_at[v] = len(state.records)
        for name, digest in fold_digests(state).items():
            if digest != reference[name]:
                differ[name].append(v)
    kinds: dict[str, int] = {}
    for p in day.published:
        kinds[p.entry.kind] = kinds.get(p.entry.kind, 0) + 1
    result: dict[str, Any] = {
        "config": asdict(cfg),
        "graph": {"nodes": cfg.nodes, "degree_mean": float(degree.mean()), "degree_min": int(degree.min()),
                  "degree_max": int(degree.max())},
        "entries": len(day.published), "kinds": kinds,
        "propagation_s": {"p50": float(np.percentile(to_all_s, 50)), "p95": float(np.percentile(to_all_s, 95)),
                          "max": float(to_all_s.max())},
        "bytes_per_node_per_h": {"median": float(np.median(total) / hours), "max": float(total.max() / hours),
                                 "entries_median": float(np.median(entry_bytes) / hours),
                                 "anti_entropy_and_pings_median": float(np.median(sync_bytes) / hours)},
        "bytes_per_node_per_day": {"median": float(np.median(total) / hours * 24), "max": float(total.max() / hours * 24)},
        "busiest": busiest_node(int(np.argmax(total)), adj, floods, by_origin, full_bytes, id_bytes, sync_bytes,
                                hours, len(day.published)),
        "heads_round_bytes": round(heads_bytes), "full_heads_bytes": full_heads_bytes,
        "duplicates_per_node_per_entry": float(statistics.mean(
            float((f.received.sum() - (cfg.nodes - 1)) / cfg.nodes) for f in floods[:50])),
        "uplink_busy_fraction_max": busy,
        "every_node_holds_every_entry": reached_all,
        # every table against the fold in publish order; records_at: each sampled node's record count
        "folds": {"sampled_nodes": sample, "equal": not any(differ.values()), "differ": differ,
                  "records_at": records_at, "entries_that_waited_for_dependencies": waited,
                  "balances": len(day.state.balances), "records": len(day.state.records)},
        "cpu_s_simulation": round(t_sim, 1),
    }
    if ledger_dir is not None:
        rows, size = asyncio.run(ledger_bytes(spec, day, ledger_dir / "node.ledger"))
        result["ledger"] = {"rows": rows, "bytes": size, "bytes_per_entry": round(size / max(rows, 1), 1)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--dials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-ledger", action="store_true", help="skip writing the real ledger file")
    parser.add_argument("--eager", type=int, default=EAGER_FANOUT,
                        help="full frames to this many peers, ids to the rest (the built default)")
    parser.add_argument("--pull-rtt-factor", type=float, default=PULL_RTT_FACTOR,
                        help="ask for an announced entry after this many round trips (1e9: always pull_after_s)")
    parser.add_argument("--pull-from", choices=["first", "random"], default="first")
    parser.add_argument("--eager-in", type=int, default=None, help="links a node takes full forwarded copies on")
    parser.add_argument("--lazy-fanout", type=int, default=0,
                        help="experiment: peers told a forwarded entry's id at most; 0: all (as built)")
    parser.add_argument("--flood", action="store_true", help="the old rule: every entry in full to every peer")
    parser.add_argument("--heads", choices=["full", "delta"], default="delta",
                        help="periodic heads rounds: deltas as built, or full pages as before")
    parser.add_argument("--loss-points", type=int, default=16,
                        help="points of the loss curve in each claim (the node keeps 16)")
    args = parser.parse_args(argv)
    cfg = SimConfig(nodes=args.nodes, hours=args.hours, dials=args.dials, seed=args.seed,
                    eager=None if args.flood else args.eager, pull_rtt_factor=args.pull_rtt_factor,
                    pull_from=args.pull_from, eager_in=args.eager_in, lazy_fanout=args.lazy_fanout or None,
                    heads=args.heads, loss_points=args.loss_points)
    with tempfile.TemporaryDirectory() as tmp:
        result = simulate(cfg, ledger_dir=None if args.no_ledger else Path(tmp))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
