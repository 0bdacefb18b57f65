"""The simulated day of scripts/sim_scale.py: the fake trainer's workload, and what a node makes of it.

The fake trainer: every node runs one worker that finishes an experiment every `budget_s` +
overhead and publishes a signed claim; an improvement is re-run by a trusted verifier when it
next frees up, which publishes the verify and the mints the credit rules allow. What a node makes
of the day: its fold, taking the entries in the order it received them (with the real pending
area), the digests that compare two folds table by table, and a real ledger file of the day's
wires. Knows nothing about the graph, floods or traffic (scripts/sim_scale.py): it gets each
entry's arrival time at each node as `arrival[origin][node]`.
"""
from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ledger import assign, credits, fold
from ledger.bodies import Body, Claim, Mint, Seal, Verify
from ledger.entry import Entry, sign_entry
from ledger.keys import Identity
from ledger.pending import Pending
from ledger.spec import SignedSpec, SwarmSpec, sign_spec

if TYPE_CHECKING:
    from sim_scale import SimConfig

CLASS = "sim-gpu"
NOISE_BPB = 0.002
RATE_UCR_PER_BPB = 10**9
VERIFY_UCR = 1000


def identity(n: int) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"sim-%d" % n).digest())


def make_spec(verifiers: list[Identity]) -> SignedSpec:
    creator = identity(-1)
    spec = SwarmSpec(
        name="sim", creator=creator.public_key, created_ms=0, harness_hash=b"h" * 32, dataset_hash=b"d" * 32,
        tokenizer_hash=b"t" * 32, time_budget_s=300, metric="val_bpb", direction="min",
        baseline_commit=b"\x00" * 20, allowed_files=["train.py"], platform_classes=[CLASS],
        verifiers=[v.public_key for v in verifiers], quorum=1, noise_bpb={CLASS: NOISE_BPB},
        record_ucr_per_bpb=RATE_UCR_PER_BPB, verify_ucr=VERIFY_UCR,
    )
    return sign_spec(creator, spec)


@dataclass(slots=True)
class Published:
    entry: Entry
    origin: int
    at_s: float


@dataclass(slots=True)
class Day:
    """The day's entries in publish order, and the fold of them in that order (the reference)."""

    published: list[Published] = field(default_factory=list)
    state: fold.State | None = None


def run_day(cfg: SimConfig, spec: SignedSpec, ids: list[Identity], arrival: np.ndarray,
            rng: random.Random) -> Day:
    """Discrete events of the workers: `arrival[o][v]` is when node v holds node o's entry, after publishing."""
    state = fold.initial(spec.spec)
    day = Day(state=state)
    heads: dict[bytes, tuple[int, bytes | None]] = {}
    swarm = spec.swarm_id
    end_s = cfg.hours * 3600
    verifier_nodes = set(range(cfg.verifiers))
    unverified: list[tuple[float, Entry, int]] = []    # (published at, claim, origin), improvements
    best = 3.0
    improvements = 0
    commits = 0

    def publish(v: int, body: Body, now_s: float) -> Entry:
        seq, prev = heads.get(ids[v].public_key, (0, None))
        entry = sign_entry(ids[v], swarm=swarm, seq=seq + 1, prev=prev, body=body, time_ms=int(now_s * 1000))
        heads[ids[v].public_key] = (entry.seq, entry.id)
        fold.apply(state, entry)
        if state.verdicts.get(entry.id):
            raise RuntimeError(f"the fake trainer made an invalid entry: {state.verdicts[entry.id]}")
        day.published.append(Published(entry, v, now_s))
        return entry

    jobs = [(rng.uniform(0, cfg.budget_s), v) for v in range(cfg.nodes)]  # workers start spread out
    heapq.heapify(jobs)
    while jobs and jobs[0][0] < end_s:
        now_s, v = heapq.heappop(jobs)
        # a verifier that already holds an unverified improvement re-runs it; the run takes a budget
        if v in verifier_nodes:
            # only claims whose seal assigned this verifier (ledger/assign.py), as the node's queue does
            seen = [k for k, (at, c, o) in enumerate(unverified)
                    if at + arrival[o][v] <= now_s and assign.is_assigned(state, c.id, ids[v].public_key)]
            if seen:
                _, claim_entry, _ = unverified.pop(seen[0])
                _verify(publish, v, ids[v], claim_entry, state, now_s)
                heapq.heappush(jobs, (now_s + cfg.budget_s + rng.uniform(*cfg.overhead_s), v))
                continue
        commits += 1
        improved = rng.random() < cfg.improve_p * 20 / (20 + improvements) and best > 1.0
        value = best - rng.uniform(0.0021, 0.004) if improved else best + abs(rng.gauss(0, 0.02))
        claim = publish(v, _claim(commits, value, cfg.loss_points, rng), now_s)
        if value < best - NOISE_BPB:
            best = value
            improvements += 1
            unverified.append((now_s, claim, v))
            # an anchor seals it (a verifier node other than its author): only the improvements
            # are sealed here, the ones anyone replays; a real anchor's seal lists up to 256 claims
            # every 3 s, so the seals of the rest would add about one small entry per 3 s per anchor
            publish(1 if v == 0 else 0, Seal(claims=[claim.id]), now_s)
        heapq.heappush(jobs, (now_s + cfg.budget_s + rng.uniform(*cfg.overhead_s), v))
    return day


