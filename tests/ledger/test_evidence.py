"""Paired evidence (ledger/evidence.py): the statistics on plain numbers, a swarm's records from
paired rounds, and one truth in any arrival order with paired verifies in the history."""
from __future__ import annotations

import pytest

import math
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import assign, credits, evidence, fold
from ledger.bodies import Body, Claim, Seal, Verify
from ledger.entry import Entry
from ledger.spec import SignedSpec
from tests.ledger.factory import CLASS, Feeds, commit, identity, make_spec
from tests.ledger.test_fold import replay_as_a_store, topological_shuffle

CREATOR = identity(900)
V1, V2, V3, V4 = (identity(901 + i) for i in range(4))
ANCHORS = [V1, V2, V3, V4]
USERS = [identity(910 + i) for i in range(3)]
OUTSIDER = identity(920)  # no anchor, no earned trust: its rounds never count
BASE_BPB = 1.5
RUN_SD = 0.003            # the class's noise 0.01 seeds the estimate with 0.0033


# -- the statistics


def test_always_valid_p_falls_with_evidence_and_rises_with_the_bar() -> None:
    gains = [0.01] * 6
    assert evidence.always_valid_p([], 0.003) == 1.0
    assert evidence.always_valid_p([-0.01, -0.02], 0.003) == 1.0  # no gain: nothing against "no gain"
    ps = [evidence.always_valid_p(gains[:n], 0.003) for n in range(1, 7)]
    assert ps == sorted(ps, reverse=True) and ps[-1] < 1e-6
    assert evidence.always_valid_p(gains, 0.003, shift=0.005) > ps[-1]
    assert evidence.always_valid_p(gains, 0.003, shift=0.02) == 1.0


def test_always_valid_p_keeps_its_level_under_optional_stopping() -> None:
    # null rounds, looked at after every one of 6: the running minimum still crosses alpha rarely
    rng = random.Random(5)
    alpha, trials = 0.05, 4000
    hits = sum(evidence.always_valid_p([rng.gauss(0.0, 1.0) for _ in range(6)], 1.0) <= alpha for _ in range(trials))
    assert hits / trials <= alpha


@given(st.floats(0.0, 30.0), st.integers(0, 40))
def test_a_claim_is_refuted_by_how_far_off_it_is_and_how_old_the_estimate_is(off_sds: float, run_dof: int) -> None:
    """Off by more than REFUTE_SDS run sds: refuted once the class's estimate has its dof; while it
    is young only past YOUNG_REFUTE_FACTOR times that (the estimate may rest on a wrong prior)."""
    value = BASE_BPB - 0.01
    claimed = value - off_sds * RUN_SD * math.sqrt(2)
    verdict = evidence.stop([0.01], _welford([value]), claimed, sd=RUN_SD, dof=100, run_sd=RUN_SD, run_dof=run_dof,
                            max_rounds=6, alpha=0.01, min_dof=16)
    bound = evidence.REFUTE_SDS * (1.0 if run_dof >= 16 else evidence.YOUNG_REFUTE_FACTOR)
    if off_sds > bound * 1.001:
        assert verdict == "refuted"
    elif off_sds < bound * 0.999:
        assert verdict != "refuted"


def test_lord_levels_spend_at_most_the_starting_wealth_without_records() -> None:
    alpha = 0.01
    spent = sum(evidence.lord_level(alpha, t, ()) for t in range(1, 20000))
    assert 0 < spent <= alpha * evidence.LORD_W0_SHARE
    # a record earns wealth back: the next tests get more than they would have
    assert evidence.lord_level(alpha, 11, (10,)) > evidence.lord_level(alpha, 11, ())


