"""The validation rows a claim's replays score come from its seal: the same for every assigned
verifier, unknown to the claimant when it trained, and passed to the trainer as --eval-seed."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ledger import assign, fold
from node.research.experiment import RunRequest, command
from tests.ledger.factory import Feeds, claim, identity, make_spec, seal

CREATOR, ANCHOR, OTHER_ANCHOR, AUTHOR = identity(900), identity(901), identity(902), identity(903)


def test_rows_follow_the_claims_seal_and_nothing_else() -> None:
    signed = make_spec(CREATOR, [ANCHOR, OTHER_ANCHOR])
    feeds, state = Feeds(signed.swarm_id), fold.initial(signed.spec)
    c = feeds.sign(AUTHOR, claim(1, 1.5))
    fold.apply(state, c)
    assert assign.replay_eval_seed(state, c.id) is None  # no seal: no rows yet, and no replay counts
    first = feeds.sign(ANCHOR, seal(c))
    fold.apply(state, first)
    rows = assign.replay_eval_seed(state, c.id)
    assert rows is not None and 0 <= rows < 2**63
    second = feeds.sign(OTHER_ANCHOR, seal(c))
    fold.apply(state, second)
    # the claim's seal is the smaller id of the two, so its rows are that seal's, in any order
    again = fold.rebuild(signed.spec, [c, second, first])
    assert assign.replay_eval_seed(state, c.id) == assign.replay_eval_seed(again, c.id)
    assert (assign.replay_eval_seed(state, c.id) == rows) == (first.id < second.id)


@given(st.integers(1, 10**6), st.integers(1, 10**6))
def test_claims_of_one_parent_sealed_together_score_the_same_rows(a: int, b: int) -> None:
    """The rows name the parent (so one parent run serves every claim on it in the seal); two
    baselines, which have no parent, score rows of their own."""
    signed = make_spec(CREATOR, [ANCHOR])
    feeds, state = Feeds(signed.swarm_id), fold.initial(signed.spec)
    children = [feeds.sign(AUTHOR, claim(n, 1.5)) for n in (a, b)]
    roots = [feeds.sign(AUTHOR, dataclasses.replace(claim(n, 1.5), parent=None)) for n in (a, b)]
    for entry in [*children, *roots]:
        fold.apply(state, entry)
    fold.apply(state, feeds.sign(ANCHOR, seal(*children, *roots)))
    rows = [assign.replay_eval_seed(state, e.id) for e in [*children, *roots]]
    assert None not in rows and rows[0] == rows[1]
    assert (rows[2] == rows[3]) == (roots[0].id == roots[1].id) and rows[0] not in rows[2:]


def test_the_trainer_is_told_the_rows() -> None:
    base = RunRequest(train_py=Path("t.py"), parent_py=None, profile="cpu", budget_s=10, steps=5, horizon=5,
                      seed=1, data=Path("d"), scratch=Path("s"), env={}, home=Path("h"))
    assert "--eval-seed" not in command(base)  # our own experiments: fresh, secret rows
    argv = command(RunRequest(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, "eval_seed": 42}))
    assert argv[argv.index("--eval-seed") + 1] == "42"
