"""Ledger benchmark: writes a ledger of N signed entries and prints one JSON object per line.

    .venv/bin/python scripts/bench_ledger.py --entries 100000 --out /tmp/bench.ledger

Figures (medians of --reps runs, each on a fresh file in a temporary folder beside --out):
  single     durable single appends/s: --concurrency tasks each await one acknowledged append
             at a time (group commit), and the reference, one transaction per append in a loop
  batched    appends/s of signed wires as they arrive from a peer (append_wires, signature
             checks included), --batch wires per call with --in-flight calls pipelined
  audit      entries/s of ledger.audit.audit_file on --out, signatures checked on every core

The history is valid, so the fold does real work: claims by 48 authors, verifications by the
two trusted verifiers (bench identities 0 and 1; identity 0 also created the spec), record and
verification mints, transfers that spend earlier mints, and posts.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger import credits, fold  # noqa: E402
from ledger.bodies import Body, Claim, Mint, Post, Seal, Transfer, Verify  # noqa: E402
from ledger.entry import Entry, sign_entry  # noqa: E402
from ledger.keys import Identity  # noqa: E402
from ledger.sigcheck import INLINE_BELOW  # noqa: E402
from ledger.spec import SignedSpec, SwarmSpec, sign_spec  # noqa: E402
from ledger.store import Ledger, Status  # noqa: E402

CLASS = "cpu-tiny"
NOISE_BPB = 0.01
VERIFY_UCR = 1_000
RECORD_UCR_PER_BPB = 10**9


@dataclass(frozen=True, slots=True)
class Config:
    entries: int
    out: Path
    authors: int
    reps: int
    single_entries: int
    reference_entries: int
    concurrency: int
    batch: int
    in_flight: int
    seed: int


def identities(n: int) -> list[Identity]:
    return [Identity.from_seed(hashlib.sha256(b"bench-identity-%d" % i).digest()) for i in range(n)]


def bench_spec(creator: Identity, verifiers: list[Identity]) -> SignedSpec:
    return sign_spec(creator, SwarmSpec(
        name="bench", creator=creator.public_key, created_ms=0,
        harness_hash=b"h" * 32, dataset_hash=b"d" * 32, tokenizer_hash=b"t" * 32,
        time_budget_s=300, metric="val_bpb", direction="min", baseline_commit=b"\x00" * 20,
        allowed_files=["train.py"], platform_classes=[CLASS], verifiers=[v.public_key for v in verifiers],
        quorum=1, noise_bpb={CLASS: NOISE_BPB}, record_ucr_per_bpb=RECORD_UCR_PER_BPB, verify_ucr=VERIFY_UCR,
    ))


@dataclass
class History:
    """Signs a valid history, consulting the fold as an honest node would."""

    spec: SignedSpec
    ids: list[Identity]
    rng: random.Random
    state: fold.State = field(init=False)
    entries: list[Entry] = field(default_factory=list)
    heads: dict[bytes, tuple[int, bytes | None]] = field(default_factory=dict)
    claims: list[Entry] = field(default_factory=list)
    unminted_verifies: dict[bytes, list[bytes]] = field(default_factory=dict)  # verifier -> verify ids
    outputs: dict[bytes, dict[bytes, int]] = field(default_factory=dict)       # owner -> entry -> ucr

    def __post_init__(self) -> None:
        self.state = fold.initial(self.spec.spec)
        self.by_key = {i.public_key: i for i in self.ids}

    def add(self, who: Identity, body: Body) -> Entry:
        seq, prev = self.heads.get(who.public_key, (0, None))
        entry = sign_entry(who, swarm=self.spec.swarm_id, seq=seq + 1, prev=prev, body=body,
                           time_ms=1_700_000_000_000 + len(self.entries))
        self.heads[who.public_key] = (entry.seq, entry.id)
        fold.apply(self.state, entry)
        if self.state.verdicts.get(entry.id):
            raise RuntimeError(f"bench history is invalid: {self.state.verdicts[entry.id]}")
        self.entries.append(entry)
        return entry

    def step(self) -> None:
        rng, verifiers, users = self.rng, self.ids[:2], self.ids[2:]
        action = rng.choices(["post", "claim", "verify", "vmint", "transfer"], [30, 25, 20, 10, 15])[0]
        if action == "claim" or not self.claims:
            n = len(self.entries)
            self.claims.append(self.add(rng.choice(users), Claim(
                commit=hashlib.sha1(b"c%d" % n).digest(), parent=hashlib.sha1(b"p%d" % n).digest(),
                platform_class=CLASS, status="ok", val_bpb=round(rng.uniform(0.9, 1.1), 4), num_steps=950,
                planned_steps=1000, seed=n, training_s=300.0, wall_s=312.5, peak_vram_mb=40_000.0,
                loss_curve=[round(rng.uniform(1, 4), 3) for _ in range(8)], diff_summary="lr 0.04 -> 0.05",
                message="raise the matrix learning rate", bundle=hashlib.sha256(b"b%d" % n).digest())))
            self.add(verifiers[0], Seal(claims=[self.claims[-1].id]))  # an anchor's seal, as its node publishes
        elif action == "verify":
            self.verify(rng.choice(verifiers), rng.choice(self.claims[-50:]))
        elif action == "vmint" and any(self.unminted_verifies.values()):
            v = rng.choice([v for v in verifiers if self.unminted_verifies.get(v.public_key)])
            subject = self.unminted_verifies[v.public_key].pop()
            verify = self.state.verifies.get(subject)
            if verify is None or (v.public_key, verify.claim) in self.state.fees:
                return  # one fee per (verifier, claim): a second replay of a claim earns nothing
            self.mint(v, Mint(reason="verification", subject=subject, quorum=[], to=v.public_key,
                              amount=VERIFY_UCR, value=None, prev_best=None))
        elif action == "transfer" and self.outputs:
            owner = rng.choice(list(self.outputs))
            payer = self.by_key[owner]
            spends = list(self.outputs[owner].items())[: rng.randint(1, 3)]
            total = sum(a for _, a in spends)
            to = rng.choice([i for i in self.ids if i is not payer]).public_key
            amount = rng.randint(1, total)
            body = Transfer(to=to, amount=amount, spends=[s for s, _ in spends], memo="bench", job=None, offer=None)
            entry = self.add(payer, body)
            for spent, _ in spends:
                del self.outputs[owner][spent]
            if not self.outputs[owner]:
                del self.outputs[owner]
            self.outputs.setdefault(to, {})[entry.id] = amount
            if total > amount:
                self.outputs.setdefault(owner, {})[entry.id] = total - amount
        else:
            self.add(rng.choice(self.ids), Post(channel="general", text=f"note {len(self.entries)}: " + "x" * 80,
                                                reply_to=rng.choice(self.entries).id if self.entries else None))

    def verify(self, v: Identity, claim: Entry) -> None:
        body = claim.body
        assert isinstance(body, Claim) and body.val_bpb is not None
        ver = self.add(v, Verify(claim=claim.id, commit=body.commit, platform_class=CLASS, status="ok",
                                 val_bpb=body.val_bpb, num_steps=950, seed=7, training_s=300.0))
        self.unminted_verifies.setdefault(v.public_key, []).append(ver.id)
        # the one record mint the fold allows this verifier (ledger/credits.py), if the claim is a record
        mint, _ = credits.record_mint(self.state, v.public_key, claim.id)
        if mint is not None:
            self.mint(v, mint)

    def mint(self, v: Identity, body: Mint) -> None:
        entry = self.add(v, body)
        if body.amount:
            self.outputs.setdefault(body.to, {})[entry.id] = body.amount


def make_history(n: int, authors: int, seed: int) -> tuple[SignedSpec, list[Entry]]:
    ids = identities(authors)
    spec = bench_spec(ids[0], ids[:2])
    history = History(spec, ids, random.Random(seed))
    while len(history.entries) < n:
        history.step()
    return spec, history.entries[:n]


# -- measurements


@dataclass(frozen=True, slots=True)
class Run:
    per_s: float           # entries per second of wall-clock time
    cpu_us: float          # CPU time per entry, this process and its finished children (the pool)
    load: float            # 1-minute load average at the end: other work on the machine


def cpu_s() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


async def measured(n: int, work: Coroutine[Any, Any, float]) -> Run:
    cpu_before = cpu_s()
    per_s = await work
    return Run(per_s, 1e6 * (cpu_s() - cpu_before) / n, os.getloadavg()[0])


async def durable_single(path: Path, spec: SignedSpec, entries: Sequence[Entry], concurrency: int) -> float:
    """appends/s with `concurrency` tasks each awaiting one append at a time; entries keep row order."""
    feed = iter(entries)

    async def appender() -> None:
        for entry in feed:  # a shared iterator: tasks take the next entry in order
            outcome = await ledger.append(entry)
            if outcome.status is not Status.APPENDED:
                raise RuntimeError(f"bench entry not appended: {outcome}")

    async with Ledger.open(path, spec) as ledger:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for i in range(concurrency):
                tg.create_task(appender(), name=f"appender-{i}")
        elapsed = time.perf_counter() - started
    return len(entries) / elapsed


async def batched(path: Path, spec: SignedSpec, wires: Sequence[bytes], batch: int, in_flight: int) -> float:
    """appends/s of wires given to append_wires in batches, `in_flight` calls pipelined."""
    warm_up = INLINE_BELOW  # the smallest batch that goes to the worker processes
    chunks = [wires[i : i + batch] for i in range(warm_up, len(wires), batch)]
    slots = asyncio.Semaphore(in_flight)

    async def send(chunk: Sequence[bytes]) -> None:
        try:
            outcomes = await ledger.append_wires(chunk)
        finally:
            slots.release()
        bad = [o for o in outcomes if o.status is not Status.APPENDED]
        if bad:
            raise RuntimeError(f"{len(bad)} bench wires not appended, e.g. {bad[0]}")

    async with Ledger.open(path, spec) as ledger:
        await ledger.append_wires(wires[:warm_up])  # starts the signature pool's workers off the clock
        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for i, chunk in enumerate(chunks):
                await slots.acquire()  # calls start in order, as a peer's batches arrive
                tg.create_task(send(chunk), name=f"batch-{i}")
        elapsed = time.perf_counter() - started
        if await ledger.count() != len(wires):
            raise RuntimeError("batched run lost entries")
    return (len(wires) - warm_up) / elapsed


async def reference_loop(path: Path, spec: SignedSpec, entries: Sequence[Entry]) -> float:
    """appends/s of a plain loop: one append, one transaction, one fsync at a time."""
    async with Ledger.open(path, spec) as ledger:
        started = time.perf_counter()
        for entry in entries:
            await ledger.append(entry)
        return len(entries) / (time.perf_counter() - started)


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def summary(runs: list[Run]) -> dict[str, object]:
    """Medians, every run, and what the CPU time implies for two otherwise idle cores."""
    cpu_us = statistics.median(r.cpu_us for r in runs)
    return {
        "median": round(statistics.median(r.per_s for r in runs)), "runs": [round(r.per_s) for r in runs],
        "cpu_us_per_entry": round(cpu_us, 1), "cpu_bound_ceiling_2_cores_per_s": round(2e6 / cpu_us),
        "load_avg_1m": [round(r.load, 1) for r in runs],
    }


async def run(cfg: Config) -> None:
    started = time.perf_counter()
    spec, entries = make_history(cfg.entries, cfg.authors, cfg.seed)
    kinds: dict[str, int] = {}
    for e in entries:
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    emit(bench="setup", entries=len(entries), authors=cfg.authors, kinds=kinds, cpus=os.cpu_count(),
         machine=platform.machine(), python=platform.python_version(),
         date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
         sign_s=round(time.perf_counter() - started, 1))
    wires = [e.wire for e in entries]
    gc.freeze()  # the bench's own history is static: keep the collector from rescanning it in every run
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-ledger-", dir=cfg.out.parent))
    try:
        single, reference, batch_rates = [], [], []
        some, few = entries[: cfg.single_entries], entries[: cfg.reference_entries]
        for rep in range(cfg.reps):
            single.append(await measured(len(some), durable_single(scratch / f"single-{rep}", spec, some,
                                                                   cfg.concurrency)))
            reference.append(await measured(len(few), reference_loop(scratch / f"ref-{rep}", spec, few)))
        emit(bench="durable_single_appends_per_s", **summary(single), entries=len(some),
             concurrency=cfg.concurrency, reference_one_txn_per_append_per_s=summary(reference),
             goal=2000)
        for rep in range(cfg.reps):
            target = scratch / f"batched-{rep}"
            batch_rates.append(await measured(len(wires), batched(target, spec, wires, cfg.batch, cfg.in_flight)))
            if rep == cfg.reps - 1:
                for suffix in ("", "-wal", "-shm"):
                    if cfg.out.with_name(cfg.out.name + suffix).exists():
                        cfg.out.with_name(cfg.out.name + suffix).unlink()
                shutil.move(target, cfg.out)  # closed: the WAL was checkpointed into the file
        emit(bench="batched_appends_per_s", **summary(batch_rates), entries=len(wires), batch=cfg.batch,
             in_flight=cfg.in_flight, goal=12000)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    emit(bench="ledger_file", path=str(cfg.out), entries=len(entries), bytes=cfg.out.stat().st_size)
    try:
        from ledger.audit import audit_file
    except ImportError as exc:
        emit(bench="audit_entries_per_s", pending=f"ledger.audit is not importable yet: {exc}")
        return
    rates = []
    for _ in range(cfg.reps):
        cpu_before = cpu_s()
        report = audit_file(cfg.out)
        if not report.ok:
            raise RuntimeError(f"audit of the bench file failed: {report.first_problem}")
        rates.append(Run(report.rows / report.elapsed_s, 1e6 * (cpu_s() - cpu_before) / report.rows,
                         os.getloadavg()[0]))
    emit(bench="audit_entries_per_s", **summary(rates), entries=len(entries), goal=15000)


def parse(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=100_000, help="entries in the ledger written to --out")
    p.add_argument("--out", type=Path, required=True, help="the ledger file to write (replaced)")
    p.add_argument("--authors", type=int, default=50)
    p.add_argument("--reps", type=int, default=3, help="repetitions per figure; medians are reported")
    p.add_argument("--single-entries", type=int, default=10_000, help="entries per durable-single run")
    p.add_argument("--reference-entries", type=int, default=2_000, help="entries per one-txn-per-append run")
    p.add_argument("--concurrency", type=int, default=64, help="concurrent appenders in the durable-single run")
    p.add_argument("--batch", type=int, default=1_000, help="wires per append_wires call")
    p.add_argument("--in-flight", type=int, default=2, help="append_wires calls pipelined")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    if a.authors < 3 or a.entries < 2:
        p.error("need at least 3 authors and 2 entries")
    return Config(a.entries, a.out, a.authors, a.reps, a.single_entries, a.reference_entries, a.concurrency,
                  a.batch, a.in_flight, a.seed)


def main(argv: list[str] | None = None) -> int:
    asyncio.run(run(parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
