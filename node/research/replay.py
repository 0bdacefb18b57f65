"""Verification on one node: which claims its workers may replay now, the replay itself, and the
Verify entry and mints that follow.

The choices are node/research/verifier.py's pure functions; this module adds what only a running
node knows: which claims a worker is replaying now, whose commit no peer served, and which
replays were too slow to say anything (a busy machine) and when to try them again.

Paired replays (issue 13). A replay never uses the claim's own training seed: that would repeat
the claimant's lucky draw. For each round the fold wants from our key (ledger/evidence.py's
rounds_wanted), the seal draws a seed (ledger/assign.py's replay_train_seed) that the claimant
could not know; the candidate and its parent are both trained on it, with the claim's steps and
horizon, and scored on the claim's rows (replay_eval_seed). The Verify carries both values, so the
evidence is their difference, in which the seed's shared noise cancels. A genesis claim has no
parent: its one replay is unpaired, on the claimant's seed (the quorum rule: does its number
reproduce). Parent runs are kept (ParentRuns, node/research/runs.py), so
claims on one parent that draw one seed and rows train the parent once.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from ledger import assign, credits, evidence
from ledger.bodies import Body, Verify
from ledger.entry import Entry
from ledger.keys import Identity, short_id
from ledger.store import Ledger

from node.config import NodeConfig
from node.display import Display
from node.platform import Device
from node.research import verifier
from node.research.history import ClaimRecord, History
from node.research.limits import UCR_PER_CREDIT
from node.research.experiment import RunResult
from node.research.runs import ParentKey, ParentRuns, Runs, Stats, replay_outputs

# what a paired test's state (ledger/evidence.py `verdict`) means, after a replay that made no record
VERDICT_TEXT = {
    "refuted": "REFUTED by the paired test: the claimed value is far off what its replays measured",
    "loss": "paired test: no gain over its parent, no record",
    "exhausted": "paired test: no clear gain in the most rounds a claim gets, no record",
    "win": "paired test: a gain, but not past the records' false-discovery level",
    "waiting": "paired test: rounds in; waiting for the class's noise estimate to come of age",
    "open": "paired test: open, more rounds wanted",
}
SLOW_REPLAY_TRIES = 3        # replays too slow for the budget before the verifier publishes that they do not fit
SLOW_REPLAY_WAIT_BUDGETS = 6  # a too-slow replay is tried again after this many budgets (a busy moment passes)
# A claim whose commit no peer served is asked for again after MISSING_RETRY_S, then twice as long
# each time, at most MISSING_RETRY_MAX_S: its author's bundle gate serves it only once the author
# holds the claim's seal (node/bundlegate.py), which may reach us before it reaches the author.
MISSING_RETRY_S = 15.0
MISSING_RETRY_MAX_S = 600.0

Publish = Callable[[Identity, Body], Awaitable[Entry]]
Have = Callable[[bytes], Awaitable[bool]]


class Replays:
    def __init__(self, config: NodeConfig, ledger: Ledger, history: History, researcher: Identity,
                 verifier_id: Identity, runs: Runs, stats: Stats, display: Display, publish: Publish, have: Have,
                 clock: Callable[[], float]) -> None:
        self.config, self.ledger, self.history, self.runs, self.display = config, ledger, history, runs, display
        self.stats = stats
        self.researcher, self.verifier = researcher, verifier_id
        self.publish, self.have, self.clock = publish, have, clock
        self.busy: set[bytes] = set()           # claims a worker is verifying now
        self.unavailable: set[bytes] = set()    # claims left to other verifiers (replays killed every time)
        self.missing: dict[bytes, tuple[int, float]] = {}      # claim -> (tries, ask again after: clock s)
        self.inconclusive: dict[bytes, tuple[int, float]] = {}  # claim -> (replays too slow, retry after: clock s)
        self.published: set[tuple[bytes, bytes, int]] = set()   # (claim, key, round) we published this session
        self.parent_runs = ParentRuns()                         # parent runs of paired replays, reused

    def verifying_identity(self, platform_class: str) -> Identity | None:
        """Which of our keys verifies in this class: the verifier key where the swarm trusts it (our
        own solo swarm), else the research key where the swarm admitted it; None: we may not verify."""
        state = self.ledger.state
        for identity in (self.verifier, self.researcher):
            if credits.trusted(state, identity.public_key, platform_class):
                return identity
        return None

    def _never_vouch_for(self, verifying: Identity, platform_class: str) -> set[bytes]:
        """Our own research key's claims that the verifier key leaves to the other keys their seal
        assigned (node/research/verifier.py's never_vouch_for); none when we verify with the research
        key itself (the ledger refuses an author verifying itself anyway)."""
        if verifying.public_key == self.researcher.public_key:
            return set()
        ours = frozenset({self.researcher.public_key, self.verifier.public_key})
        return verifier.never_vouch_for(self.ledger.state, self.history, self.researcher.public_key, ours,
                                        platform_class)

    def _waiting(self) -> set[bytes]:
        """Claims whose last replay here was too slow (or that had nothing to run), or whose commit no
        peer served, until their retry time."""
        now = self.clock()
        return {claim for table in (self.inconclusive, self.missing) for claim, (_, after) in table.items()
                if after > now}

    def queue(self, platform_class: str) -> tuple[Identity | None, list[ClaimRecord]]:
        """The key this worker verifies with and the claims it may replay now, most promising first."""
        verifying = self.verifying_identity(platform_class)
        if verifying is None:
            return None, []
        return verifying, verifier.verification_queue(
            self.ledger.state, self.history, verifying.public_key, platform_class,
            self.busy | self.unavailable | self._waiting() | self._never_vouch_for(verifying, platform_class),
            now_ms=int(self.clock() * 1000))

    async def catch_up(self) -> int:
        """Publishes mints owed from before a stop (a verify entry whose mints never followed)."""
        published = 0
        for verifying in (self.verifier, self.researcher):
            me = verifying.public_key
            for claim_id in verifier.owed_records(self.ledger.state, me):
                mint, _ = verifier.record_mint(self.ledger.state, me, claim_id)  # against the state as it is now
                if mint is not None:
                    await self.publish(verifying, mint)
                    published += 1
            for fee in verifier.owed_fees(self.ledger.state, me):
                await self.publish(verifying, fee)
                published += 1
        return published

    async def verify(self, device: Device, verifying: Identity, record: ClaimRecord) -> None:
        """Runs the paired rounds the fold wants from `verifying` now (ledger/evidence.py), one
        Verify each; stops at the first inconclusive one (tried again later)."""
        body, me = record.body, verifying.public_key
        self.busy.add(record.id)
        try:
            if not await self.have(body.commit) or (body.parent is not None and not await self.have(body.parent)):
                tries = self.missing.get(record.id, (0, 0.0))[0] + 1
                wait_s = min(MISSING_RETRY_MAX_S, MISSING_RETRY_S * 2 ** min(tries - 1, 16))
                self.missing[record.id] = (tries, self.clock() + wait_s)
                self.display.event(f"[{device.label}] skip verifying {record.id.hex()[:12]}: its commit is "
                                   f"not here and no peer served its bundle (asked again in {wait_s:.0f} s)")
                return
            self.missing.pop(record.id, None)
            ran = 0
            for round_index in self._rounds(record, me):
                if (record.id, me, round_index) in self.published:
                    continue  # ours is in the ledger already; the fold's list lags it (or a bug): never twice
                # the state moves while a round trains: another verifier's round may have decided it
                if round_index not in self._rounds(record, me):
                    continue
                if not await self._round(device, verifying, record, round_index):
                    return
                ran += 1
            if not ran:
                # offered, yet nothing to run (the queue and the fold disagree for a moment, or a bug):
                # the claim waits a budget, so the worker never spins on it
                budget = self.config.budget_s(device.device)
                tries = self.inconclusive.get(record.id, (0, 0.0))[0]
                self.inconclusive[record.id] = (tries, self.clock() + budget)
        finally:
            self.busy.discard(record.id)

    def _rounds(self, record: ClaimRecord, me: bytes) -> list[int]:
        """The rounds to run now: those the fold wants (ledger/evidence.py); for a baseline, which has
        no parent to pair with, its one unpaired replay until the claim is decided or ours is in.
        (Asking the queue again here would leave out what only the queue's clock opens: a claim
        whose first-ranked verifier stalled.)"""
        state = self.ledger.state
        if record.body.parent is None:
            done = record.id in state.decisions or me in state.measured.get(record.id, {})
            return [] if done else [0]
        return evidence.rounds_wanted(state, record.id, me)

    async def _round(self, device: Device, verifying: Identity, record: ClaimRecord, round_index: int) -> bool:
        """One paired round: the candidate, then its parent (or the cached parent run) on the seed the
        seal draws for (claim, verifier, round); published as one Verify. False: inconclusive."""
        body, cls, short = record.body, device.platform_class, record.id.hex()[:12]
        state = self.ledger.state
        seed = assign.replay_train_seed(state, record.id, verifying.public_key, round_index)
        if seed is None:  # no seal, so no assignment either: the queue never offers such a claim
            self.display.event(f"[{device.label}] skip verifying {short}: it has no seal yet")
            return False
        if body.parent is None:
            # a baseline is judged by the quorum rule: does the claimant's own number reproduce? Its
            # seed, then: on another seed an honest baseline of a few steps misses the spec's
            # tolerance about one time in five (docs/benchmarks.md, "Node: paired replays")
            seed = body.seed
        eval_seed = assign.replay_eval_seed(state, record.id)
        steps, horizon = body.num_steps, body.planned_steps or None
        cand, parent = await self.runs.materialize(device, body.commit, body.parent)
        what = f"verify {record.id.hex()[:8]}" + (f" round {round_index}" if round_index else "")
        result = await self.runs.run(device, what, cand, parent, steps=steps, seed=seed, horizon=horizon,
                                     eval_seed=eval_seed)
        status, value, reason = result.status, result.val_bpb, result.reason
        budget = self.config.budget_s(device.device)
        killed = status == "timeout"
        if killed or status == "ok" and not verifier.fits_budget(result.training_s, budget):
            # Too slow: the claimed steps may not fit the budget on this class, or this machine is
            # just busy (other nodes' trainers, other jobs). Only a replay too slow every time is
            # evidence; one killed at its wall-clock limit never is (an absurd step count stays
            # unverified and mints nothing).
            tries = self.inconclusive.get(record.id, (0, 0.0))[0] + 1
            slow = f"replay trained {result.training_s:.1f} s, budget {budget} s"
            if killed or tries < SLOW_REPLAY_TRIES:
                self._retry_later(record.id, tries, budget, final=tries >= SLOW_REPLAY_TRIES)
                self.display.event(f"[{device.label}] replay {tries} of {short} too slow "
                                   f"({(reason if killed else slow)[:120]}): inconclusive, not published")
                return False
            status, value, reason = "timeout", None, slow
        paired: RunResult | None = None
        if status == "ok" and body.parent is not None and parent is not None:
            key = ParentKey(body.parent, seed, cls, steps, horizon, eval_seed)
            paired = await self._parent_run(device, key, parent, what)
            if paired.status == "timeout":  # killed at its wall-clock limit: a busy machine, not evidence
                tries = self.inconclusive.get(record.id, (0, 0.0))[0] + 1
                self._retry_later(record.id, tries, budget, final=False)
                self.display.event(f"[{device.label}] the parent run for {short} was killed "
                                   f"({paired.reason[:120]}): inconclusive, not published")
                return False
        verify = Verify(claim=record.id, commit=body.commit, platform_class=cls, status=status, val_bpb=value,
                        num_steps=max(0, result.num_steps), seed=seed, training_s=max(0.0, result.training_s),
                        outputs=replay_outputs(result) if status == "ok" else None, round_index=round_index,
                        parent_val_bpb=paired.val_bpb if paired is not None else None)
        entry = await self.publish(verifying, verify)
        self.published.add((record.id, verifying.public_key, round_index))
        self.stats.verifications += 1
        await self._mint(device, verifying, record, entry.id, verify, f"{status}: {reason[:160]}", paired)
        return True

    async def _parent_run(self, device: Device, key: ParentKey, parent_py: Path, what: str) -> RunResult:
        """The parent's run on the round's seed and rows: from the cache when this node trained it
        for another claim already, else trained now (and kept)."""
        cached = self.parent_runs.get(key)
        if cached is not None:
            self.stats.parent_cache_hits += 1
            return cached
        self.stats.parent_cache_misses += 1
        result = await self.runs.run(device, f"{what}: parent {key.commit.hex()[:8]}", parent_py, None,
                                     steps=key.steps, seed=key.seed, horizon=key.horizon, eval_seed=key.eval_seed)
        self.parent_runs.put(key, result)
        return result

    def _retry_later(self, claim_id: bytes, tries: int, budget_s: int, *, final: bool) -> None:
        self.inconclusive[claim_id] = (tries, self.clock() + budget_s * SLOW_REPLAY_WAIT_BUDGETS)
        if final:
            self.unavailable.add(claim_id)  # killed every time: left to other verifiers

    async def _mint(self, device: Device, verifying: Identity, record: ClaimRecord, verify_id: bytes,
                    verify: Verify, failure: str, paired: RunResult | None) -> None:
        text = f"[{device.label}] " + replay_text(record, verify, failure, paired)
        state = self.ledger.state
        mint, why = verifier.record_mint(state, verifying.public_key, record.id)
        if mint is not None:
            await self.publish(verifying, mint)
            text += (f"; RECORD, minted {mint.amount / UCR_PER_CREDIT:.6f} credits to {short_id(mint.to)}"
                     if mint.prev_best is not None
                     else "; RECORD (no credits yet: records pay from the second one a verifier sees in a class, "
                          "so no verifier can mint from nothing)")
            row = state.record_of.get(record.id)
            if row is not None and row.gain is not None and row.low is not None and row.high is not None:
                text += f" (gain {row.gain:.4f}, 95% interval {row.low:.4f} to {row.high:.4f}, {row.seeds} seeds)"
        elif (verdict := evidence.verdict(state, record.id)) is not None:
            text += "; " + VERDICT_TEXT.get(verdict, f"paired test: {verdict}")
        elif record.id in state.verified:
            text += "; a confirmation re-run of the best (earns the fee, not a record share)" \
                if why == "the minter must be part of the quorum" else f"; {why}"
        elif record.id in state.refuted:
            text += f"; REFUTED: the quorum measured {state.refuted[record.id]:.4f}, beyond the noise of the claim"
        fee = verifier.verification_mint(self.ledger.state, verifying.public_key, verify_id)
        if fee is not None:
            await self.publish(verifying, fee)
        self.display.event(text)


def replay_text(record: ClaimRecord, verify: Verify, failure: str, paired: RunResult | None) -> str:
    """`verified 1a2b..: 1.2345 (seed 77, round 0; parent 1.2400 on the same seed: paired diff -0.0055;
    claimed 1.2300)`: one round's result for the log."""
    short, value, claimed = record.id.hex()[:12], verify.val_bpb, record.body.val_bpb
    if value is None:
        return f"verification of {short} failed ({failure}): refuted"
    where = f"seed {verify.seed}" + (f", round {verify.round_index}" if verify.round_index else "")
    if verify.parent_val_bpb is not None:
        diff = value - verify.parent_val_bpb
        where += f"; parent {verify.parent_val_bpb:.4f} on the same seed: paired diff {diff:+.4f}"
    elif paired is not None:
        where += f"; the parent failed on this seed ({paired.status}): unpaired"
    if claimed is not None:
        where += f"; claimed {claimed:.4f}"
    return f"verified {short}: {value:.4f} ({where})"
