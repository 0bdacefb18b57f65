"""Two-tier screening over a real fold: which cheap-class winners the reference class runs, in
which order, transplanted onto its own parent, and never twice."""
from __future__ import annotations

import hashlib

import pytest

from ledger import fold
from ledger.bodies import Claim
from ledger.entry import sign_entry
from ledger.fold import State
from ledger.keys import Identity
from ledger.spec import SwarmSpec
from node.research.history import ClaimRecord, History
from node.research.program import apply_changes, normalized_key, parse_program, summarize
from node.research.screening import next_confirmation, role, screened_winners, value_in_class

REF, CHEAP = "ref-gpu", "cheap-gpu"
BASE = b"\x00" * 20
SOURCE = "LR = 0.04\nWD = 0.2\nDEPTH = 8\n"


def _edit(source: str, **changes: float) -> str:
    return apply_changes(parse_program(source), changes)


class Swarm:
    def __init__(self, max_steps: dict[str, int] | None = None) -> None:
        self.author = Identity.from_seed(hashlib.sha256(b"screening-test").digest())
        spec = SwarmSpec(
            name="t", creator=self.author.public_key, created_ms=0, harness_hash=b"h" * 32, dataset_hash=b"d" * 32,
            tokenizer_hash=b"t" * 32, time_budget_s=300, metric="val_bpb", direction="min", baseline_commit=BASE,
            allowed_files=["train.py"], platform_classes=[CHEAP, REF], verifiers=[self.author.public_key], quorum=1,
            noise_bpb={CHEAP: 0.003, REF: 0.002}, record_ucr_per_bpb=10**9, verify_ucr=1000, max_steps=max_steps or {})
        self.state: State = fold.initial(spec)
        self.history = History()
        self.seq = 0
        self.prev: bytes | None = None
        self.commits = 0

    def claim(self, cls: str, parent_source: str | None, source: str, value: float | None,
              parent: bytes | None = BASE, num_steps: int = 10) -> bytes:
        self.commits += 1
        commit = BASE if parent_source is None else hashlib.sha1(b"c%d" % self.commits).digest()
        body = Claim(commit=commit, parent=None if parent_source is None else parent, platform_class=cls,
                     status="ok" if value is not None else "crash", val_bpb=value, num_steps=num_steps,
                     planned_steps=num_steps,
                     seed=0, training_s=1.0, wall_s=1.0, peak_vram_mb=0.0, loss_curve=[],
                     diff_summary=summarize(parent_source, source), message="", bundle=None)
        self.seq += 1
        entry = sign_entry(self.author, swarm=self.state.swarm_id, seq=self.seq, prev=self.prev, body=body,
                           time_ms=self.seq)
        self.prev = entry.id
        fold.apply(self.state, entry)
        self.history.add(ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, body))
        return entry.id


@pytest.fixture
def swarm() -> Swarm:
    s = Swarm()
    s.claim(CHEAP, None, SOURCE, 1.080)
    s.claim(REF, None, SOURCE, 1.000)
    return s


def _next(s: Swarm, parent: str = SOURCE, busy: frozenset[str] = frozenset()) -> str | None:
    found = next_confirmation(s.state, s.history, parent, reference_class=REF, screening_classes=[CHEAP, REF],
                              busy=busy)
    return None if found is None else found.proposal.key


def test_winners_beat_their_parent_on_their_class_by_the_noise_and_rank_by_gain(swarm: Swarm) -> None:
    # the cheap class's sd is its spec noise / 3 = 0.001 until replays measure it
    lr = swarm.claim(CHEAP, SOURCE, _edit(SOURCE, LR=0.06), 1.075)        # 5 sd
    swarm.claim(CHEAP, SOURCE, _edit(SOURCE, WD=0.1), 1.0795)             # 0.5 sd: noise
    depth = swarm.claim(CHEAP, SOURCE, _edit(SOURCE, DEPTH=16), 1.077)    # 3 sd
    swarm.claim(CHEAP, SOURCE, _edit(SOURCE, LR=0.06, WD=0.3), None)      # a crash
    swarm.claim(CHEAP, SOURCE, _edit(SOURCE, LR=0.06), 1.078)             # the same edit again: one candidate
    swarm.claim(REF, SOURCE, _edit(SOURCE, WD=0.3), 0.990)                # the reference class's own: no screen
    winners = screened_winners(swarm.state, swarm.history, [CHEAP])
    assert [w.claim for w in winners] == [lr, depth]
    assert winners[0].gain_bpb == pytest.approx(0.005) and winners[0].gain_sds == pytest.approx(5.0)
    assert winners[0].changes == {"LR": (0.04, 0.06)}
    # the genesis commit is claimed on both classes: its value is read per class
    assert value_in_class(swarm.state, swarm.history, BASE, CHEAP) == 1.080
    assert value_in_class(swarm.state, swarm.history, BASE, REF) == 1.000