def _claim(n: int, value: float, points: int, rng: random.Random) -> Claim:
    curve = [round(4.0 - 2.5 * k / max(points, 1) + rng.gauss(0, 0.01), 4) for k in range(points)]
    return Claim(
        commit=hashlib.sha1(b"sim-commit-%d" % n).digest(), parent=b"\x00" * 20, platform_class=CLASS,
        status="ok", val_bpb=round(value, 5), num_steps=950, planned_steps=950, seed=n, training_s=300.0,
        wall_s=340.0, peak_vram_mb=44_000.0, loss_curve=curve, diff_summary="MATRIX_LR: 0.04 -> 0.05",
        message="raise the matrix learning rate", bundle=hashlib.sha256(b"bundle-%d" % n).digest(),
    )


def _verify(publish: Any, v: int, who: Identity, claim: Entry, state: fold.State, now_s: float) -> None:
    body = claim.body
    assert isinstance(body, Claim) and body.val_bpb is not None
    value = body.val_bpb
    ver = publish(v, Verify(claim=claim.id, commit=body.commit, platform_class=CLASS, status="ok", val_bpb=value,
                            num_steps=body.num_steps, seed=body.seed, training_s=300.0), now_s)
    # the one record mint the fold allows this verifier now (ledger/credits.py), if the claim is a record
    mint, _ = credits.record_mint(state, who.public_key, claim.id)
    if mint is not None:
        publish(v, mint, now_s)
    publish(v, Mint(reason="verification", subject=ver.id, quorum=[], to=who.public_key, amount=VERIFY_UCR,
                    value=None, prev_best=None), now_s)


def fold_digests(state: fold.State) -> dict[str, str]:
    """One hash per derived table, so a difference says which table differs."""
    t = fold.tables(state)
    parts = {"balances": sorted(t.balances.items()), "frozen": sorted(t.frozen.items()),
             "verdicts": sorted(t.verdicts.items()), "leaderboard": fold.leaderboard(state, CLASS),
             "records": sorted(repr(r) for r in t.records)}
    return {name: hashlib.sha256(repr(part).encode()).hexdigest()[:16] for name, part in parts.items()}


def fold_at(spec: SignedSpec, day: Day, arrival: np.ndarray, v: int) -> tuple[fold.State, int]:
    """The fold node v computes, taking entries in the order it received them. As the store does,
    an entry whose dependencies (`Entry.deps`) are not applied yet waits in the real pending area
    (`ledger.pending.Pending`) until they are. Returns the state and how many entries waited."""
    order = sorted(day.published, key=lambda p: (p.at_s + arrival[p.origin][v], p.entry.author, p.entry.seq))
    state = fold.initial(spec.spec)
    applied: set[bytes] = set()
    pending = Pending()
    waited = 0
    history: list[Entry] = []
    for p in order:
        ready = [p.entry]
        while ready:
            entry = ready.pop()
            missing = next((d for d in entry.deps() if d not in applied), None)
            if missing is not None:
                pending.add(entry, missing)
                waited += 1
                continue
            history.append(entry)
            state = fold.apply_or_rebuild(state, entry, history)
            applied.add(entry.id)
            ready.extend(reversed(pending.release(entry.id)))
    if len(pending):
        raise RuntimeError(f"node {v}: {len(pending)} entries never had their dependencies")
    return state, waited


async def ledger_bytes(spec: SignedSpec, day: Day, path: Path) -> tuple[int, int]:
    """Writes the day's wires into a real ledger file; returns (rows, bytes on disk after a checkpoint)."""
    from ledger.store import Ledger

    wires = [p.entry.wire for p in day.published]
    async with Ledger.open(path, spec) as ledger:
        for start in range(0, len(wires), 1000):
            await ledger.append_wires(wires[start:start + 1000])
        rows = await ledger.count()
    size = sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))
    return rows, size


def changed_authors_per_round(day: Day, round_s: float, hours: float) -> int:
    """Mean number of distinct authors that published within one heads round."""
    rounds = max(1, int(hours * 3600 / round_s))
    authors: list[set[bytes]] = [set() for _ in range(rounds)]
    for p in day.published:
        authors[min(int(p.at_s / round_s), rounds - 1)].add(p.entry.author)
    return round(sum(len(a) for a in authors) / rounds)


def heads_of(day: Day) -> dict[bytes, tuple[int, bytes]]:
    heads: dict[bytes, tuple[int, bytes]] = {}
    for p in day.published:
        heads[p.entry.author] = (p.entry.seq, p.entry.id)
    return heads
