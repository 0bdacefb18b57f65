"""The credits market end to end on loopback: real ledgers, real peers, real trainer runs on the CPU.

Users earn credits by verified records, then buy GPU time: jobs are offered on, accepted by escrow,
witnessed, run in the sandbox, receipted and settled, and every node ends with the same balances
in a ledger that audits clean. A forked payer, a lying executor and a cancel are checked too.
Waits are on conditions (the peer's change notifications) with bounds several times the usual.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from fractions import Fraction
from pathlib import Path

import pytest

from ledger.audit import audit_file
from ledger.bodies import Receipt, Settle, Transfer
from ledger.entry import Entry, sign_entry
from ledger.keys import Identity
from ledger.market import settle_amount
from ledger.writer import Status
from tests.ledger import factory
from trainer.data_format import PreparedData, synthetic

from node.market.loop import MarketConfig, Runner
from node.market.policy import BadJobRequest, JobRequest, check_request
from tests.node.marketkit import (MarketNode, earned_credits, lying_runner, make_spec, market_node,
                                  trainer_runner)

RUN_S = float(__import__('os').environ.get('RUN_S', 240))          # a 20-step CPU run takes ~10 s here; several may queue on 2 cores
SYNC_S = 30.0          # gossip on loopback takes milliseconds
CREATOR, VERIFIER = factory.identity(700), factory.identity(701)
USER1, USER2 = factory.identity(710), factory.identity(711)
EXEC = [factory.identity(720), factory.identity(721), factory.identity(722)]
PAYS = MarketConfig(offer=False, spot_check_rate=0.0)
SELLS = MarketConfig(offer=True, price_ucr_per_gpu_s=50, spot_check_rate=0.0)
Role = tuple[str, Identity, MarketConfig, Runner | None]   # name, key, market config, worker (None: no worker)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    return synthetic(tmp_path_factory.mktemp("data"), n_train=60_000, n_val=20_000, seed=5)


async def wait_all(nodes: list[MarketNode], holds: Callable[[MarketNode], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        await asyncio.gather(*(n.peer.wait_until(lambda n=n: holds(n), timeout_s) for n in nodes))  # type: ignore[misc]


@contextlib.asynccontextmanager
async def swarm(tmp: Path, roles: Sequence[Role], frozen: bytes | None = None,
                spot_check_per_mille: int = 0) -> AsyncIterator[list[MarketNode]]:
    """Nodes in order, each bootstrapping from the first; every node holds the earned credits.
    Afterwards every ledger audits clean; the only entries the rules refuse are a `frozen` author's."""
    spec = await make_spec(tmp, CREATOR, VERIFIER, spot_check_per_mille)
    seed = await earned_credits(spec, VERIFIER, [USER1, USER2])
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[MarketNode] = []
        for name, who, config, runner in roles:
            boot = (nodes[0].peer.address,) if nodes else ()
            checker = VERIFIER if who is VERIFIER else None
            nodes.append(await stack.enter_async_context(market_node(
                tmp, name, who, spec, seed, config, bootstrap=boot, checker=checker, runner=runner)))
        await wait_all(nodes, lambda n: len(n.peer.connected()) >= min(2, len(nodes) - 1), SYNC_S)
        yield nodes
    for node in nodes:
        report = audit_file(tmp / node.name / "ledger.sqlite")
        refused = [i for i in report.invalid if i.author != frozen or "frozen" not in i.reason]
        assert report.ok and not refused, (node.name, report.problems, report.invalid)


def job_status(node: MarketNode, job: bytes) -> str:
    info = node.ledger.state.jobs.get(job)
    return "missing" if info is None else info.status


