"""Verification decisions: which claims to re-run, and which mints a verify entry justifies.

Pure functions of the fold's state and the history index: no IO, no clock (the caller passes the
time in). The research loop (node/research/loop.py) runs the replays and publishes what these return.

Theory of operation. A replay costs as much GPU time as the experiment it checks, and nothing
tells one verifier what the others are re-running right now, so the policy must keep the swarm's
replays few without coordination; and a record needs its quorum's median to beat the previous
record's median by only spec.noise_bpb, so the policy must also keep noise from passing that test.
Five rules, each a pure function of the ledger:

1. Only claims that could become records. Before anything is verified: the baseline's claims
   (every successful claim if there is none), since a child replayed then meets no bar at all.
   Afterwards a claim is *settled* (never replayed again) once it is verified, refuted or failed,
   or its own number does not beat the class's best by the noise; the best only falls, so a
   settled claim stays settled (the simulator prunes its index on that promise; the one
   exception, the best itself while rule 5 re-measures it, is settled once that is done). A
   commit claimed twice is replayed through its first open claim only.
2. A margin tied to the measured noise. A claim is replayed only if its own number beats the
   reference by the record margin (spec.noise_bpb) plus CLAIM_Z run-to-run standard deviations,
   estimated from the spread of all re-runs of one claim in the ledger (the spec's noise until
   there are enough). A claim of a program that is no better than the best passes only by a lucky
   run; its author's run is independent of the verifiers' runs, so this gate multiplies down the
   chance that noise becomes a record, and most of the swarm's replays go to real gains.
3. Sequential replays. A claim's first replay comes from one verifier; the others of the quorum
   follow only while the replays so far would still make a record: their median beats the best
   by the noise and the margin, and is within the noise of the claimed value (else the fold
   refutes the claim). Most lucky claims cost one replay, not a quorum.
4. The sealed assignment. Only the keys a claim's seal assigns (ledger/assign.py: spec.assigned
   trusted keys, ranked by a hash of the seal, which an anchor signs after the claim) count for
   it or earn its fee, so a verifier replays only claims that are sealed and assign it; an
   unsealed claim waits for its seal. Within the assignment a verifier replays a claim only
   when its rank is below the number of replays the claim needs now (one more for every replay
   that disagreed, at most MAX_EXTRA_REPLAYS more), so the assigned keys do not all spend a
   replay on a claim one of them may settle. One more rank opens for every time budget a claim
   waits past STALL_BUDGETS budgets, so an offline assigned verifier delays a claim; when every
   assigned key is offline the claim waits (docs/architecture.md).
5. A re-measured reference. The best's value is the median of a quorum, itself a noisy draw; when
   it fell high, a no-better program needs less luck to beat it. So CONFIRM_REPLAYS more verifiers
   of its assignment (at most all of it) replay each new best (they mint nothing for it:
   quorum_of counts only the replays the fold used), and rule 2's reference is the lower of the
   best and the mean of all its replays.

Since issue 13 these five rules (`unpaired_queue`) choose only the replays of a class's baseline,
the one claim with no parent to pair with; a simulated swarm still runs them whole to compare the
old rule. Every other claim is judged by the paired test of ledger/evidence.py, and the node's
queue (`verification_queue`) offers a claim for as long as the fold wants paired rounds of it from
this key (`rounds_wanted`: assigned by the seal, worth testing, test still open);
node/research/replay.py runs them. A failed replay of our own ends our part in a claim.

Among the claims left, the most promising first: a lower claimed value is both a larger gain and
a higher chance of being a real record. Mints are built to the credit rules of ledger/credits.py
and checked with its own `check_mint` before they are published, so the node never signs a mint
the fold would refuse.
"""
from __future__ import annotations

import math
import statistics

from ledger import assign, credits, evidence, facts, plausible, standing
from ledger.bodies import MAX_SEAL_CLAIMS, Mint
from ledger.fold import State

from node.research.history import ClaimRecord, History

