"""Paired evidence for a claim (issue 13): the sequential test, the class's noise, the record levels.

Pure: functions of the fold's state, which is a function of the set of entries; no clock, no IO.
Knows nothing of how a verifier trains; node/research/ runs what `rounds_wanted` asks for.

Theory of operation.

*A paired round.* Round r of a claim trains the candidate and its parent on one training seed
(`assign.replay_train_seed`: from the claim's seal, which the claimant could not know when it
signed) and scores both on the same rows. Its evidence is d = parent - candidate (> 0: a gain).
Training noise the two runs share cancels in d, so d's spread is what decides, not a single run's.
Round r belongs to one key: the one at rank r mod |assignment| of the claim's sealed assignment
(ledger/assign.py). Another key's replay of that round is a same-seed replication: it counts for
earned trust (ledger/facts.py), never as evidence, so a verifier cannot add seeds it picked after
seeing them. Rounds are read in round order 0, 1, 2, ... up to the first missing one: a verifier
that withholds a bad round stalls the claim, it cannot drop the round.

*The class's noise.* Every counted paired round of a class, in the canonical order (max(verify
time, claim time), verify id), updates a pooled within-claim estimate of d's sd (and of a single
candidate run's sd, for refutation). The spec's noise_bpb seeds both with PRIOR_DOF degrees of
freedom (it is a tolerance of about SPEC_NOISE_SDS sd); after a few claims the ledger's own rounds
dominate. The estimate a claim's test reads is the one at its place in that order, so a round
appended at the end never moves an earlier decision.

*The sequential test.* While the class's estimate rests on fewer than spec.noise_dof degrees of
freedom no test stops except for a loss or a refutation; a claim that reaches spec.max_rounds
before then waits, and is judged at the point of the canonical order where the estimate comes of
age. After each round a claim's one-sided always-valid p-value (a normal-mixture
SPRT on the d's with the class's sd; valid at any stopping time) is updated. The test stops:
refuted when the claimed value is off the candidate's mean by more than REFUTE_SDS run sds (the
claimant's number does not reproduce; YOUNG_REFUTE_FACTOR times that while the estimate is young,
so a gross lie is refuted at once and an honest claim is not refuted on a spec's wrong guess); for
a clear loss when the mean d is not positive (futility stops never add false records); for a clear
win when p <= record_fdr x WIN_SHARE after at least MIN_WIN_ROUNDS rounds; and at spec.max_rounds
rounds whatever it says. `rounds_wanted` asks for the next rounds while the
test is open.

*Records.* The stopped tests of a class are walked in decision order (the key of the round that
stopped them) with LORD++ (Ramdas et al. 2017): test t is a record when its p-value against
"no gain over the class's best" is at most alpha_t, a level spent from alpha = spec.record_fdr and
earned back by each record, which keeps the expected share of false records at most alpha over the
whole stream. Against the best: a claim whose parent is an older record must beat the best by the
gap between them, so its d's are shifted by it; a claim whose parent is no record is not tested.
A record's value is its parent record's value minus its mean d; its row carries the gain over the
best, a 95% interval and the number of rounds.

Unpaired verifies (no parent_val_bpb: entries signed before the fields existed, and baseline
replays, which have no parent) keep the quorum rule of ledger/facts.py `decide`; a claim with any
counted paired round is judged by the paired rule alone.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from ledger import assign
from ledger.state import Decision, PairedTest, State, Stream, Welford

PRIOR_DOF = 4            # degrees of freedom the spec's noise counts for in the class's estimate
SPEC_NOISE_SDS = 3.0     # a spec's noise_bpb is a tolerance of about this many run sds (node/research/noise.py)
MIN_WIN_ROUNDS = 5       # rounds before a clear win stops: fewer overstate the gain of an early stop (bench_records)
WIN_SHARE = 0.05         # a win stops at p <= record_fdr x this (about the level LORD++ gives after a record)
MIX_RATIO = 1.0          # the mixture's variance over d's variance: tuned for gains of about one sd
REFUTE_SDS = 4.0         # claimed value off the replays' mean by this many sds: the claim is refuted
YOUNG_REFUTE_FACTOR = 3.0  # ... this many times more while the class's noise estimate is young
SCREEN_SDS = 1.0         # a claim is replayed only if its own number beats the best by this many run sds
LORD_W0_SHARE = 0.5      # LORD++'s starting wealth, a share of alpha
INTERVAL_Z = 1.96        # a record's interval: its mean gain +- this many standard errors
# gamma_j = C log(max(j, 2)) / (j exp(sqrt(log j))): the spending sequence of LORD++, C makes it sum to 1
GAMMA_C = 0.07720838


def is_paired_claim(state: State, claim_id: bytes) -> bool:
    return bool(state.paired_of.get(claim_id))


# -- the statistics, on plain numbers

def always_valid_p(diffs: Sequence[float], sd: float, shift: float = 0.0) -> float:
    """One-sided always-valid p-value of "mean <= shift" after each prefix of `diffs` (the running
    minimum): a normal-mixture SPRT with the mixture's variance MIX_RATIO x sd^2."""
    if sd <= 0:
        return 1.0
    best, total = 1.0, 0.0
    for n, d in enumerate(diffs, start=1):
        total += d - shift
        if total <= 0:
            continue
        scale = 1.0 + n * MIX_RATIO
        log_lr = MIX_RATIO * total * total / (2 * sd * sd * scale) - 0.5 * math.log(scale)
        best = min(best, math.exp(-log_lr) if log_lr < 700 else 0.0)
    return best


