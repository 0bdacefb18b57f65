"""Verification on one node: which claims its workers may replay now, the replay itself, and the
Verify entry and mints that follow.

The choices are node/research/verifier.py's pure functions; this module adds what only a running
node knows: which claims a worker is replaying now, whose commit no peer served, and which
replays were too slow to say anything (a busy machine) and when to try them again.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from ledger import assign, credits
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
from node.research.runs import Runs, Stats, replay_outputs

SLOW_REPLAY_TRIES = 3        # replays too slow for the budget before the verifier publishes that they do not fit
SLOW_REPLAY_WAIT_BUDGETS = 6  # a too-slow replay is tried again after this many budgets (a busy moment passes)

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
        self.unavailable: set[bytes] = set()    # claims whose commit this node cannot read
        self.inconclusive: dict[bytes, tuple[int, float]] = {}  # claim -> (replays too slow, retry after: clock s)

    def verifying_identity(self, platform_class: str) -> Identity | None:
        """Which of our keys verifies in this class: the verifier key where the swarm trusts it (our
        own solo swarm), else the research key where the swarm admitted it; None: we may not verify."""
        state = self.ledger.state
        for identity in (self.verifier, self.researcher):
            if credits.trusted(state, identity.public_key, platform_class):
                return identity
        return None

    def _never_vouch_for(self, verifying: Identity, platform_class: str) -> frozenset[bytes]:
        """Our own research key's claims, once some other trusted verifier can vouch for them instead."""
        if verifying.public_key == self.researcher.public_key:
            return frozenset()   # the ledger refuses an author verifying itself anyway
        mine = {self.researcher.public_key, self.verifier.public_key}
        others = any(platform_class in classes and key not in mine
                     for key, classes in self.ledger.state.verifiers.items())
        return frozenset({self.researcher.public_key}) if others else frozenset()

    def _waiting(self) -> set[bytes]:
        """Claims whose last replay here was too slow, until their retry time."""
        now = self.clock()
        return {claim for claim, (_, after) in self.inconclusive.items() if after > now}

    def queue(self, platform_class: str) -> tuple[Identity | None, list[ClaimRecord]]:
        """The key this worker verifies with and the claims it may replay now, most promising first."""
        verifying = self.verifying_identity(platform_class)
        if verifying is None:
            return None, []
        return verifying, verifier.verification_queue(
            self.ledger.state, self.history, verifying.public_key, platform_class,
            self.busy | self.unavailable | self._waiting(),
            own=self._never_vouch_for(verifying, platform_class), now_ms=int(self.clock() * 1000))

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
        body, cls = record.body, device.platform_class
        self.busy.add(record.id)
        try:
            if not await self.have(body.commit) or (body.parent is not None and not await self.have(body.parent)):
                self.unavailable.add(record.id)  # asked again after a restart, or once a peer serves it
                self.display.event(f"[{device.label}] skip verifying {record.id.hex()[:12]}: its commit is "
                                   "not here and no peer served its bundle")
                return
            cand, parent = await self.runs.materialize(device, body.commit, body.parent)
            result = await self.runs.run(device, f"verify {record.id.hex()[:8]}", cand, parent, steps=body.num_steps,
                                         seed=body.seed, horizon=body.planned_steps or None,
                                         eval_seed=assign.replay_eval_seed(self.ledger.state, record.id))
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
                    self.inconclusive[record.id] = (tries, self.clock() + budget * SLOW_REPLAY_WAIT_BUDGETS)
                    if tries >= SLOW_REPLAY_TRIES:
                        self.unavailable.add(record.id)  # killed every time: left to other verifiers
                    self.display.event(f"[{device.label}] replay {tries} of {record.id.hex()[:12]} too slow "
                                       f"({(reason if killed else slow)[:120]}): inconclusive, not published")
                    return
                status, value, reason = "timeout", None, slow
            verify = Verify(claim=record.id, commit=body.commit, platform_class=cls, status=status, val_bpb=value,
                            num_steps=max(0, result.num_steps), seed=result.seed,
                            training_s=max(0.0, result.training_s),
                            outputs=replay_outputs(result) if status == "ok" else None)
            entry = await self.publish(verifying, verify)
            self.stats.verifications += 1
            await self._mint(device, verifying, record, entry.id, value, f"{status}: {reason[:160]}")
        finally:
            self.busy.discard(record.id)

    async def _mint(self, device: Device, verifying: Identity, record: ClaimRecord, verify_id: bytes,
                    value: float | None, failure: str) -> None:
        claimed = record.body.val_bpb
        agreed = "" if value is None or claimed is None else f" (claimed {claimed:.4f}, diff {value - claimed:+.4f})"
        text = f"[{device.label}] verified {record.id.hex()[:12]}: {value:.4f}{agreed}" if value is not None else \
            f"[{device.label}] verification of {record.id.hex()[:12]} failed ({failure}): refuted"
        state = self.ledger.state
        mint, why = verifier.record_mint(state, verifying.public_key, record.id)
        if mint is not None:
            await self.publish(verifying, mint)
            text += (f"; RECORD, minted {mint.amount / UCR_PER_CREDIT:.6f} credits to {short_id(mint.to)}"
                     if mint.prev_best is not None
                     else "; RECORD (no credits yet: records pay from the second one a verifier sees in a class, "
                          "so no verifier can mint from nothing)")
        elif record.id in state.verified:
            text += "; a confirmation re-run of the best (earns the fee, not a record share)" \
                if why == "the minter must be part of the quorum" else f"; {why}"
        elif record.id in state.refuted:
            text += f"; REFUTED: the quorum measured {state.refuted[record.id]:.4f}, beyond the noise of the claim"
        fee = verifier.verification_mint(self.ledger.state, verifying.public_key, verify_id)
        if fee is not None:
            await self.publish(verifying, fee)
        self.display.event(text)