# A replay whose training took longer than budget x slack + grace does not fit the class. Coarse on
# purpose: it catches step counts no machine of the class could run in the budget, while timing on a
# shared machine jitters by several times for tiny budgets (hence the fixed grace).
REPLAY_FIT_SLACK = 1.5
REPLAY_FIT_GRACE_S = 10.0

# Rule 2: a claim must beat the reference by noise_bpb + CLAIM_Z x (estimated run-to-run sd). Chosen
# with scripts/bench_node.py --sim (docs/benchmarks.md): without rule 5, at 1.0 or 1.5, about one
# record in 80 was noise; with 1.5 and rule 5 none was, at the realistic noise or twice it, and the
# record path still reached 92% of the best true gain any node's program had.
CLAIM_Z = 1.5
MIN_NOISE_SAMPLES = 8      # re-run claims needed before the ledger's own noise estimate replaces the spec's
MAX_EXTRA_REPLAYS = 2      # replays beyond the quorum one claim may get when its replays disagree
CONFIRM_REPLAYS = 4        # replays of the class's best beyond its quorum: the reference for rule 2
SPEC_NOISE_SDS = 3.0       # standard deviations in a spec's noise_bpb (the tolerance node/research/noise.py recommends)
STALL_BUDGETS = 6          # a claim waits this many time budgets before the next verifier rank opens


def unpaired_settled(state: State, record: ClaimRecord) -> bool:
    """Whether no verifier will ever replay this claim again under the unpaired rules (monotone:
    once True, True forever)."""
    body = record.body
    decision = state.decisions.get(record.id)
    if decision is not None and not any(facts.anchored(state, state.verifies[vid].author, body.platform_class)
                                        for vid in decision.quorum):
        return False  # decided by earned keys alone: it stays open until an anchor has replayed it
    if record.id in state.verified:
        return not _confirming(state, record)
    if record.id in state.refuted or body.status != "ok" or body.val_bpb is None or body.num_steps < 1:
        return True
    values = list(state.measured.get(record.id, {}).values())
    if len(values) >= _max_replays(state):
        return True  # its replays keep disagreeing: a noisy program is no record either way
    noise = state.spec.noise_bpb.get(body.platform_class, 0.0)
    median = statistics.median(values) if values else None
    if median is not None and abs(median - body.val_bpb) > noise:
        return True  # replays so far would refute it (ledger/fold.py): the rest of a quorum buys nothing
    best = state.best.get(body.platform_class)
    if best is None:
        return False
    # replays that say "no record" end the claim too; the best only falls, so they keep saying it
    return not body.val_bpb < best - noise or median is not None and not median < best - noise


def reference(state: State, platform_class: str) -> float | None:
    """What a claim must beat (before margins): the class's best, or the mean of all replays of the
    best's program where that is lower (the quorum's median was a lucky-high draw)."""
    best, claim = state.best.get(platform_class), _best_claim(state, platform_class)
    if best is None or claim is None:
        return best
    values = list(replays_of(state, claim).values())
    return min(best, sum(values) / len(values)) if values else best


def replays_of(state: State, claim_id: bytes) -> dict[bytes, float]:
    """Each trusted verifier's first successful replay of a claim, also those after it was verified."""
    claim = state.claims[claim_id]
    out: dict[bytes, float] = {}
    for v in state.verifies.values():
        if (v.claim == claim_id and v.value is not None and v.author not in out and v.author != claim.author
                and credits.trusted(state, v.author, claim.platform_class)):
            out[v.author] = v.value
    return out


def _best_claim(state: State, platform_class: str) -> bytes | None:
    return next((row.claim for row in reversed(state.records) if row.platform_class == platform_class), None)


