"""The credits market's loop on one node: offer, accept, witness, run, receipt, settle, spot check.

Theory of operation. Everything the market does is a reaction to the ledger's state, so one task
re-reads the state after every entry the peer appends (its subscription) and after every timer
that can change a decision (an accept window closing, a job expiring), and acts in five roles:

- executor: offers on open jobs of its classes while it has a free worker slot, at the
  configured price; when a payer's escrow payment to it arrives, it *witnesses* the payment
  before it works: at least `needed_holders` connected peers must report holding the payment
  entry (Peer.held_by), then it waits `witness_s` more and checks once again that the payer is
  not frozen. A forked payer's second branch meets the first at any peer that holds both; that
  peer's fork proof reaches us within the witness time, so two executors cannot both be shown a
  branch of their own. Then the job goes to a worker, whose result becomes a signed Receipt;
- payer: accepts the best offer (node/market/policy.py) once the accept window after the first offer
  has passed, by an escrow payment; after the receipt reveals the job's committed secret
  (node/market/checksecrets.py), which picks it for a spot check or not, and settles "paid" at
  once where it is not picked; refunds a job whose executor returned nothing by its expiry;
- spot checker (a trusted verifier of the class that is no party to the job): replays picked
  receipts (deterministic: the receipt's steps, seed and horizon) and settles paid or refunded.

Workers take runs from `take()`: the node's research workers before their own work
(node/research/loop.py), or `serve_workers` where nothing else runs. Decisions are node/market/policy.py's;
validity is ledger/market.py's. Artifacts (the run's result as JSON) are kept under
HOME/artifacts/<sha256> and named in the receipt.

`Market` is about 275 lines, over the house's 250 for a class: its roles share one state (what
was acted on, the work queue, the slots) that a split would pass between objects on every step;
the executor's runs already live apart in node/market/jobs.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger.bodies import Body, Offer, Settle, Transfer
from ledger.entry import Entry
from ledger.errors import LedgerError
from ledger.fold import State
from ledger.keys import Identity, short_id
from ledger import market as ledger_market
from ledger.market import picked, settle_amount
from ledger.store import Ledger
from swarm.errors import SwarmError
from swarm.gitrepo import Repository
from swarm.peer import Peer

from node.market import policy as market
from node.errors import TrainerFailed
from node.home import Layout
from node.market.checksecrets import load_secret, new_secret
from node.market.jobs import JobRunner, Runner, Work, checker_for, keep_job_bundle, witness_payment
from node.market.policy import BadJobRequest, JobRequest

__all__ = ["Market", "MarketConfig", "Runner", "Work", "keep_job_bundle", "running", "serve_workers"]

MAX_TICK_S = 1.0            # the loop looks again at least this often (timers: windows, expiries)
REFUND_GRACE_S = 5.0        # a payer refunds this long after a job without a receipt expired
MAX_ARTIFACT_BYTES = 64 << 10
MAX_WORK_QUEUE = 64
ARTIFACT_REASON_CHARS = 1000   # of a failed run's reason kept in its result artifact (not an entry)

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MarketConfig:
    offer: bool = True                # offer this node's idle workers to others' jobs
    price_ucr_per_gpu_s: int = 100    # our asking price
    spot_check_rate: float = 0.1      # share of receipts a trusted verifier replays (same on every node)
    accept_window_s: float = 0.3      # after the first offer, before the payer picks
    holders: int = 2                  # peers that must hold a payment before work starts (at most)
    witness_s: float = 0.3            # quiet time after that, for a fork proof to arrive


class Market:
    def __init__(self, ledger: Ledger, peer: Peer, repo: Repository, home: Path, me: Identity,
                 checkers: Sequence[Identity], classes: list[str], config: MarketConfig, *, slots: int = 1,
                 clock: Callable[[], float] = time.time, on_event: Callable[[str], None] = lambda text: None) -> None:
        self.ledger, self.peer, self.repo, self.home = ledger, peer, repo, home
        self.me, self.checkers, self.classes, self.config = me, list(checkers), classes, config
        self.slots, self.clock, self.on_event = slots, clock, on_event
        self.jobs = JobRunner(ledger, peer, repo, home, me, self.checkers, self.publish, clock, on_event)
        self._work: asyncio.Queue[Work] = asyncio.Queue(maxsize=MAX_WORK_QUEUE)
        self._active: set[bytes] = set()        # jobs we witness, queued or run (as executor)
        self._checking: set[bytes] = set()      # jobs we spot-check
        self._acted: set[tuple[str, bytes]] = set()  # (what, job) done or in flight: never twice
        self.witnessed: dict[bytes, int] = {}   # payment -> holders seen when work started
        self._tasks: set[asyncio.Task[None]] = set()
        self._kick = asyncio.Event()

    # -- the API of the local node (CLI routes)

    @property
    def state(self) -> State:
        return self.ledger.state

    @property
    def started(self) -> dict[bytes, float]:
        """Job -> when its run started here, on the clock (as its executor)."""
        return self.jobs.started

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def publish(self, who: Identity, body: Body) -> Entry:
        entry = await self.ledger.publish(who, body, time_ms=self._now_ms())
        self.peer.announce(entry)
        self._kick.set()
        return entry

    async def submit(self, request: JobRequest) -> Entry:
        """Checks and publishes a job of ours (the commit's bundle must be kept already: `keep_bundle`)."""
        state = self.state
        committed = sum(market.escrow_ucr(info.job.max_gpu_s, info.job.price_ucr_per_gpu_s)
                        for info in state.jobs.values() if info.author == self.me.public_key and info.status == "open")
        balance = state.balances.get(self.me.public_key, 0) - committed
        market.check_request(request, balance_ucr=balance, platform_classes=state.spec.platform_classes,
                             now_ms=self._now_ms())  # refuse a bad request before a secret is made for it
        # the spot-check secret: committed now, revealed after the receipt (node/market/checksecrets.py)
        job = market.check_request(request, balance_ucr=balance, platform_classes=state.spec.platform_classes,
                                   now_ms=self._now_ms(), check_hash=new_secret(self.home))
        entry = await self.publish(self.me, job)
        self.on_event(f"job {entry.id.hex()[:12]} submitted: {job.max_gpu_s} GPU-s at {job.price_ucr_per_gpu_s} ucr")
        return entry

    async def keep_bundle(self, commit: bytes, base: bytes) -> bytes:
        """Bundles a commit of ours thin against `base` for executors to pull by hash; its sha256."""
        return await keep_job_bundle(self.repo, Layout(self.home).bundles, commit, base)

    async def cancel(self, job_id: bytes) -> Entry:
        info = self.state.jobs.get(job_id)
        if info is None or info.author != self.me.public_key:
            raise BadJobRequest(f"no job {job_id.hex()[:16]} of this node")
        if info.status != "open":
            raise BadJobRequest(f"job {job_id.hex()[:16]} is {info.status}: only an open job can be cancelled")
        return await self.publish(self.me, Settle(job=job_id, payment=None, receipt=None, outcome="cancelled",
                                                  amount=0, reason="cancelled by the payer"))

    # -- workers

    def pending(self) -> int:
        """Work waiting for a worker of this node (node/research/work.py's paid jobs)."""
        return self._work.qsize()

    def take(self) -> Work | None:
        try:
            return self._work.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def next_work(self) -> Work:
        return await self._work.get()

    async def execute(self, work: Work, runner: Runner) -> None:
        """Runs one piece of work on the caller's worker and publishes what it yields."""
        try:
            if work.kind == "run":
                await self.jobs.run(work, runner)
            else:
                await self.jobs.check(work, runner)
        except (SwarmError, LedgerError, OSError, TrainerFailed) as exc:
            # no receipt: the payer refunds itself after the job's expiry
            self.on_event(f"job {work.job_id.hex()[:12]}: {work.kind} failed: {exc}")
        finally:
            if work.kind == "run":
                self._active.discard(work.job_id)   # the worker slot is free again
            self._kick.set()

    async def wait_witnesses(self, timeout_s: float) -> None:
        """Until every payment being witnessed now has started its work or been given up."""
        async with asyncio.timeout(timeout_s):
            while self._tasks:
                await asyncio.wait(set(self._tasks))

    # -- the loop

    async def run(self) -> None:
        """Forever: react to every appended entry and to timers. Owns the witness tasks it starts."""
        async with self.peer.subscribe() as entries:
            try:
                while True:
                    try:
                        await self.step()
                    except (LedgerError, SwarmError, OSError) as exc:   # never stop the node for one step
                        _log.warning("market step failed: %r", exc)
                        self.on_event(f"market: {exc}")
                    await self._wait(entries)
            finally:
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _wait(self, entries: asyncio.Queue[Entry]) -> None:
        getter = asyncio.ensure_future(entries.get())
        kicked = asyncio.ensure_future(self._kick.wait())
        try:
            await asyncio.wait({getter, kicked}, timeout=self._next_timer_s(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            getter.cancel()
            kicked.cancel()
        self._kick.clear()
        while not entries.empty():   # one step covers every entry that arrived meanwhile
            entries.get_nowait()

    def _next_timer_s(self) -> float:
        now_ms, me = self._now_ms(), self.me.public_key
        due = [max(info.time_ms, self._first_offer_ms(info.offers) or 0) + 1000 * self.config.accept_window_s
               for info in self.state.jobs.values() if info.author == me and info.status == "open" and info.offers]
        wait_s = min([(d - now_ms) / 1000 for d in due] + [MAX_TICK_S])
        return max(0.01, wait_s)

    def _first_offer_ms(self, offers: list[bytes]) -> int | None:
        return self.state.offers[offers[0]].time_ms if offers else None

    async def step(self) -> None:
        """One pass over the state: every action that is due now."""
        state, now_ms, me = self.state, self._now_ms(), self.me.public_key
        for job_id, info in list(state.jobs.items()):
            if state.frozen.get(info.author) is not None:
                continue
            if info.author == me:
                await self._as_payer(job_id, now_ms)
            elif info.status == "open" and self.config.offer:
                await self._maybe_offer(job_id, now_ms)
            elif (info.status == "accepted" and info.payment is not None
                  and state.escrows[info.payment].executor == me and ("witness", job_id) not in self._acted):
                self._witness_later(job_id)
            if info.status == "ran":
                self._maybe_check(job_id)

    async def _maybe_offer(self, job_id: bytes, now_ms: int) -> None:
        state, info = self.state, self.state.jobs[job_id]
        offered = ("offer", job_id) in self._acted or any(state.offers[o].author == self.me.public_key
                                                           for o in info.offers)
        job = info.job
        if not market.should_offer(job_author=info.author, job_class=job.platform_class, job_type=job.job_type,
                                   job_price=job.price_ucr_per_gpu_s, job_expires_ms=job.expires_ms,
                                   me=self.me.public_key, my_classes=self.classes,
                                   my_price=self.config.price_ucr_per_gpu_s, free_slots=self.slots - len(self._active),
                                   offered=offered, now_ms=now_ms):
            return
        self._acted.add(("offer", job_id))
        await self.publish(self.me, Offer(job=job_id, price_ucr_per_gpu_s=self.config.price_ucr_per_gpu_s,
                                          expires_ms=job.expires_ms))

    async def _as_payer(self, job_id: bytes, now_ms: int) -> None:
        state, info = self.state, self.state.jobs[job_id]
        if info.status == "open":
            window_ms = int(1000 * self.config.accept_window_s)
            if ("accept", job_id) in self._acted or not market.accept_due(
                    info.time_ms, self._first_offer_ms(info.offers), now_ms, window_ms):
                return
            await self._accept(job_id)
        elif info.status == "ran" and info.receipt is not None and info.payment is not None:
            if ("settle", job_id) in self._acted:
                return
            secret = None if info.job.check_hash is None else load_secret(self.home, info.job.check_hash)
            if info.job.check_hash is None:  # a job from before committed secrets: the old public pick
                if market.spot_checked(info.receipt, self.config.spot_check_rate):
                    return  # a trusted verifier replays it and settles
            elif secret is None:
                return  # our secret is lost: only a trusted verifier's check can settle it now
            elif ledger_market.spot_checked(secret, job_id, state.spec.spot_check_per_mille):
                self._acted.add(("settle", job_id))  # picked: reveal, and a trusted verifier replays and settles
                await self.publish(self.me, Settle(job=job_id, payment=info.payment, receipt=info.receipt,
                                                   outcome="reveal", amount=0, reason="", reveal=secret))
                self.on_event(f"job {job_id.hex()[:12]}: picked for a spot check; a verifier replays it")
                return
            self._acted.add(("settle", job_id))
            amount, _ = settle_amount(state, job_id)
            await self.publish(self.me, Settle(job=job_id, payment=info.payment, receipt=info.receipt, outcome="paid",
                                               amount=amount, reason="receipt accepted", reveal=secret))
            self.on_event(f"job {job_id.hex()[:12]} settled: paid {amount} ucr")
        elif (info.status == "accepted" and info.payment is not None and ("refund", job_id) not in self._acted
              and now_ms > info.job.expires_ms + 1000 * REFUND_GRACE_S):
            self._acted.add(("refund", job_id))
            await self.publish(self.me, Settle(job=job_id, payment=info.payment, receipt=None, outcome="refunded",
                                               amount=0, reason="the executor returned nothing before the job expired"))
            self.on_event(f"job {job_id.hex()[:12]} refunded: no receipt by its expiry")

    async def _accept(self, job_id: bytes) -> None:
        state, info = self.state, self.state.jobs[job_id]
        rep = {k: (r.paid, r.refunded) for k, r in state.reputation.items()}
        views = [market.OfferView(oid, o.author, o.price_ucr_per_gpu_s, o.expires_ms, n)
                 for n, oid in enumerate(info.offers) if (o := state.offers[oid])]
        frozen = frozenset(state.frozen)
        chosen = market.choose_offer(views, info.job.price_ucr_per_gpu_s, rep, self._now_ms(), exclude=frozen)
        if chosen is None:
            return
        amount = market.escrow_ucr(info.job.max_gpu_s, chosen.price_ucr_per_gpu_s)
        spends = _pick_outputs(state, self.me.public_key, amount)
        if spends is None:
            self.on_event(f"job {job_id.hex()[:12]}: the balance no longer covers {amount} ucr; not accepted")
            self._acted.add(("accept", job_id))
            return
        self._acted.add(("accept", job_id))
        await self.publish(self.me, Transfer(to=chosen.author, amount=amount, spends=spends, memo="escrow",
                                             job=job_id, offer=chosen.offer_id))
        self.on_event(f"job {job_id.hex()[:12]} accepted: {short_id(chosen.author)} at "
                      f"{chosen.price_ucr_per_gpu_s} ucr/GPU-s, {amount} ucr held")

    # -- executor: witness, then queue

    def _witness_later(self, job_id: bytes) -> None:
        self._acted.add(("witness", job_id))
        self._active.add(job_id)
        task = asyncio.get_running_loop().create_task(self._witness(job_id), name=f"market-witness:{job_id.hex()[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _witness(self, job_id: bytes) -> None:
        """Queues the job for a worker once its payment is witnessed; frees the slot if it never is."""
        try:
            found = await witness_payment(self.ledger, self.peer, job_id, holders=self.config.holders,
                                          quiet_s=self.config.witness_s, on_event=self.on_event)
        except (SwarmError, LedgerError) as exc:
            self.on_event(f"job {job_id.hex()[:12]}: witnessing the payment failed: {exc}")
            found = None
        if found is None:
            self._active.discard(job_id)
            self._kick.set()
            return
        work, holders = found
        self.witnessed[work.payment] = holders
        await self._work.put(work)

    # -- spot checks

    def _maybe_check(self, job_id: bytes) -> None:
        state, info = self.state, self.state.jobs[job_id]
        if (job_id in self._checking or info.receipt is None or info.payment is None
                or not self._picked(state, job_id)
                or checker_for(state, self.checkers, job_id) is None):
            return
        escrow = state.escrows[info.payment]
        try:
            self._work.put_nowait(Work("check", job_id, info.job, info.payment, escrow.offer, info.receipt))
        except asyncio.QueueFull:
            return   # looked at again on the next step
        self._checking.add(job_id)


    def _picked(self, state: State, job_id: bytes) -> bool:
        """Whether a trusted verifier replays this job: by the payer's revealed secret, or (a job
        without one, from before committed secrets) by the old public pick of the receipt id."""
        info = state.jobs[job_id]
        if info.job.check_hash is None:
            return info.receipt is not None and market.spot_checked(info.receipt, self.config.spot_check_rate)
        return picked(state, job_id) is True


def _pick_outputs(state: State, owner: bytes, amount: int) -> list[bytes] | None:
    """Unspent outputs of `owner` covering `amount`, largest first (at most 64), or None."""
    mine = sorted(((a, e) for (e, o), a in state.outputs.items() if o == owner), reverse=True)
    picked, total = [], 0
    for value, entry_id in mine[:64]:
        picked.append(entry_id)
        total += value
        if total >= amount:
            return picked
    return None


async def serve_workers(market_: Market, runner: Runner, workers: int = 1) -> None:
    """Workers that do nothing but market work (a node whose workers do not research)."""
    async def worker() -> None:
        while True:
            await market_.execute(await market_.next_work(), runner)

    async with asyncio.TaskGroup() as tg:
        for n in range(workers):
            tg.create_task(worker(), name=f"market-worker-{n}")


@contextlib.asynccontextmanager
async def running(market_: Market, runner: Runner | None, workers: int = 1) -> AsyncIterator[Market]:
    """The market loop (and, with a runner, its own workers) for the duration of the block."""
    async with asyncio.TaskGroup() as tg:
        loop = tg.create_task(market_.run(), name="market")
        serving = tg.create_task(serve_workers(market_, runner, workers), name="market-workers") \
            if runner is not None else None
        try:
            yield market_
        finally:
            loop.cancel()
            if serving is not None:
                serving.cancel()