@given(st.lists(st.floats(-0.05, 0.05), min_size=1, max_size=8), st.floats(0.0005, 0.01))
def test_stop_never_calls_a_loss_a_win(diffs: list[float], sd: float) -> None:
    values = _welford([BASE_BPB - d for d in diffs])
    verdict = evidence.stop(diffs, values, BASE_BPB - sum(diffs) / len(diffs), sd=sd, dof=100, run_sd=RUN_SD,
                            run_dof=100, max_rounds=6, alpha=0.01)
    if sum(diffs) <= 0:
        assert verdict == "loss"
    if verdict == "win":
        assert len(diffs) >= evidence.MIN_WIN_ROUNDS and evidence.always_valid_p(diffs, sd) <= 0.01 * evidence.WIN_SHARE


def _welford(xs: list[float]) -> Any:
    from ledger.state import Welford
    w = Welford()
    for x in xs:
        w.add(x)
    return w


# -- a swarm with paired rounds


def spec() -> SignedSpec:
    return make_spec(CREATOR, ANCHORS, quorum=2, trust_replays=2, assigned=3)


def child(n: int, parent: bytes, val_bpb: float) -> Claim:
    return Claim(commit=commit(n), parent=parent, platform_class=CLASS, status="ok", val_bpb=val_bpb, num_steps=100,
                 planned_steps=100, seed=1, training_s=3.0, wall_s=5.0, peak_vram_mb=0.0, loss_curve=[3.0, 2.0],
                 diff_summary=f"edit {n}", message="", bundle=None)


def paired(claim_entry: Entry, round_index: int, value: float, parent_value: float) -> Verify:
    body = claim_entry.body
    assert isinstance(body, Claim)
    return Verify(claim=claim_entry.id, commit=body.commit, platform_class=CLASS, status="ok", val_bpb=value,
                  num_steps=100, seed=round_index, training_s=3.0, round_index=round_index,
                  parent_val_bpb=parent_value)


def unpaired(claim_entry: Entry, value: float) -> Verify:
    body = claim_entry.body
    assert isinstance(body, Claim)
    return Verify(claim=claim_entry.id, commit=body.commit, platform_class=CLASS, status="ok", val_bpb=value,
                  num_steps=100, seed=1, training_s=3.0)


class Swarm:
    """Signs entries into a history, folding each (and rebuilding when the fold asks) as a node does."""

    def __init__(self, signed: SignedSpec, seed: int) -> None:
        self.spec, self.rng = signed, random.Random(seed)
        self.feeds, self.state = Feeds(signed.swarm_id, clock_ms=10**9), fold.initial(signed.spec)
        self.rows: list[Entry] = []
        self.truth: dict[bytes, float] = {}  # claim id -> true val_bpb
        self.by_key = {i.public_key: i for i in [*ANCHORS, *USERS, OUTSIDER]}

    def add(self, who: Any, body: Body) -> Entry:
        entry = self.feeds.sign(who, body)
        fold.apply(self.state, entry)
        self.rows.append(entry)
        if self.state.needs_rebuild:
            self.state = fold.rebuild(self.spec.spec, self.rows)
        return entry

    def run(self, commit_id: bytes, true_bpb: float, seed: int) -> float:
        """A run: training noise fixed by (program, seed), half of it shared by all programs on the seed."""
        shared = random.Random(f"seed-{seed}").gauss(0, 1)
        own = random.Random(f"{commit_id.hex()}-{seed}").gauss(0, 1)
        return round(true_bpb + RUN_SD * math.sqrt(0.5) * (shared + own), 6)

    def baseline(self) -> Entry:
        base = self.add(USERS[0], Claim(commit=commit(1), parent=None, platform_class=CLASS, status="ok",
                                         val_bpb=BASE_BPB, num_steps=100, planned_steps=100, seed=1, training_s=3.0,
                                         wall_s=5.0, peak_vram_mb=0.0, loss_curve=[3.0], diff_summary="",
                                         message="", bundle=None))
        self.truth[base.id] = BASE_BPB
        self.add(V1, Seal(claims=[base.id]))
        for key in assign.assignment(self.state, base.id) or ():
            self.add(self.by_key[key], unpaired(base, BASE_BPB))
        return base

    def claim(self, n: int, gain: float) -> Entry:
        rows = [r for r in self.state.records if r.platform_class == CLASS]
        parent = rows[-1]
        true_bpb = self.truth[parent.claim] - gain
        entry = self.add(self.rng.choice(USERS), child(n, parent.commit, self.run(commit(n), true_bpb, 10**6 + n)))
        self.truth[entry.id] = true_bpb
        return entry

    def replay(self, claim_entry: Entry, key: bytes, round_index: int) -> Entry:
        body = claim_entry.body
        assert isinstance(body, Claim) and body.parent is not None
        seed = assign.replay_train_seed(self.state, claim_entry.id, key, round_index)
        assert seed is not None
        parent_claim = next(c for c, i in self.state.claims.items() if i.commit == body.parent)
        return self.add(self.by_key[key], paired(
            claim_entry, round_index, self.run(body.commit, self.truth[claim_entry.id], seed),
            self.run(body.parent, self.truth[parent_claim], seed)))

    def verify_all(self, claims: list[Entry]) -> None:
        """Every assigned key runs every round the fold asks for, until none asks for more."""
        while True:
            asked = [(c, key, r) for c in claims for key in assign.assignment(self.state, c.id) or ()
                     for r in evidence.rounds_wanted(self.state, c.id, key)]
            if not asked:
                return
            for c, key, r in asked:
                self.replay(c, key, r)

    def mint_records(self) -> None:
        for row in list(self.state.records):
            for who in ANCHORS:
                mint, _ = credits.record_mint(self.state, who.public_key, row.claim)
                if mint is not None:
                    self.add(who, mint)