def _confirming(state: State, record: ClaimRecord) -> bool:
    """Whether the claim is its class's best and still short of its confirmation replays, of which
    only its assigned keys can give it any (so at most every one of them)."""
    if record.id != _best_claim(state, record.body.platform_class):
        return False
    assigned = assign.assignment(state, record.id) or ()
    done = sum(1 for key in replays_of(state, record.id) if key in assigned)
    return done < min(state.spec.quorum + CONFIRM_REPLAYS, len(assigned))


def noise_sd(state: State, platform_class: str) -> float:
    """Run-to-run sd of val_bpb: pooled from claims re-run more than once, else the spec's noise."""
    squares, dof = 0.0, 0
    for claim_id, by in state.measured.items():
        if len(by) < 2 or state.claims[claim_id].platform_class != platform_class:
            continue
        values = list(by.values())
        mean = sum(values) / len(values)
        squares += sum((v - mean) ** 2 for v in values)
        dof += len(values) - 1
    if dof < MIN_NOISE_SAMPLES:
        # the spec's noise is a tolerance of about three standard deviations (node/research/noise.py's k)
        return state.spec.noise_bpb.get(platform_class, 0.0) / SPEC_NOISE_SDS
    return math.sqrt(squares / dof)


def unpaired_queue(state: State, history: History, verifier: bytes, platform_class: str,
                       skip: set[bytes], own: frozenset[bytes] = frozenset(),
                       now_ms: int | None = None) -> list[ClaimRecord]:
    """Claims worth this verifier's unpaired replay (rules 1-5), best first: the paired queue's
    baselines, and the whole queue of a simulated swarm that compares the rule before issue 13.
    `own`: authors it must not vouch for (the node's own research key, once another trusted
    verifier can do it instead). `now_ms`: the time, which lets stalled claims reach further
    verifiers; without it they wait for their ranks."""
    if not credits.trusted(state, verifier, platform_class):
        return []
    best = state.best.get(platform_class)
    noise = state.spec.noise_bpb.get(platform_class, 0.0)
    # cheapest filters first: this runs before every job of every worker
    open_claims = [r for r in history.of_class(platform_class) if not unpaired_settled(state, r)]
    if not open_claims:
        return []
    # never replayed: claims whose numbers cannot be true, and claims of authors with too many
    # refuted ones (a verified best is still re-measured: rule 5 protects the reference)
    barred = standing.barred_authors(state)
    open_claims = [r for r in open_claims if r.id in state.verified
                   or r.author not in barred and not plausible.implausible(state.spec, r.body)]
    confirm = [r for r in open_claims if r.id in state.verified]  # the best, re-measured (rule 5)
    open_claims = [r for r in open_claims if r.id not in state.verified]
    # one program, one verification: a commit re-claimed (every early node runs the baseline) is
    # replayed through its first open claim only, and not at all once any claim of it is verified
    done = {state.claims[c].commit for c in state.verified}
    first: dict[bytes, ClaimRecord] = {}
    for r in sorted(open_claims, key=lambda r: (r.time_ms, r.id)):
        if r.body.commit not in done:
            first.setdefault(r.body.commit, r)
    if best is None and any(r.body.parent is None for r in first.values()):
        # nothing to judge a claim against yet: only the baseline, the one claim whose record needs no bar
        first = {c: r for c, r in first.items() if r.body.parent is None}
    candidates = [r for r in [*first.values(), *confirm]
                  if r.id not in skip and r.author != verifier and r.author not in own]
    if not candidates:
        return []
    queue = [r for r in candidates if verifier not in state.measured.get(r.id, {})
             and (rank := _rank(state, r.id, verifier)) is not None and rank < _replays_wanted(state, r, noise, now_ms)]
    queue = [r for r in queue if r.id not in state.verified or verifier not in replays_of(state, r.id)]
    if best is not None and any(r.id not in state.verified for r in queue):
        ref = reference(state, platform_class)
        bar = (best if ref is None else ref) - noise - CLAIM_Z * noise_sd(state, platform_class)
        queue = [r for r in queue if r.id in state.verified or r.body.val_bpb is not None and r.body.val_bpb < bar
                 and (not (values := list(state.measured.get(r.id, {}).values())) or statistics.median(values) < bar)]
    if queue:  # a failed replay of ours is not in `measured`: look for one only now, it is rare
        queue = [r for r in queue if r.id not in _failed_by(state, verifier)]
    return sorted(queue, key=lambda r: (r.id in state.verified, r.body.parent is not None, r.body.val_bpb,
                                        r.time_ms, r.id))