def gamma(j: int) -> float:
    if j < 1:
        return 0.0
    return GAMMA_C * math.log(max(j, 2)) / (j * math.exp(math.sqrt(math.log(j))))


def lord_level(alpha: float, t: int, rejections: Sequence[int]) -> float:
    """LORD++'s level for test t (1-based) after records at the tests `rejections` (all < t)."""
    w0 = alpha * LORD_W0_SHARE
    level = gamma(t) * w0
    for i, tau in enumerate(rejections):
        level += (alpha - w0 if i == 0 else alpha) * gamma(t - tau)
    return level


def pooled_sd(prior_sd: float, ss: float, dof: int) -> float:
    return math.sqrt((PRIOR_DOF * prior_sd ** 2 + ss) / (PRIOR_DOF + dof))


def prior_run_sd(state: State, platform_class: str) -> float:
    return state.spec.noise_bpb.get(platform_class, 0.0) / SPEC_NOISE_SDS


def stop(diffs: Sequence[float], values: Welford, claimed: float | None, *, sd: float, dof: int, run_sd: float,
         run_dof: int, max_rounds: int, alpha: float, min_dof: int = 16) -> str | None:
    """The sequential test's verdict after `diffs`: None: go on; "wait": no more rounds, but the
    class's noise estimate is too young to judge them (judged once it has spec.noise_dof)."""
    n = len(diffs)
    if n == 0:
        return None
    if claimed is None:
        return "refuted"
    # before the class's estimate has min_dof it may rest on a prior far below the real spread (a
    # spec's guess), so only a claim YOUNG_REFUTE_FACTOR times further off is refuted then: a gross
    # lie needs no mature estimate, an honest claim on a wrong prior must not be refuted
    bound = REFUTE_SDS * (1.0 if run_dof >= min_dof else YOUNG_REFUTE_FACTOR)
    if abs(claimed - values.mean) > bound * run_sd * math.sqrt(1 + 1 / n):
        return "refuted"
    if sum(diffs) <= 0:
        return "loss"
    if dof < min_dof:
        return "wait" if n >= max_rounds else None
    if n >= MIN_WIN_ROUNDS and always_valid_p(diffs, sd) <= alpha * WIN_SHARE:
        return "win"
    return "exhausted" if n >= max_rounds else None


# -- which paired rounds count

def round_owner(state: State, claim_id: bytes, round_index: int) -> bytes | None:
    """The key whose replay is round `round_index`'s evidence: the assigned key at rank r mod size."""
    keys = assign.assignment(state, claim_id)
    if not keys:
        return None
    return keys[round_index % len(keys)]


def _order_key(state: State, verify_id: bytes) -> tuple[tuple[int, bytes], bytes]:
    v = state.verifies[verify_id]
    return (max(v.time_ms, state.claims[v.claim].time_ms), verify_id), verify_id


