"""Issue 12: absurd claims refused on sight (ledger/plausible.py, the spec's max_steps) and refuted
claims costing their author (ledger/standing.py), on real ledger files and in any arrival order."""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec, fold
from ledger.bodies import Claim, Fraud, Post
from ledger.entry import Entry
from ledger.errors import InvalidEntry, InvalidSpec
from ledger.keys import Identity
from ledger.plausible import TRAINING_GRACE_S, TRAINING_SLACK, implausible
from ledger.spec import DOMAIN, SignedSpec, decode_spec, sign_spec
from ledger.standing import STRIKE_MARGIN, Standing, barred_authors, standing, standings
from ledger.store import Ledger
from tests.ledger.factory import CLASS, NOISE, Feeds, claim, identity, make_spec, seal, verify
from tests.ledger.test_fold import topological_shuffle

CREATOR, V1, V2, ALICE, BOB, CAROL = (identity(1200 + i) for i in range(6))
CPU_MAX_STEPS = 30_000   # what a node's genesis spec sets for a 30 s CPU budget


def spec_with(max_steps: dict[str, int], quorum: int = 1, verifiers: tuple[Identity, ...] = (V1,)) -> SignedSpec:
    base = make_spec(CREATOR, list(verifiers), quorum=quorum).spec
    return sign_spec(CREATOR, dataclasses.replace(base, max_steps=max_steps))


def steps_claim(n: int, num_steps: int, *, planned: int | None = None, training_s: float = 3.0,
                status: str = "ok", cls: str = CLASS) -> Claim:
    body = claim(n, 1.5 if status == "ok" else None, cls)
    return dataclasses.replace(body, status=status, num_steps=num_steps,
                               planned_steps=num_steps if planned is None else planned, training_s=training_s)


# -- the spec's max_steps


def test_max_steps_round_trips_and_older_specs_decode_unchanged() -> None:
    old = make_spec(CREATOR, [V1])
    assert "max_steps" not in old.spec.to_map()  # an empty map stays off the wire: old signed bytes unchanged
    again = decode_spec(old.wire)
    assert again.spec.max_steps == {} and again.swarm_id == old.swarm_id
    new = spec_with({CLASS: CPU_MAX_STEPS})
    assert decode_spec(new.wire).spec.max_steps == {CLASS: CPU_MAX_STEPS}
    assert new.swarm_id != old.swarm_id  # a limit is part of what the swarm agreed on


@pytest.mark.parametrize("max_steps, says", [({"tpu": 5}, "names a class"), ({CLASS: 0}, "at least 1")])
def test_bad_max_steps_are_refused(max_steps: dict[str, int], says: str) -> None:
    with pytest.raises(InvalidEntry, match=says):
        spec_with(max_steps)


def test_a_signed_spec_with_bad_max_steps_does_not_decode() -> None:
    spec = make_spec(CREATOR, [V1]).spec
    payload = codec.encode({**spec.to_map(), "max_steps": {"tpu": 5}})
    wire = CREATOR.public_key + CREATOR.sign(DOMAIN + payload) + payload
    with pytest.raises(InvalidSpec, match="max_steps"):
        decode_spec(wire)


# -- implausible claims


def test_the_issues_million_step_claim_on_a_cpu_class_is_refused() -> None:
    spec = spec_with({CLASS: CPU_MAX_STEPS}).spec
    why = implausible(spec, steps_claim(1, 10**6, training_s=29.0))
    assert "1000000 steps cannot fit" in why and CLASS in why and str(CPU_MAX_STEPS) in why
    assert implausible(spec, steps_claim(1, 850, training_s=29.0)) == ""  # an honest 30 s CPU run


def test_each_impossible_number_has_its_reason() -> None:
    spec = spec_with({CLASS: CPU_MAX_STEPS}).spec
    budget = spec.time_budget_s
    assert "planned horizon" in implausible(spec, steps_claim(1, 900, planned=800))
    assert "cannot fit the 300 s budget" in implausible(spec, steps_claim(1, 900, training_s=budget * 2 + 60))
    assert "without a single training step" in implausible(spec, steps_claim(1, 0))
    assert "not one of this swarm's" in implausible(spec, dataclasses.replace(steps_claim(1, 9), platform_class="tpu"))
    assert implausible(spec, steps_claim(1, 0, status="crash", training_s=0.0)) == ""  # a failure claims no steps
    assert implausible(spec, steps_claim(1, 900, planned=0)) == ""  # no horizon given: nothing to compare
    assert implausible(spec, steps_claim(1, 10**6, cls="h100")) == ""  # a class without a limit


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 10**7), steps=st.integers(0, 10**8), planned=st.integers(0, 10**8),
       training_s=st.floats(0, 10**5, allow_nan=False), ok=st.booleans())