def grown_swarm(seed: int, gains: list[float]) -> tuple[Swarm, list[Entry]]:
    swarm = Swarm(spec(), seed)
    swarm.baseline()
    claims = []
    for n, gain in enumerate(gains, start=10):
        c = swarm.claim(n, gain)
        swarm.add(V1 if swarm.state.claims[c.id].author != V1.public_key else V2, Seal(claims=[c.id]))
        swarm.verify_all([c])
        swarm.mint_records()
        claims.append(c)
    return swarm, claims


def test_real_gains_become_records_with_their_gain_interval_and_seeds_and_null_edits_do_not() -> None:
    gains = [0.0, 0.02, 0.0, 0.0, 0.015, 0.0, 0.0, 0.02, 0.0, 0.0, 0.0, 0.025, 0.0, 0.0]
    swarm, claims = grown_swarm(3, gains)
    state = swarm.state
    rows = [r for r in state.records if r.platform_class == CLASS]
    by_claim = {r.claim: r for r in rows}
    assert all(by_claim.get(c.id) is None for c, g in zip(claims, gains) if g == 0.0)  # no null edit is a record
    real = [by_claim[c.id] for c, g in zip(claims, gains) if g > 0 and c.id in by_claim]
    assert len(real) >= 2
    for row in real:
        true_gain = swarm.truth[next(r.claim for r in rows if r.n == row.n - 1)] - swarm.truth[row.claim]
        assert row.gain is not None and row.low is not None and row.high is not None
        assert row.low < row.gain < row.high and row.seeds >= evidence.MIN_WIN_ROUNDS
        assert row.prev is not None and math.isclose(row.prev - row.value, row.gain)
        assert abs(row.gain - true_gain) < 0.01
    # a record's verifiers mint its worth, split by the keys that ran its rounds
    assert state.total_minted_ucr > 0 and all(v == "" for v in state.verdicts.values())
    sd, run_sd, dof = evidence.noise(state, CLASS)
    assert dof > evidence.PRIOR_DOF and 0.001 < sd < 0.01  # measured from the rounds, not the spec's 0.0033