@pytest.mark.slow
async def test_two_users_three_executors_jobs_run_and_settle(tmp_path: Path, data: PreparedData) -> None:
    run = trainer_runner(data.root, tmp_path / "scratch", tmp_path)
    roles: list[Role] = [("user1", USER1, PAYS, None), ("user2", USER2, PAYS, None)]
    roles += [(f"exec{i}", who, SELLS, run) for i, who in enumerate(EXEC)]
    async with swarm(tmp_path, roles) as nodes:
        users, execs = nodes[:2], nodes[2:]
        before = {n.key: n.balance() for n in nodes}
        assert before[USER1.public_key] > 0 and before[USER2.public_key] > 0
        jobs = [await users[0].submit(), await users[1].submit()]
        await wait_all(nodes, lambda n: all(job_status(n, j) == "settled" for j in jobs), RUN_S)
        state = users[0].ledger.state
        paid: dict[bytes, int] = {}
        for job in jobs:
            info = state.jobs[job]
            assert info.payment is not None and info.receipt is not None
            escrow = state.escrows[info.payment]
            receipt = state.receipts[info.receipt]
            assert receipt.status == "ok" and 0 < receipt.gpu_s <= 60
            used_ms = round(receipt.gpu_s * 1000)   # executors bill whole GPU-milliseconds, signed from below
            assert Fraction(receipt.gpu_s) <= Fraction(used_ms, 1000) < Fraction(receipt.gpu_s) + Fraction(1, 10**6)
            amount = -(-used_ms * 50 // 1000)       # ceil(ms x price / 1000): integers end to end
            paid[escrow.payer] = paid.get(escrow.payer, 0) + amount
            paid[escrow.executor] = paid.get(escrow.executor, 0) - amount
            ran = next(n for n in execs if n.key == escrow.executor)
            assert job in ran.market.started
        for node in nodes:   # the same balances everywhere, and right
            got = node.ledger.state.balances
            for key, was in before.items():
                assert got.get(key, 0) == was - paid.get(key, 0), node.name
            assert not node.ledger.state.held
        # the receipt carries the run's metrics and its result as an artifact kept by hash
        receipt_entry = await execs[0].ledger.get(state.jobs[jobs[0]].receipt)  # type: ignore[arg-type]
        assert receipt_entry is not None and isinstance(receipt_entry.body, Receipt)
        body = receipt_entry.body
        assert body.metrics["num_steps"] == 5 and body.metrics["val_bpb"] > 0
        holder = next(n for n in execs if n.key == receipt_entry.author)
        assert (holder.home / "artifacts" / body.artifacts[0].hex()).is_file()


async def test_a_forked_payers_double_spend_is_caught_before_any_executor_starts(tmp_path: Path) -> None:
    payer = factory.identity(730)   # signs by hand, as a cheating node would: no Market of its own
    witness = MarketConfig(offer=False, spot_check_rate=0.0)
    roles: list[Role] = [("w1", USER1, witness, None), ("w2", USER2, witness, None),
                         ("e1", EXEC[0], SELLS, lying_runner(1.0)), ("e2", EXEC[1], SELLS, lying_runner(1.0))]
    async with swarm(tmp_path, roles, frozen=payer.public_key) as nodes:
        w1, _, e1, e2 = nodes
        # USER1's earned credits pay the forked payer first, so it has outputs to spend twice
        feeds = factory.Feeds(w1.ledger.swarm_id)
        fund = await w1.market.publish(USER1, factory.transfer(payer, 100_000, _outputs(w1, USER1.public_key)))
        job_bodies = [check_request(JobRequest("train", factory.commit(40 + n), None, ("--steps", "5"), "cpu-tiny",
                                               10, 100, 600),
                                    balance_ucr=10**9, platform_classes=["cpu-tiny"], now_ms=w1.market._now_ms())
                      for n in range(2)]
        jobs: list[Entry] = []
        for body in job_bodies:
            entry = sign_entry(payer, swarm=feeds.swarm, seq=len(jobs) + 1, prev=jobs[-1].id if jobs else None,
                               body=body, time_ms=w1.market._now_ms())
            await w1.ledger.append(entry)
            w1.peer.announce(entry)
            jobs.append(entry)
        offers = {}
        for node, job in ((e1, jobs[0]), (e2, jobs[1])):
            await wait_all([node], lambda n, j=job.id: _own_offer(n, j) is not None, SYNC_S)  # type: ignore[misc]
            offers[node.name] = _own_offer(node, job.id)
        # both executors must hold what each branch names (the funding output, both jobs): a branch
        # that came first would wait in the pending area instead of forking the feed
        await wait_all([e1, e2], lambda n: jobs[1].id in n.ledger.state.jobs
                       and (fund.id, payer.public_key) in n.ledger.state.outputs, SYNC_S)
        branches = []
        for node, job in ((e1, jobs[0]), (e2, jobs[1])):
            pay = Transfer(to=node.key, amount=10 * 50, spends=[fund.id], memo="escrow", job=job.id,
                           offer=offers[node.name])
            branches.append((node, sign_entry(payer, swarm=feeds.swarm, seq=3, prev=jobs[1].id, body=pay,
                                              time_ms=w1.market._now_ms())))
        for node, entry in branches:   # one branch to each executor, at the same moment
            outcome = await node.ledger.append(entry)
            assert outcome.status in (Status.APPENDED, Status.FORK), outcome
            node.peer.announce(entry)
        await wait_all(nodes, lambda n: payer.public_key in n.ledger.state.frozen, SYNC_S)
        for node in (e1, e2):
            await node.market.wait_witnesses(SYNC_S)
        for node in nodes:
            assert not node.ledger.state.receipts and not node.market.started, node.name
            assert all(info.status != "ran" for info in node.ledger.state.jobs.values())


def _own_offer(node: MarketNode, job: bytes) -> bytes | None:
    info = node.ledger.state.jobs.get(job)
    return next((o for o in info.offers if node.ledger.state.offers[o].author == node.key), None) if info else None


def _outputs(node: MarketNode, owner: bytes) -> list[bytes]:
    return [e for (e, o) in node.ledger.state.outputs if o == owner]


@pytest.mark.slow
async def test_a_lying_executor_is_refunded_by_a_spot_check_and_loses_reputation(tmp_path: Path,
                                                                                   data: PreparedData) -> None:
    checked = MarketConfig(offer=False, spot_check_rate=1.0)
    cheat = MarketConfig(offer=True, price_ucr_per_gpu_s=10, spot_check_rate=1.0)
    roles: list[Role] = [("user", USER1, checked, None), ("cheater", EXEC[0], cheat, lying_runner(0.5)),
             ("verifier", VERIFIER, checked, trainer_runner(data.root, tmp_path / "scratch", tmp_path))]
    # every receipt is picked by the payer's revealed secret (the spec's rate: 1000 per mille)
    async with swarm(tmp_path, roles, spot_check_per_mille=1000) as nodes:
        user, cheater, _ = nodes
        before = user.balance()
        job = await user.submit()
        await wait_all(nodes, lambda n: job_status(n, job) == "refunded", RUN_S)
        for node in nodes:
            state = node.ledger.state
            rep = state.reputation[cheater.key]
            assert (rep.paid, rep.refunded) == (0, 1)
            assert state.balances.get(USER1.public_key) == before and not state.held
            assert state.balances.get(cheater.key, 0) == 0
        settle = await user.ledger.get(user.ledger.state.jobs[job].settle)  # type: ignore[arg-type]
        assert settle is not None and settle.author == VERIFIER.public_key and isinstance(settle.body, Settle)
        assert "replay measured val_bpb" in settle.body.reason


@pytest.mark.slow
async def test_a_picked_honest_job_is_paid_by_the_verifiers_own_measured_time(tmp_path: Path,
                                                                               data: PreparedData) -> None:
    """The payer's secret, committed in the job and revealed after the receipt, picks the job (the
    spec's rate: every one); the executor signed its receipt before the pick was knowable. The
    verifier replays it and pays from its own measured GPU time, never more than the receipt."""
    run = trainer_runner(data.root, tmp_path / "scratch", tmp_path)
    checked = MarketConfig(offer=False)
    roles: list[Role] = [("user", USER1, checked, None), ("exec", EXEC[0], SELLS, run),
                         ("verifier", VERIFIER, checked, trainer_runner(data.root, tmp_path / "vscratch", tmp_path))]
    async with swarm(tmp_path, roles, spot_check_per_mille=1000) as nodes:
        user, executor, _ = nodes
        job = await user.submit()
        await wait_all(nodes, lambda n: job_status(n, job) == "settled", RUN_S)
        state = user.ledger.state
        info = state.jobs[job]
        assert info.job.check_hash is not None and info.revealed is not None  # committed, then revealed
        settle = await user.ledger.get(info.settle)  # type: ignore[arg-type]
        assert settle is not None and settle.author == VERIFIER.public_key and isinstance(settle.body, Settle)
        assert settle.body.outcome == "paid" and settle.body.gpu_s is not None and settle.body.gpu_s > 0
        want, _ = settle_amount(state, job, settle.body.gpu_s)
        assert settle.body.amount == want <= settle_amount(state, job)[0]
        assert state.reputation[executor.key].paid == 1


async def test_cancel_before_acceptance_and_bad_requests(tmp_path: Path) -> None:
    dear = MarketConfig(offer=True, price_ucr_per_gpu_s=1000, spot_check_rate=0.0)  # above every job's price
    async with swarm(tmp_path, [("user", USER1, PAYS, None), ("exec", EXEC[0], dear, None),
                                ("other", USER2, PAYS, None)]) as nodes:
        user = nodes[0]
        job = await user.submit()
        await wait_all(nodes, lambda n: job_status(n, job) == "open", SYNC_S)
        await user.market.cancel(job)
        await wait_all(nodes, lambda n: job_status(n, job) == "cancelled", SYNC_S)
        with pytest.raises(BadJobRequest, match="only an open job can be cancelled"):
            await user.market.cancel(job)
        balance = user.balance()
        for kwargs, says in [({"job_type": "mine"}, "unknown job type 'mine'"),
                             ({"price": -1}, "price must be positive"),
                             ({"max_gpu_s": 1000, "price": balance // 1000 + 1}, "more than the balance of")]:
            with pytest.raises(BadJobRequest, match=says) as info:
                await user.submit(**kwargs)  # type: ignore[arg-type]
            assert "\n" not in str(info.value)