def test_implausible_is_exactly_its_rules(limit: int, steps: int, planned: int, training_s: float, ok: bool) -> None:
    spec = spec_with({CLASS: limit}).spec
    body = steps_claim(1, steps, planned=planned, training_s=training_s, status="ok" if ok else "crash")
    expected = (ok and steps < 1 or steps > limit or 0 < planned < steps
                or training_s > spec.time_budget_s * TRAINING_SLACK + TRAINING_GRACE_S)
    assert bool(implausible(spec, body)) == expected
    if steps > limit:  # more steps never make a claim plausible again
        assert implausible(spec, dataclasses.replace(body, num_steps=steps + 1, planned_steps=0))


# -- standing


class World:
    def __init__(self, quorum: int = 1, verifiers: tuple[Identity, ...] = (V1,)) -> None:
        self.signed = spec_with({CLASS: CPU_MAX_STEPS}, quorum=quorum, verifiers=verifiers)
        self.feeds, self.state = Feeds(self.signed.swarm_id), fold.initial(self.signed.spec)
        self.rows: list[Entry] = []
        self.n = 0

    def add(self, who: Identity, body: object) -> Entry:
        entry = self.feeds.sign(who, body)  # type: ignore[arg-type]
        fold.apply(self.state, entry)
        self.rows.append(entry)
        if isinstance(body, Claim) and who != V1:
            self.add(V1, seal(entry))  # the anchor's seal: without one no replay counts (ledger/assign.py)
        return entry

    def claimed(self, who: Identity, value: float, replays: dict[Identity, float | None]) -> Entry:
        self.n += 1
        c = self.add(who, claim(self.n, value))
        for v, measured in replays.items():
            self.add(v, verify(c, measured))
        return c


def test_refuted_claims_beyond_the_margin_bar_their_author() -> None:
    w = World()
    for _ in range(STRIKE_MARGIN):
        w.claimed(BOB, 1.0, {V1: 1.0 + 10 * NOISE})  # the replays measured far worse: refuted
    assert standing(w.state, BOB.public_key) == Standing(refuted=STRIKE_MARGIN)
    assert BOB.public_key not in barred_authors(w.state)
    w.claimed(BOB, 1.0, {V1: 1.0 + 10 * NOISE})
    assert BOB.public_key in barred_authors(w.state)
    assert standing(w.state, ALICE.public_key) == Standing()  # nobody else pays for it


def test_verified_claims_offset_strikes() -> None:
    w = World()
    w.claimed(ALICE, 1.5, {V1: 1.5})
    for _ in range(STRIKE_MARGIN + 1):
        w.claimed(ALICE, 1.0, {V1: 1.2})
    assert standing(w.state, ALICE.public_key) == Standing(verified=1, refuted=STRIKE_MARGIN + 1)
    assert ALICE.public_key not in barred_authors(w.state)
    assert standing(w.state, ALICE.public_key).barred(margin=STRIKE_MARGIN - 1)


def test_a_claim_whose_replays_all_fail_is_a_strike_once_a_quorum_failed() -> None:
    w = World(quorum=2, verifiers=(V1, V2))
    c = w.claimed(CAROL, 1.0, {V1: None})
    assert standing(w.state, CAROL.public_key) == Standing()  # one failure of a quorum of two: not yet
    w.add(V2, verify(c, None))
    assert standing(w.state, CAROL.public_key) == Standing(unreproduced=1)
    w.add(CAROL, verify(c, None))  # the author's own failed replay counts for nothing either way
    d = w.claimed(CAROL, 1.0, {V1: None, V2: None, BOB: None})
    assert standing(w.state, CAROL.public_key) == Standing(unreproduced=2)
    w.claimed(CAROL, 1.0, {V1: None, BOB: None})  # BOB is no trusted verifier: one failure only
    assert standing(w.state, CAROL.public_key).unreproduced == 2
    assert d.id in w.state.claims