def verification_queue(state: State, history: History, verifier: bytes, platform_class: str,
                       skip: set[bytes], own: frozenset[bytes] = frozenset(),
                       now_ms: int | None = None) -> list[ClaimRecord]:
    """What the node's verifier replays, best first: the baseline while the class has no best (an
    unpaired replay, `unpaired_queue`), else the claims ledger/evidence.py asks this key for a
    paired round of (`rounds_wanted`: assigned, worth testing, test still open; `own` does not
    apply: a round skipped by its assigned key would stall the test, see `never_vouch_for`),
    lowest claimed value first. node/sim/simulate.py's "paired" swarms run this same function."""
    if not credits.trusted(state, verifier, platform_class):
        return []
    if platform_class not in state.best:
        return [r for r in unpaired_queue(state, history, verifier, platform_class, skip, own, now_ms)
                if r.body.parent is None]
    barred = standing.barred_authors(state)  # authors with too many refuted claims
    out = [r for r in history.of_class(platform_class)
           if r.body.parent is not None and r.id not in skip and r.author != verifier and r.author not in barred
           and not settled(state, r) and not plausible.implausible(state.spec, r.body)
           and evidence.rounds_wanted(state, r.id, verifier)]
    if out:  # a failed replay of ours ends our part (the program fails here); rare: look only now
        failed = _failed_by(state, verifier)
        out = [r for r in out if r.id not in failed]
    return sorted(out, key=lambda r: (r.body.val_bpb if r.body.val_bpb is not None else math.inf, r.time_ms, r.id))


def settled(state: State, record: ClaimRecord) -> bool:
    """Never offered by `verification_queue` again (monotone: the best only falls): decided, failed,
    its paired test stopped, or its own number no better than the best; a baseline once the class
    has a best."""
    body = record.body
    cls = body.platform_class
    if record.id in state.decisions or body.status != "ok" or body.val_bpb is None:
        return True
    best = state.best.get(cls)
    if body.parent is None:
        return best is not None
    stream = state.streams.get(cls)
    return (stream is not None and record.id in stream.tests) or (best is not None and not body.val_bpb < best)


def _failed_by(state: State, verifier: bytes) -> set[bytes]:
    """The claims a replay of this verifier failed (no value): its part in them is over."""
    return {v.claim for v in state.verifies.values() if v.author == verifier and v.value is None}


def never_vouch_for(state: State, history: History, researcher: bytes, ours: frozenset[bytes],
                    platform_class: str) -> set[bytes]:
    """Our research key's baselines that our verifier key leaves to others: those whose assignment
    (ledger/assign.py) holds at least a quorum of keys not ours, so other verifiers can decide them.
    A claim the seal assigned (mostly) to us is ours to replay: skipping it would leave it
    undecided, since no other key's replay counts for it. Claims with a parent are never left: each
    paired round belongs to one assigned key (ledger/evidence.py's round_owner), so an assigned key
    of ours that skipped its round would stall the claim's test for good; its seed is the seal's
    draw, not ours to choose."""
    quorum = state.spec.quorum
    out = set()
    for record in history.of_class(platform_class):
        if record.author != researcher or record.body.parent is not None:
            continue
        assigned = assign.assignment(state, record.id)
        if assigned is not None and sum(1 for key in assigned if key not in ours) >= quorum:
            out.add(record.id)
    return out


def _max_replays(state: State) -> int:
    return state.spec.quorum + MAX_EXTRA_REPLAYS