def test_rounds_go_to_their_owners_and_stop_when_the_test_does() -> None:
    swarm, claims = grown_swarm(4, [0.0] * 6 + [0.03])
    state = swarm.state
    c = swarm.claim(99, 0.03)
    swarm.add(V1 if state.claims[c.id].author != V1.public_key else V2, Seal(claims=[c.id]))
    keys = assign.assignment(swarm.state, c.id) or ()
    asked = {key: evidence.rounds_wanted(swarm.state, c.id, key) for key in keys}
    assert sorted(r for rs in asked.values() for r in rs) == [0]  # round 0 alone: most claims stop there
    assert evidence.rounds_wanted(swarm.state, c.id, OUTSIDER.public_key) == []
    # a round run by a key that does not own it is a replication, not evidence
    owner = evidence.round_owner(swarm.state, c.id, 0)
    other = next(k for k in keys if k != owner)
    swarm.replay(c, other, 0)
    assert evidence.counted(swarm.state, c.id) == {}
    swarm.replay(c, owner, 0)
    asked = {key: evidence.rounds_wanted(swarm.state, c.id, key) for key in keys}
    assert sorted(r for rs in asked.values() for r in rs) == list(range(1, evidence.MIN_WIN_ROUNDS))
    for key, rounds in asked.items():
        assert all(evidence.round_owner(swarm.state, c.id, r) == key for r in rounds)
    swarm.verify_all([c])
    assert all(evidence.rounds_wanted(swarm.state, c.id, key) == [] for key in keys)
    # decided, or at max rounds while the class's noise estimate is too young to judge them
    assert c.id in swarm.state.decisions or c.id in swarm.state.streams[CLASS].waiting


