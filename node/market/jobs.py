"""The executor's side of a credits-market job on one node: its payment witnessed, the job's commit
fetched and written out, run through the caller's sandboxed trainer, its result kept as an artifact and signed as a
Receipt; and a trusted verifier's spot check of another's receipt, settled paid or refunded.

The market's loop (node/market/loop.py) decides what to run and when; this module runs it.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger.bodies import Body, Job, Receipt, Settle
from ledger.entry import Entry
from ledger.fold import State
from ledger.keys import Identity, short_id
from ledger.market import settle_amount
from ledger.store import Ledger
from swarm import bundles, gitrepo
from swarm.errors import BundleRejected, PeerUnavailable, RepositoryError
from swarm.gitrepo import Repository
from swarm.peer import Peer

from node.market import policy as market
from node.market.policy import BadJobRequest, TrainArgs
from node.research.experiment import RunResult
from node.research.fetch import keep_bundle
from node.research.limits import MAX_LOG_TAIL, MAX_SETTLE_REASON

HELD_TIMEOUT_S = 2.0           # one round of asking peers whether they hold a payment
WITNESS_LIMIT_S = 60.0         # an executor gives up on a payment not witnessed by then
MAX_ARTIFACT_BYTES = 64 << 10
ARTIFACT_REASON_CHARS = 1000   # of a failed run's reason kept in its result artifact (not an entry)
MAX_BUNDLE_SOURCES = 4         # peers asked for a job's bundle

_log = logging.getLogger(__name__)

# Runs a train.py through the sandboxed trainer: (train_py, budget_s, steps, seed, horizon) -> result.
Runner = Callable[[Path, int, int | None, int, int | None], Awaitable[RunResult]]
Publish = Callable[[Identity, Body], Awaitable[Entry]]


@dataclass(frozen=True, slots=True)
class Work:
    kind: str                 # "run": our accepted job; "check": a spot check of another's receipt
    job_id: bytes
    job: Job
    payment: bytes
    offer: bytes
    receipt: bytes | None = None


def checker_for(state: State, checkers: Sequence[Identity], job_id: bytes) -> Identity | None:
    """Our key that may spot-check the job: a trusted verifier of its class and no party to it."""
    info = state.jobs[job_id]
    if info.payment is None:
        return None
    escrow = state.escrows[info.payment]
    for who in checkers:
        if (info.job.platform_class in state.verifiers.get(who.public_key, frozenset())
                and who.public_key not in (escrow.payer, escrow.executor)):
            return who
    return None


async def witness_payment(ledger: Ledger, peer: Peer, job_id: bytes, *, holders: int, quiet_s: float,
                          on_event: Callable[[str], None]) -> tuple[Work, int] | None:
    """The job's run, once enough connected peers hold its escrow payment (node/market/loop.py's
    docstring says why) and a quiet time passed without a fork proof, and how many held it; None
    if that never happens within WITNESS_LIMIT_S."""
    info = ledger.state.jobs[job_id]
    payment = info.payment
    if payment is None:
        return None
    escrow = ledger.state.escrows[payment]
    held = 0
    try:
        async with asyncio.timeout(WITNESS_LIMIT_S):   # the event loop's clock: no wall time read here
            while True:
                if ledger.state.frozen.get(escrow.payer) is not None:
                    on_event(f"job {job_id.hex()[:12]}: the payer forked its feed; not starting")
                    return None
                need = market.needed_holders(min(holders, len(peer.connected())))
                held = await peer.held_by(payment, HELD_TIMEOUT_S) if need else 0
                if held >= need:
                    break
                with contextlib.suppress(TimeoutError):   # a new peer or entry may change the answer
                    await peer.wait_until(lambda: False, timeout_s=0.2)
    except TimeoutError:
        on_event(f"job {job_id.hex()[:12]}: payment not witnessed by enough peers; not starting")
        return None
    await asyncio.sleep(quiet_s)  # the quiet time a fork proof needs to reach us
    if ledger.state.frozen.get(escrow.payer) is not None or ledger.state.jobs[job_id].status != "accepted":
        on_event(f"job {job_id.hex()[:12]}: the payer forked its feed; not starting")
        return None
    return Work("run", job_id, info.job, payment, escrow.offer), held


class JobRunner:
    def __init__(self, ledger: Ledger, peer: Peer, repo: Repository, home: Path, me: Identity,
                 checkers: Sequence[Identity], publish: Publish, clock: Callable[[], float],
                 on_event: Callable[[str], None]) -> None:
        self.ledger, self.peer, self.repo, self.me, self.checkers = ledger, peer, repo, me, checkers
        self.publish, self.clock, self.on_event = publish, clock, on_event
        self.bundles = home / "bundles"
        self.artifacts = home / "artifacts"
        self.scratch = home / "jobs"
        self.started: dict[bytes, float] = {}   # job -> when its run started, on the clock (executor)

    @property
    def state(self) -> State:
        return self.ledger.state

    async def materialize(self, work: Work) -> Path:
        if not await gitrepo.has_commit(self.repo, work.job.commit):
            await self.fetch(work)
        folder = self.scratch / work.job_id.hex()[:16] / work.kind
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "train.py"
        path.write_bytes(await gitrepo.read_file(self.repo, work.job.commit, "train.py"))
        return path

    async def fetch(self, work: Work) -> None:
        digest = work.job.bundle
        if digest is None:
            raise BundleRejected("the job names no bundle and its commit is not here")
        payer = self.state.jobs[work.job_id].author
        conns = sorted(self.peer.replicator.conns.values(), key=lambda c: c.node != payer)
        for conn in conns[:MAX_BUNDLE_SOURCES]:
            try:
                data = await self.peer.fetch_bundle(conn.addr, digest)
                if bundles.bundle_hash(data) != digest:
                    raise BundleRejected("the bundle's bytes do not hash to the job's")
                await bundles.apply_bundle(self.repo, data, expect_commit=work.job.commit,
                                           allowed_paths=frozenset(self.state.spec.allowed_files))
            except (PeerUnavailable, BundleRejected) as exc:
                _log.info("job bundle %s from %s: %s", digest.hex()[:12], conn.addr, exc)
                continue
            await keep_bundle(self.bundles, digest, data)
            return
        raise PeerUnavailable(f"no peer served the job's bundle {digest.hex()[:16]}")

    async def run(self, work: Work, runner: Runner) -> None:
        job, reason = work.job, ""
        try:
            args: TrainArgs | None = market.parse_train_args(job.args)
        except BadJobRequest as exc:
            args, reason = None, str(exc)
        self.started[work.job_id] = self.clock()
        self.on_event(f"job {work.job_id.hex()[:12]}: running for {short_id(self.state.jobs[work.job_id].author)}")
        train_py: Path | None = None
        if args is not None:
            try:
                train_py = await self.materialize(work)
            except (PeerUnavailable, BundleRejected, RepositoryError) as exc:
                train_py, reason = None, f"the job's commit could not be read: {exc}"
        if train_py is None or args is None:
            receipt = Receipt(job=work.job_id, offer=work.offer, payment=work.payment, status="rejected", gpu_s=0.0,
                              metrics={}, artifacts=[], log_tail=reason[:MAX_LOG_TAIL])
        else:
            result = await runner(train_py, job.max_gpu_s, args.steps, args.seed, None)
            metrics = {"num_steps": float(result.num_steps), "planned_steps": float(result.planned_steps),
                       "seed": float(result.seed), "training_s": result.training_s}
            if result.val_bpb is not None:
                metrics["val_bpb"] = result.val_bpb
            artifact = await self.keep_artifact({"status": result.status,
                                                 "reason": result.reason[:ARTIFACT_REASON_CHARS],
                                                 "metrics": metrics, "log_tail": result.log_tail[-8192:]})
            used_ms = market.gpu_ms(result.wall_s, 1, job.max_gpu_s)
            receipt = Receipt(job=work.job_id, offer=work.offer, payment=work.payment, status=result.status,
                              gpu_s=market.signed_gpu_s(used_ms), metrics=metrics,
                              artifacts=[artifact], log_tail=result.log_tail[-MAX_LOG_TAIL:])
        entry = await self.publish(self.me, receipt)
        self.on_event(f"job {work.job_id.hex()[:12]}: receipt {entry.id.hex()[:12]}, {receipt.gpu_s:.3f} GPU-s, "
                      f"{receipt.status}")

    async def keep_artifact(self, data: dict[str, object]) -> bytes:
        raw = json.dumps(data, sort_keys=True).encode()[:MAX_ARTIFACT_BYTES]
        digest = hashlib.sha256(raw).digest()
        path = self.artifacts / digest.hex()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            await asyncio.to_thread(tmp.write_bytes, raw)
            tmp.replace(path)
        return digest

    async def check(self, work: Work, runner: Runner) -> None:
        checker = checker_for(self.state, self.checkers, work.job_id)
        if work.receipt is None or checker is None:
            return
        receipt_entry = await self.ledger.get(work.receipt)
        if receipt_entry is None or not isinstance(receipt_entry.body, Receipt):
            return
        claimed = receipt_entry.body.metrics
        train_py = await self.materialize(work)
        steps = int(claimed.get("num_steps", 0)) or None
        horizon = int(claimed.get("planned_steps", 0)) or None
        result = await runner(train_py, work.job.max_gpu_s, steps, int(claimed.get("seed", 0)), horizon)
        tolerance = self.state.spec.noise_bpb.get(work.job.platform_class, 0.0)
        ok, why = market.replay_verdict(claimed, result.val_bpb, result.num_steps, tolerance)
        info = self.state.jobs[work.job_id]
        if info.settle is not None:
            return  # someone settled it meanwhile
        # billing follows the time our own replay took, not the receipt's word (ledger/market.py)
        measured = market.signed_gpu_s(market.gpu_ms(result.wall_s, 1, work.job.max_gpu_s)) if ok else None
        amount = settle_amount(self.state, work.job_id, measured)[0] if ok else 0
        await self.publish(checker, Settle(job=work.job_id, payment=work.payment, receipt=work.receipt,
                                           outcome="paid" if ok else "refunded", amount=amount,
                                           reason=f"spot check: {why}"[:MAX_SETTLE_REASON], gpu_s=measured))
        self.on_event(f"job {work.job_id.hex()[:12]}: spot check {'reproduced' if ok else 'FAILED'}: {why}")


async def keep_job_bundle(repo: Repository, bundle_dir: Path, commit: bytes, base: bytes) -> bytes:
    """Bundles a commit thin against `base` (the swarm's baseline, which every node holds) for
    executors to pull by hash, as claims' bundles are; returns the sha256."""
    data = await bundles.make_bundle(repo, commit, have=[base])
    digest = bundles.bundle_hash(data)
    await keep_bundle(bundle_dir, digest, data)
    return digest