def test_reference_runs_the_best_untried_winner_once(swarm: Swarm) -> None:
    swarm.claim(CHEAP, SOURCE, _edit(SOURCE, LR=0.06), 1.075)
    swarm.claim(CHEAP, SOURCE, _edit(SOURCE, DEPTH=16), 1.077)
    first = next_confirmation(swarm.state, swarm.history, SOURCE, reference_class=REF, screening_classes=[CHEAP])
    assert first is not None and first.proposal.changes == {"LR": (0.04, 0.06)}
    assert first.proposal.key == normalized_key(first.proposal.source) == normalized_key(_edit(SOURCE, LR=0.06))
    # while a worker runs it, the next; once the reference class claimed it, the next too
    depth_key = normalized_key(_edit(SOURCE, DEPTH=16))
    assert _next(swarm, busy=frozenset({first.proposal.key})) == depth_key
    swarm.claim(REF, SOURCE, first.proposal.source, 1.001)
    assert _next(swarm) == depth_key
    assert _next(swarm, busy=frozenset({depth_key})) is None
    swarm.claim(REF, SOURCE, _edit(SOURCE, DEPTH=16), 0.995)
    assert _next(swarm) is None


def test_a_winner_is_transplanted_onto_the_reference_parent(swarm: Swarm) -> None:
    swarm.claim(CHEAP, SOURCE, _edit(SOURCE, LR=0.06), 1.075)
    swarm.claim(CHEAP, SOURCE, _edit(SOURCE, DEPTH=16), 1.077)
    ref_parent = _edit(SOURCE, LR=0.05, WD=0.1)
    found = next_confirmation(swarm.state, swarm.history, ref_parent, reference_class=REF, screening_classes=[CHEAP])
    assert found is not None and found.proposal.changes == {"LR": (0.05, 0.06)}
    assert found.proposal.key == normalized_key(_edit(ref_parent, LR=0.06))
    # a reference parent that already has the winner's value: nothing to confirm there, the next one
    assert _next(swarm, parent=_edit(SOURCE, LR=0.06)) == normalized_key(_edit(SOURCE, LR=0.06, DEPTH=16))


def test_an_edit_the_reference_class_ran_on_any_parent_is_not_run_again(swarm: Swarm) -> None:
    swarm.claim(CHEAP, SOURCE, _edit(SOURCE, DEPTH=16), 1.077)
    older = _edit(SOURCE, WD=0.5)
    swarm.claim(REF, older, _edit(older, DEPTH=16), 1.02)
    assert _next(swarm) is None


def test_roles() -> None:
    assert role(REF, REF, [CHEAP]) == "confirm"
    assert role(CHEAP, REF, [CHEAP]) == "screen"
    assert role("other", REF, [CHEAP]) == "explore"


def test_a_winner_whose_steps_cannot_fit_its_class_is_never_confirmed() -> None:
    """Issue 12: a claim of more steps than the spec's max_steps is refused on sight, so a
    reference worker never spends a run confirming its impossible gain."""
    s = Swarm(max_steps={CHEAP: 1000})
    s.claim(CHEAP, None, SOURCE, 1.080)
    s.claim(REF, None, SOURCE, 1.000)
    absurd = s.claim(CHEAP, SOURCE, _edit(SOURCE, LR=0.06), 1.000, num_steps=10**6)  # 80 sd, in a million steps
    honest = s.claim(CHEAP, SOURCE, _edit(SOURCE, DEPTH=16), 1.077, num_steps=900)
    assert [w.claim for w in screened_winners(s.state, s.history, [CHEAP])] == [honest]
    assert _next(s) == normalized_key(_edit(SOURCE, DEPTH=16))
    assert absurd in s.state.claims