def test_a_lie_settled_by_one_disagreeing_replay_is_a_strike_before_any_quorum() -> None:
    """With a quorum of two, verifiers stop at the first replay that says the number does not
    reproduce (node/research/verifier.py `settled`): the fold never refutes it, the standing counts it."""
    w = World(quorum=2, verifiers=(V1, V2))
    lie = w.claimed(BOB, 1.0, {V1: 1.0 + 10 * NOISE})
    assert lie.id not in w.state.refuted
    assert standing(w.state, BOB.public_key) == Standing(disputed=1)
    w.claimed(ALICE, 1.2, {V1: 1.2 + NOISE / 2})  # within the noise: no strike
    w.claimed(ALICE, 1.3, {ALICE: 9.0, CAROL: 9.0})  # its own and an untrusted key's replays: none either
    assert standing(w.state, ALICE.public_key) == Standing()
    w.add(V2, verify(lie, 1.0 + 10 * NOISE))  # the quorum completes: refuted, counted once
    assert standing(w.state, BOB.public_key) == Standing(refuted=1)


def test_a_failed_replay_beside_a_successful_one_is_no_strike() -> None:
    w = World(quorum=2, verifiers=(V1, V2))
    w.claimed(CAROL, 1.0, {V1: None, V2: 1.0})
    assert standing(w.state, CAROL.public_key) == Standing()


def test_a_forked_author_is_barred() -> None:
    w = World()
    first = w.add(BOB, Post(channel="general", text="one", reply_to=None))
    fork = w.feeds.sign_at(BOB, first.seq, first.prev, Post(channel="general", text="two", reply_to=None))
    w.add(ALICE, Fraud(first=min(first.wire, fork.wire), second=max(first.wire, fork.wire)))  # the proof, forwarded
    assert BOB.public_key in w.state.frozen and BOB.public_key in barred_authors(w.state)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 40))
def test_standing_does_not_depend_on_arrival_order(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    w = World(quorum=2, verifiers=(V1, V2))
    authors, claims, fate = [ALICE, BOB, CAROL], list[Entry](), dict[bytes, float | None]()
    for _ in range(steps):
        if not claims or rng.random() < 0.4:
            w.n += 1
            value = round(rng.uniform(1.0, 1.5), 3)
            claims.append(w.add(rng.choice(authors), claim(w.n, value)))
            # what replays of it mostly measure: it reproduces, it is refuted, or it fails to run
            fate[claims[-1].id] = rng.choice([value, value + 10 * NOISE, None])
            continue
        c, v = rng.choice(claims), rng.choice([V1, V2, ALICE])
        claimed = c.body.val_bpb  # type: ignore[attr-defined]
        w.add(v, verify(c, rng.choice([fate[c.id], fate[c.id], claimed + NOISE / 2])))
    expected, barred = standings(w.state), barred_authors(w.state, margin=0)
    for _ in range(3):
        state = fold.rebuild(w.signed.spec, topological_shuffle(w.rows, rng))
        assert standings(state) == expected and barred_authors(state, margin=0) == barred


# -- on a real ledger file


async def test_a_reopened_ledger_refuses_the_same_claims_and_bars_the_same_authors(tmp_path: Path) -> None:
    w = World()
    absurd = w.add(BOB, steps_claim(900, 10**6, training_s=29.0))
    for _ in range(STRIKE_MARGIN + 1):
        w.claimed(BOB, 1.0, {V1: 1.0 + 10 * NOISE})
    w.claimed(ALICE, 1.5, {V1: 1.5})
    path = tmp_path / "swarm.ledger"
    async with Ledger.open(path, w.signed) as ledger:
        for entry in topological_shuffle(w.rows, random.Random(7)):
            await ledger.append(entry)
        before = standings(ledger.state)
    async with Ledger.open(path) as again:  # the stored spec carries max_steps
        assert again.spec.spec.max_steps == {CLASS: CPU_MAX_STEPS}
        stored = await again.get(absurd.id)
        assert stored is not None and isinstance(stored.body, Claim)
        assert "cannot fit" in implausible(again.spec.spec, stored.body)
        assert standings(again.state) == before == standings(w.state)
        assert barred_authors(again.state) == {BOB.public_key}


def test_a_paired_replay_far_from_the_claimed_number_is_no_strike() -> None:
    """A paired replay trains on a fresh seed (ledger/evidence.py): it differs from the claimant's
    run by training noise, so it disputes nothing; its own test refutes a lie instead."""
    w = World(quorum=2, verifiers=(V1, V2))
    c = w.claimed(ALICE, 1.0, {})
    w.add(V1, dataclasses.replace(verify(c, 1.0 + 10 * NOISE), parent_val_bpb=1.0 + 11 * NOISE))
    assert standing(w.state, ALICE.public_key) == Standing()