def counted(state: State, claim_id: bytes) -> dict[int, tuple[tuple[int, bytes], bytes]]:
    """round -> (order key, verify id) of the claim's counted paired rounds: the round owner's, the
    first in canonical order where a forked owner signed two."""
    claim = state.claims[claim_id]
    out: dict[int, tuple[tuple[int, bytes], bytes]] = {}
    if claim.parent is None or claim.claimed is None:
        return out
    for vid in state.paired_of.get(claim_id, ()):
        v = state.verifies[vid]
        if v.round_index >= state.spec.max_rounds or round_owner(state, claim_id, v.round_index) != v.author:
            continue
        key = _order_key(state, vid)
        held = out.get(v.round_index)
        if held is None or key < held:
            out[v.round_index] = key
    return out


# -- the class's stream: noise estimate and stops

def rewalk(state: State, platform_class: str) -> Stream:
    """Walks every counted paired round of the class afresh."""
    stream = Stream()
    state.streams[platform_class] = stream
    rows: list[tuple[tuple[int, bytes], bytes]] = []
    for claim_id in state.paired_in.get(platform_class, ()):
        rows += counted(state, claim_id).values()
    for key in sorted(rows):
        _walk_one(state, stream, key)
    return stream


def extend(state: State, platform_class: str, verify_id: bytes) -> Stream:
    """Walks one new paired verify: at the end of the stream when it sorts last, else afresh."""
    stream = state.streams.get(platform_class)
    v = state.verifies[verify_id]
    key = _order_key(state, verify_id)
    if stream is None or (stream.last is not None and key < stream.last):
        return rewalk(state, platform_class)
    held = counted(state, v.claim).get(v.round_index)
    if held == key:
        _walk_one(state, stream, key)
    return stream


def _walk_one(state: State, stream: Stream, key: tuple[tuple[int, bytes], bytes]) -> None:
    stream.last = key
    v = state.verifies[key[1]]
    claim_id = v.claim
    stream.rounds.setdefault(claim_id, {})[v.round_index] = key
    rounds = stream.rounds[claim_id]
    at = stream.consumed.get(claim_id, 0)
    while at in rounds:
        w = state.verifies[rounds[at][1]]
        if w.value is None or w.parent_value is None:
            raise AssertionError("only ok paired verifies are counted")  # a bug here, not peer input
        young = stream.dof_diff < state.spec.noise_dof
        diffs = stream.diffs.setdefault(claim_id, Welford())
        values = stream.values.setdefault(claim_id, Welford())
        stream.dof_diff += diffs.n >= 1
        stream.ss_diff += diffs.add(w.parent_value - w.value)
        stream.dof_value += values.n >= 1
        stream.ss_value += values.add(w.value)
        stream.diff_list.setdefault(claim_id, []).append(w.parent_value - w.value)
        at += 1
        stream.consumed[claim_id] = at
        if claim_id not in stream.tests:
            _judge(state, stream, claim_id, key[0])
        if young and stream.dof_diff >= state.spec.noise_dof:
            # the estimate just came of age, here in the canonical order: judge the claims it held
            for held in sorted(stream.waiting):
                _judge(state, stream, held, key[0])
            stream.waiting.clear()


def _judge(state: State, stream: Stream, claim_id: bytes, order: tuple[int, bytes]) -> None:
    claim = state.claims[claim_id]
    cls = claim.platform_class
    prior = prior_run_sd(state, cls)
    # the spec seeds d's sd with one run sd: two runs' noise, half of it shared by the pair
    sd = pooled_sd(prior, stream.ss_diff, stream.dof_diff)
    run_sd = pooled_sd(prior, stream.ss_value, stream.dof_value)
    diffs = stream.diff_list[claim_id]
    verdict = stop(diffs, stream.values[claim_id], claim.claimed, sd=sd, dof=stream.dof_diff, run_sd=run_sd,
                   run_dof=stream.dof_value, max_rounds=state.spec.max_rounds, alpha=state.spec.record_fdr,
                   min_dof=state.spec.noise_dof)
    if verdict is None:
        return
    if verdict == "wait":
        stream.waiting.add(claim_id)
        return
    stream.tests[claim_id] = PairedTest(tuple(diffs), sd, PRIOR_DOF + stream.dof_diff, verdict)
    quorum = tuple(stream.rounds[claim_id][r][1] for r in range(len(diffs)))
    stream.judged.add(claim_id)
    stream.decisions[claim_id] = Decision("refuted" if verdict == "refuted" else "verified",
                                          stream.values[claim_id].mean, quorum, order)


