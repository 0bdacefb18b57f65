"""The optimizer behind the proposer interface (issue 16): Optuna's TPE over train.py's constants."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import NoProposal
from node.research import optimizer
from node.research.optimizer import TpeProposer, space, to_params, to_values
from node.research.program import editable, parse_program
from node.research.proposers import NAMES, make

SOURCE = "MATRIX_LR = 0.04\nWEIGHT_DECAY = 0.2\nDEPTH = 12\nBATCH = 2**19\nWARMDOWN_RATIO = 0.5\nQK_NORM = False\n"


def _values(source: str) -> dict[str, object]:
    return dict(editable(parse_program(source), "gpu", frozenset()))


def test_the_space_covers_every_kind_of_constant_and_the_genesis_point_lies_inside_it() -> None:
    dists = space(editable(parse_program(SOURCE), "gpu", frozenset()))
    assert set(dists) == {"MATRIX_LR", "WEIGHT_DECAY", "DEPTH", "BATCH@log2", "WARMDOWN_RATIO", "QK_NORM"}
    params = to_params(editable(parse_program(SOURCE), "gpu", frozenset()), dists)
    assert params is not None and params["BATCH@log2"] == 19
    assert to_values(params) == _values(SOURCE)


@settings(max_examples=60, deadline=None)
@given(lr=st.floats(0.001, 1.0), depth=st.integers(1, 64), exp=st.integers(10, 24), flag=st.booleans())
def test_a_point_inside_the_space_maps_back_to_the_same_constants(lr: float, depth: int, exp: int, flag: bool) -> None:
    dists = space(editable(parse_program(SOURCE), "gpu", frozenset()))
    values = {"MATRIX_LR": float(f"{lr:.3g}"), "WEIGHT_DECAY": 0.2, "DEPTH": depth, "BATCH": 1 << exp,
              "WARMDOWN_RATIO": 0.5, "QK_NORM": flag}
    params = to_params(values, dists)
    inside = 0.04 / 3 <= values["MATRIX_LR"] <= 0.12 and 4 <= depth <= 36 and 17 <= exp <= 21  # type: ignore[operator]
    assert (params is not None) == inside
    if params is not None:
        assert to_values(params) == values
    partial = to_params(values, dists, partial=True)
    assert set(partial) <= set(dists) and {"WEIGHT_DECAY", "WARMDOWN_RATIO", "QK_NORM"} <= set(partial)


def _toy_bpb(values: dict[str, object]) -> float:
    import math
    lr, depth = float(values["MATRIX_LR"]), float(values["DEPTH"])  # type: ignore[arg-type]
    return 1.0 + 0.05 * math.log(lr / 0.07) ** 2 + 0.03 * math.log(depth / 18) ** 2 + (0.0 if values["QK_NORM"] else 0.004)


def test_ask_and_tell_moves_few_constants_far_enough_and_finds_better_programs() -> None:
    opt = TpeProposer(SOURCE, "gpu", seed=3)
    rng = random.Random(3)
    best_source, best = SOURCE, _toy_bpb(_values(SOURCE))
    opt.observe(parse_program(SOURCE).key, _values(SOURCE), best)
    tried: set[str] = {parse_program(SOURCE).key}
    start = best
    for _ in range(60):
        proposal = opt.propose(best_source, tried=tried, rng=rng)
        assert proposal.key not in tried and 1 <= len(proposal.changes) <= optimizer.MAX_MOVED
        assert all(optimizer._far_enough(a, b) for a, b in proposal.changes.values())
        tried.add(proposal.key)
        value = _toy_bpb(_values(proposal.source)) + rng.gauss(0, 0.001)
        opt.observe(proposal.key, _values(proposal.source), value)
        if value < best:
            best_source, best = proposal.source, value
    assert not opt.pending               # every proposal was observed
    assert start - best > 0.01           # most of the toy's 0.017 of room


def test_the_same_seed_proposes_the_same_and_a_stopped_proposal_is_forgotten() -> None:
    a, b = (TpeProposer(SOURCE, "gpu", seed=9) for _ in range(2))
    pa, pb = (o.propose(SOURCE, tried=set(), rng=random.Random(1)) for o in (a, b))
    assert pa == pb
    assert a.pending == {pa.key}
    a.forget(pa.key)
    assert not a.pending


def test_a_crash_is_told_as_worse_than_anything_seen() -> None:
    opt = TpeProposer(SOURCE, "gpu", seed=1)
    opt.observe("k1-" + "0" * 32, _values(SOURCE), 1.0)
    opt.observe("k1-" + "1" * 32, _values(SOURCE), None)
    values = [t.value for t in opt.study.trials]
    assert values == [1.0, 1.0 + optimizer.CRASH_PENALTY_BPB]


def test_a_space_with_nothing_left_untried_raises_no_proposal() -> None:
    opt = TpeProposer("QK_NORM = False\n", "gpu", seed=1)
    first = opt.propose("QK_NORM = False\n", tried=set(), rng=random.Random(1))
    with pytest.raises(NoProposal):
        opt.propose("QK_NORM = False\n", tried={first.key}, rng=random.Random(1))


def test_proposers_are_chosen_by_name() -> None:
    assert NAMES == ("bandit", "tpe")
    for name in NAMES:
        proposal = make(name, genesis_source=SOURCE, profile="gpu", seed=1).propose(
            SOURCE, trials=[], tried=set(), rng=random.Random(2))
        assert proposal.key != parse_program(SOURCE).key
    with pytest.raises(ValueError, match="bandit, tpe"):
        make("grid", genesis_source=SOURCE, profile="gpu", seed=1)


def test_observations_carry_each_counted_programs_full_constants_down_its_ancestry() -> None:
    import hashlib

    from ledger import fold
    from ledger.bodies import Claim
    from node.research.history import ClaimRecord, History
    from node.research.program import apply_changes, summarize
    from node.research.proposers import observations
    from tests.ledger.factory import CLASS, Feeds, identity, make_spec

    me, stranger = identity(1), identity(2)
    spec = make_spec(me, [me])
    state, feeds, history = fold.initial(spec.spec), Feeds(spec.swarm_id), History()
    a_src = apply_changes(parse_program(SOURCE), {"MATRIX_LR": 0.08})
    b_src = apply_changes(parse_program(a_src), {"DEPTH": 24})
    commits = [hashlib.sha1(b"%d" % n).digest() for n in range(4)]
    rows = [(me, commits[0], None, None, SOURCE, 1.0), (me, commits[1], commits[0], SOURCE, a_src, 0.99),
            (me, commits[2], commits[1], a_src, b_src, None), (stranger, commits[3], commits[0], SOURCE, b_src, 0.5)]
    ids = []
    for who, commit, parent, before, after, value in rows:
        body = Claim(commit=commit, parent=parent, platform_class=CLASS, status="ok" if value else "crash",
                     val_bpb=value, num_steps=1, planned_steps=1, seed=0, training_s=1.0, wall_s=1.0, peak_vram_mb=0.0,
                     loss_curve=[], diff_summary=summarize(before, after), message="", bundle=None)
        entry = feeds.sign(who, body)
        fold.apply(state, entry)
        record = ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, body)
        history.add(record) if who is me else history._index(record)
        ids.append(entry.id)
    seen = observations(history, state, CLASS, SOURCE, told=set())
    assert [o.claim for o in seen] == ids[1:3]                     # the stranger's claim does not count
    assert seen[1].values == {**_values(b_src)} and seen[1].bpb is None
    assert seen[0].values["MATRIX_LR"] == 0.08 and seen[0].bpb == 0.99
    assert observations(history, state, CLASS, SOURCE, told={o.claim for o in seen}) == []