def _replays_wanted(state: State, record: ClaimRecord, noise: float, now_ms: int | None) -> int:
    """How many verifier ranks a claim reaches now: one until its first replay is in, then the
    quorum plus one per replay outside the agreeing set, plus one per stalled time budget."""
    if record.id in state.verified:
        return state.spec.quorum + CONFIRM_REPLAYS
    values = list(state.measured.get(record.id, {}).values())
    if not values:
        wanted = 1
    else:
        _, agree = credits.agreeing(values, noise)
        wanted = min(state.spec.quorum + len(values) - len(agree), _max_replays(state))
    if now_ms is not None:
        budget_ms = 1000 * state.spec.time_budget_s
        waited = (now_ms - record.time_ms) // budget_ms - STALL_BUDGETS
        wanted += max(0, waited)
    return wanted


def _rank(state: State, claim_id: bytes, key: bytes) -> int | None:
    """The key's place in the claim's assignment (the fold's rank order, the same on every node);
    None when the claim has no seal yet or its seal did not assign the key: no wait opens it."""
    assigned = assign.assignment(state, claim_id)
    return assigned.index(key) if assigned is not None and key in assigned else None


def sealable(state: State, sealer: bytes, limit: int = MAX_SEAL_CLAIMS) -> list[bytes]:
    """Claims an anchor's node seals now: successful claims with no seal yet, not its own (a seal
    does not count for its author's claims), oldest first, at most `limit` (one seal entry)."""
    if not assign.may_seal(state, sealer):
        return []
    due = [(info.time_ms, claim_id) for claim_id, info in state.claims.items()
           if claim_id not in state.seals and info.claimed is not None and info.author != sealer]
    return [claim_id for _, claim_id in sorted(due)[:limit]]


def fits_budget(training_s: float, budget_s: int) -> bool:
    """The verifier's check that the claimed steps fit the class's time budget on its own hardware."""
    return training_s <= budget_s * REPLAY_FIT_SLACK + REPLAY_FIT_GRACE_S


def quorum_of(state: State, claim_id: bytes) -> list[bytes]:
    """The verify entries that decided the claim (ledger/facts.py), in the fold's fixed order; empty
    while undecided. A confirming replay after the decision is in no quorum and mints nothing."""
    decision = state.decisions.get(claim_id)
    return [] if decision is None else list(decision.quorum)


def record_mint(state: State, verifier: bytes, claim_id: bytes) -> tuple[Mint | None, str]:
    """The record mint this verifier may publish for a record claim, or why there is none: the
    fold's own rule (one record's worth, split across the deciding quorum; ledger/credits.py)."""
    return credits.record_mint(state, verifier, claim_id)


def verification_mint(state: State, verifier: bytes, verify_id: bytes) -> Mint | None:
    """The fee for one of this verifier's own verify entries, where the swarm pays one."""
    if state.spec.verify_ucr <= 0:
        return None
    mint = Mint(reason="verification", subject=verify_id, quorum=[], to=verifier, amount=state.spec.verify_ucr,
                value=None, prev_best=None)
    return None if credits.check_mint(state, verifier, mint) else mint


def owed_records(state: State, verifier: bytes) -> list[bytes]:
    """Record claims this verifier helped verify but has not minted for, in record order.

    A stop between a verify entry and its mint leaves these; publishing them in record order
    gives each the prev_best it would have had if the node had never stopped.
    """
    return [row.claim for row in state.records
            if (verifier, row.claim) not in state.minted
            and any(state.verifies[vid].author == verifier for vid in quorum_of(state, row.claim))]


def owed_fees(state: State, verifier: bytes) -> list[Mint]:
    """Verification fees for this verifier's own verify entries that were never minted."""
    fees = [verification_mint(state, verifier, vid) for vid, v in state.verifies.items()
            if v.author == verifier and (verifier, vid) not in state.minted
            and (verifier, v.claim) not in state.fees]  # one fee per (verifier, claim)
    return [fee for fee in fees if fee is not None]