def noise(state: State, platform_class: str) -> tuple[float, float, int]:
    """(paired-difference sd, single-run sd, degrees of freedom of the first) of the class now."""
    prior = prior_run_sd(state, platform_class)
    stream = state.streams.get(platform_class)
    if stream is None:
        return prior, prior, PRIOR_DOF
    return (pooled_sd(prior, stream.ss_diff, stream.dof_diff), pooled_sd(prior, stream.ss_value, stream.dof_value),
            PRIOR_DOF + stream.dof_diff)


# -- records: the false-discovery walk (ledger/facts.py `_records` calls `record_test`)

def record_test(state: State, claim_id: bytes, parent_value: float, best: float, t: int,
                rejections: Sequence[int]) -> tuple[bool, float, float, float, int]:
    """Test t of the class's walk: (is a record, gain over the best, interval low, high, rounds)."""
    test = state.streams[state.claims[claim_id].platform_class].tests[claim_id]
    n = len(test.diffs)
    shift = parent_value - best
    mean = sum(test.diffs) / n
    gain, half = mean - shift, INTERVAL_Z * test.sd_bpb / math.sqrt(n)
    p = always_valid_p(test.diffs, test.sd_bpb, shift)
    return p <= lord_level(state.spec.record_fdr, t, rejections), gain, gain - half, gain + half, n


# -- what a verifier should run now

def parent_is_record(state: State, claim_id: bytes) -> bool:
    claim = state.claims[claim_id]
    return claim.parent is not None and any(r.commit == claim.parent and r.platform_class == claim.platform_class
                                            for r in state.records)


def worth_testing(state: State, claim_id: bytes) -> bool:
    """The claimant's own number beats the class's best by SCREEN_SDS run sds, and its parent is a
    record of the class. The claimant's run is independent of the replays' seeds, so choosing by it
    keeps every test valid, and most rounds go to claims that may be real gains."""
    claim = state.claims[claim_id]
    if claim.claimed is None or not parent_is_record(state, claim_id):
        return False
    cls = claim.platform_class
    rows = [r for r in state.records if r.platform_class == cls]
    # the best's own replays measure its value directly; its row's value is a chain of estimated
    # gains whose errors add up, and a chain that drifted high would let null edits through
    decided = state.decisions.get(rows[-1].claim)
    reference = min(rows[-1].value, decided.value) if decided is not None else rows[-1].value
    _, run_sd, _ = noise(state, cls)
    return claim.claimed < reference - SCREEN_SDS * run_sd


def rounds_wanted(state: State, claim_id: bytes, key: bytes) -> list[int]:
    """The round indexes `key` should replay the claim for now, each a paired run of the candidate
    and its parent with `assign.replay_train_seed(state, claim_id, key, round_index)`; empty when
    it is not assigned, the claim's test has stopped or (before its first round) the claim is not
    worth testing. Round 0
    first, then the rest of the first MIN_WIN_ROUNDS at once (spread over their owners), then one
    at a time."""
    keys = assign.assignment(state, claim_id)
    if not keys or key not in keys or claim_id not in state.claims:
        return []
    cls = state.claims[claim_id].platform_class
    stream = state.streams.get(cls)
    if stream is not None and claim_id in stream.tests:
        return []
    if claim_id in state.decisions:
        return []
    have = counted(state, claim_id)
    # the screen picks which tests start; a started one runs to its stop, or a class's run sd that
    # grew with its rounds (so the claim no longer passes the screen) would leave it open forever
    if not (worth_testing(state, claim_id) if not have else parent_is_record(state, claim_id)):
        return []
    done = 0
    while done in have:
        done += 1
    # round 0 alone first: most claims stop there (a loss), and rounds already running would be spent
    limit = 1 if done == 0 else min(state.spec.max_rounds, max(MIN_WIN_ROUNDS, done + 1))
    rank = keys.index(key)
    return [r for r in range(limit) if r % len(keys) == rank and r not in have]


def verdict(state: State, claim_id: bytes) -> str | None:
    """Where a claim's paired test stands, for people and agents: "win", "loss", "exhausted",
    "refuted" once stopped, "waiting" (its rounds are in, the class's noise estimate is too young),
    "open" (rounds counted, test running); None: no counted paired round."""
    info = state.claims.get(claim_id)
    stream = state.streams.get(info.platform_class) if info is not None else None
    if stream is None or claim_id not in stream.consumed:
        return None
    test = stream.tests.get(claim_id)
    if test is not None:
        return test.outcome
    return "waiting" if claim_id in stream.waiting else "open"