def test_a_started_test_gets_its_rounds_when_the_claim_no_longer_passes_the_screen(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The screen (its own number a run sd past the best) picks which tests start. In a demo the
    class's run sd grew with a claim's rounds until the claim failed the screen, and its test, with
    rounds 0-2 and 4 in, asked no one for round 3: open forever."""
    swarm, claims = grown_swarm(4, [0.0] * 6 + [0.03])
    c = swarm.claim(99, 0.03)
    swarm.add(V1 if swarm.state.claims[c.id].author != V1.public_key else V2, Seal(claims=[c.id]))
    keys = assign.assignment(swarm.state, c.id) or ()
    owner = evidence.round_owner(swarm.state, c.id, 0)
    assert owner is not None and evidence.worth_testing(swarm.state, c.id)
    swarm.replay(c, owner, 0)
    monkeypatch.setattr(evidence, "SCREEN_SDS", 1e9)  # as if the run sd had grown past the claim's margin
    assert not evidence.worth_testing(swarm.state, c.id)
    asked = {key: evidence.rounds_wanted(swarm.state, c.id, key) for key in keys}
    assert sorted(r for rs in asked.values() for r in rs) == list(range(1, evidence.MIN_WIN_ROUNDS))
    fresh = swarm.claim(98, 0.03)  # a claim with no round yet does not start
    swarm.add(V1 if swarm.state.claims[fresh.id].author != V1.public_key else V2, Seal(claims=[fresh.id]))
    assert all(evidence.rounds_wanted(swarm.state, fresh.id, key) == [] for key in keys)


def test_two_keys_replaying_one_round_must_agree_within_the_tolerance() -> None:
    swarm, claims = grown_swarm(5, [0.03, 0.03])  # claims that look good enough to replay
    c = claims[0]
    owner = evidence.round_owner(swarm.state, c.id, 0)
    mine = next(swarm.state.verifies[v] for v in swarm.state.paired_of[c.id] if swarm.state.verifies[v].author == owner)
    assert mine.value is not None and mine.parent_value is not None
    # an outsider that ran round 0 and reports the same seed's numbers earns a vote; one that lies loses it
    swarm.add(OUTSIDER, paired(c, 0, mine.value + 0.0001, mine.parent_value))
    assert swarm.state.votes.get((OUTSIDER.public_key, c.id)) == 1
    swarm.add(OUTSIDER, paired(claims[1], 0, 1.0, 2.0))
    assert swarm.state.votes.get((OUTSIDER.public_key, claims[1].id)) == -1


# -- one truth


def views(state: fold.State) -> tuple[Any, ...]:
    rows = sorted(state.records, key=lambda r: (r.platform_class, r.n))
    stats = [(r.claim, r.gain, r.low, r.high, r.seeds) for r in rows]
    tests = {cls: dict(sorted(s.tests.items())) for cls, s in sorted(state.streams.items())}
    return (fold.tables(state), stats, dict(sorted(state.decisions.items())), sorted(state.verified.items()),
            sorted(state.refuted.items()), dict(sorted(state.verifiers.items())), tests,
            {cls: evidence.noise(state, cls) for cls in sorted(state.streams)}, dict(sorted(state.lord.items())))


def mixed_history(seed: int, claims_n: int) -> tuple[SignedSpec, list[Entry]]:
    """Real gains and null edits, paired rounds by their owners, replications by other keys and an
    outsider, some unpaired replays (an older verifier), mints: built by consulting the fold."""
    rng = random.Random(seed)
    swarm = Swarm(spec(), seed)
    swarm.baseline()
    open_claims: list[Entry] = []
    for n in range(claims_n):
        c = swarm.claim(100 + n, rng.choice([0.0, 0.0, 0.0, 0.02]))
        swarm.add(rng.choice(ANCHORS[:2]) if rng.random() < 0.8 else V3, Seal(claims=[c.id]))
        open_claims.append(c)
        for c in rng.sample(open_claims, k=min(len(open_claims), 3)):
            keys = assign.assignment(swarm.state, c.id) or ()
            for key in keys:
                for r in evidence.rounds_wanted(swarm.state, c.id, key):
                    if rng.random() < 0.8:
                        swarm.replay(c, key, r)
            if keys and rng.random() < 0.2:
                swarm.replay(c, rng.choice(keys), rng.randrange(3))  # perhaps another key's round
            if rng.random() < 0.1:
                swarm.add(OUTSIDER, paired(c, 0, BASE_BPB, BASE_BPB))
            if rng.random() < 0.1 and keys:
                swarm.add(swarm.by_key[rng.choice(keys)], unpaired(c, swarm.truth[c.id]))
        swarm.mint_records()
    return swarm.spec, swarm.rows


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), claims_n=st.integers(1, 14), order_seed=st.integers(0, 2**32 - 1))
def test_paired_records_are_the_same_in_any_arrival_order(seed: int, claims_n: int, order_seed: int) -> None:
    signed, rows = mixed_history(seed, claims_n)
    want = fold.rebuild(signed.spec, rows)
    shuffled = topological_shuffle(rows, random.Random(order_seed))
    got = fold.rebuild(signed.spec, shuffled)
    assert views(got) == views(want)
    # one entry at a time, as a store receives them, ends where a rebuild of the set does
    assert replay_as_a_store(signed.spec, shuffled) == fold.tables(want)


def test_a_long_mixed_history_makes_paired_records_in_any_order() -> None:
    signed, rows = mixed_history(11, 30)
    want = fold.rebuild(signed.spec, rows)
    assert any(r.gain is not None for r in want.records)  # the property above is not vacuous
    for order_seed in range(3):
        assert views(fold.rebuild(signed.spec, topological_shuffle(rows, random.Random(order_seed)))) == views(want)


def test_fifty_trivial_variants_of_the_best_make_no_record() -> None:
    # an agent resubmits a no-op edit 50 times; the first real gain gives the noise estimate its rounds
    swarm, claims = grown_swarm(8, [0.02, 0.02, 0.02] + [0.0] * 50)
    rows = [r for r in swarm.state.records if r.platform_class == CLASS]
    nulls = {c.id for c in claims[3:]}
    assert not [r for r in rows if r.claim in nulls]
    tested = [c for c in nulls if evidence.verdict(swarm.state, c) is not None]
    assert tested  # some variants looked good enough on their own run to be replayed, and lost
