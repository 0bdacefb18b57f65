"""Paired replays (issue 13): the verifier trains a claim and its parent on the seed the claim's
seal draws for it, publishes both values in one Verify per round the fold wants, and reuses a
parent run across claims; against a real ledger file, a real git repository and (slow tests) the
real sandboxed CPU trainer.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import assign, evidence, fold
from ledger.bodies import Claim, Seal, Verify
from ledger.entry import Entry
from ledger.fold import State
from ledger.keys import Identity
from ledger.state import RecordRow
from node.config import load_config
from node.display import Display
from node.home import DataInfo, Layout
from node.platform import Device
from node.research import verifier
from node.research.experiment import RunResult
from node.research.history import ClaimRecord, History
from node.research.replay import Replays, replay_text
from node.research.runs import ParentKey, ParentRuns, Runs, Stats
from node.web import views
from swarm import gitrepo
from tests.ledger.factory import CLASS as FACTORY_CLASS
from tests.ledger.factory import Feeds, commit, identity, make_spec
from tests.node.hubkit import CLASS, KitBackend, backend
from trainer import sandbox
from trainer.data_format import PreparedData, synthetic
from trainer.harness import harness_hash

DEVICE = Device(None, "cpu", 0, "", CLASS)
GENESIS = Path(__file__).resolve().parents[2] / "trainer" / "train.py"
# the spec's noise in the real-trainer tests: ten steps on the synthetic data differ by seed far more
# than the kit's 0.01, which would refute the baseline's claim
KIT_NOISE_BPB = 0.1
REPLAY_BUDGET_S = 300  # the node's budget in the slow tests: 10 replayed steps take seconds, idle
needs_bwrap = pytest.mark.skipif(sandbox.find_bwrap() is None, reason="bubblewrap is not installed")


def _result(status: str = "ok", val_bpb: float | None = 2.0) -> RunResult:
    return RunResult(status=status, reason="", val_bpb=val_bpb, seed=1, num_steps=10, planned_steps=10,
                     training_s=1.0, total_s=2.0, peak_vram_mb=0.0, loss_curve=(), log_tail="", harness_hash="",
                     wall_s=2.0)


# -- the parent-run cache, pure

@given(st.lists(st.tuples(st.integers(0, 20), st.sampled_from(["ok", "crash", "timeout"])), max_size=60),
       st.integers(1, 8))
def test_the_cache_is_bounded_keeps_the_newest_and_never_a_timeout(puts: list[tuple[int, str]], bound: int) -> None:
    cache, kept = ParentRuns(bound), {}
    for seed, status in puts:
        key = ParentKey(commit(1), seed, CLASS, 10, 10, 7)
        cache.put(key, _result(status))
        if status != "timeout":
            kept[seed] = status
        assert len(cache) <= bound
        found = cache.get(key)
        if status != "timeout":  # the newest is always kept, failures too: they repeat
            assert found is not None and found.status == status
        elif found is not None:  # a timeout leaves an earlier finished run of that key as it was
            assert found.status == kept[seed]


def test_the_cache_key_is_every_input_of_the_run() -> None:
    cache, key = ParentRuns(), ParentKey(commit(1), 5, CLASS, 10, 10, 7)
    cache.put(key, _result())
    assert cache.get(ParentKey(commit(1), 5, CLASS, 10, 10, 7)) is not None
    for other in (ParentKey(commit(2), 5, CLASS, 10, 10, 7), ParentKey(commit(1), 6, CLASS, 10, 10, 7),
                  ParentKey(commit(1), 5, "h100", 10, 10, 7), ParentKey(commit(1), 5, CLASS, 11, 10, 7),
                  ParentKey(commit(1), 5, CLASS, 10, None, 7), ParentKey(commit(1), 5, CLASS, 10, 10, 8)):
        assert cache.get(other) is None
    with pytest.raises(ValueError):
        ParentRuns(0)


def test_the_log_line_shows_the_seed_and_the_paired_difference() -> None:
    body = Claim(commit=commit(3), parent=commit(0), platform_class=CLASS, status="ok", val_bpb=1.23, num_steps=10,
                 planned_steps=10, seed=0, training_s=1.0, wall_s=2.0, peak_vram_mb=0.0, loss_curve=[],
                 diff_summary="", message="", bundle=None)
    record = ClaimRecord(b"c" * 32, b"a" * 32, 1, 1, body)
    paired = Verify(claim=record.id, commit=body.commit, platform_class=CLASS, status="ok", val_bpb=1.2345,
                    num_steps=10, seed=77, training_s=1.0, round_index=2, parent_val_bpb=1.24)
    text = replay_text(record, paired, "", _result(val_bpb=1.24))
    assert "seed 77, round 2" in text and "parent 1.2400" in text and "paired diff -0.0055" in text
    unpaired = Verify(claim=record.id, commit=body.commit, platform_class=CLASS, status="ok", val_bpb=1.2345,
                      num_steps=10, seed=77, training_s=1.0)
    assert "the parent failed on this seed (crash): unpaired" in replay_text(record, unpaired, "", _result("crash", None))


# -- the queue and the assignment, on the pure fold

RESEARCHER, OUR_VERIFIER = identity(300), identity(301)
OTHERS = [identity(310 + i) for i in range(4)]


def _sealed_claim(state: State, feeds: Feeds, history: History, author: Identity, sealer: Identity,
                  n: int, parent: bytes | None = None, val_bpb: float = 2.0) -> Entry:
    body = Claim(commit=commit(n), parent=parent, platform_class=FACTORY_CLASS, status="ok", val_bpb=val_bpb,
                 num_steps=10, planned_steps=10, seed=0, training_s=1.0, wall_s=2.0, peak_vram_mb=0.0,
                 loss_curve=[], diff_summary="", message="", bundle=None)
    entry = feeds.sign(author, body)
    fold.apply(state, entry)
    history.add(ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, body))
    fold.apply(state, feeds.sign(sealer, Seal(claims=[entry.id])))
    return entry


@pytest.mark.parametrize(("others", "quorum", "left"), [(0, 1, False), (1, 1, True), (1, 2, False), (4, 2, True)])
def test_our_claims_are_left_to_others_only_when_their_assignment_can_decide_them(
        others: int, quorum: int, left: bool) -> None:
    signed = make_spec(RESEARCHER, [OUR_VERIFIER, *OTHERS[:others]], quorum=quorum, assigned=0)
    state, feeds, history = fold.initial(signed.spec), Feeds(signed.swarm_id), History()
    ours = _sealed_claim(state, feeds, history, RESEARCHER, OUR_VERIFIER, 1)
    theirs = _sealed_claim(state, feeds, history, identity(399), OUR_VERIFIER, 2)
    keys = frozenset({RESEARCHER.public_key, OUR_VERIFIER.public_key})
    skipped = verifier.never_vouch_for(state, history, RESEARCHER.public_key, keys, FACTORY_CLASS)
    assert (ours.id in skipped) == left and theirs.id not in skipped


def test_the_queue_offers_the_baseline_unpaired_then_children_while_the_fold_wants_rounds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    signed = make_spec(RESEARCHER, [OUR_VERIFIER])
    state, feeds, history = fold.initial(signed.spec), Feeds(signed.swarm_id), History()
    base = _sealed_claim(state, feeds, history, RESEARCHER, OUR_VERIFIER, 0)
    me = OUR_VERIFIER.public_key

    def queued() -> list[bytes]:
        return [r.id for r in verifier.verification_queue(state, history, me, FACTORY_CLASS, set())]

    # the baseline has no parent to pair with: the unpaired rules offer it while the class has no best
    assert evidence.rounds_wanted(state, base.id, me) == [] and queued() == [base.id]
    fold.apply(state, feeds.sign(OUR_VERIFIER, Verify(claim=base.id, commit=commit(0), platform_class=FACTORY_CLASS,
                                                       status="ok", val_bpb=2.0, num_steps=10, seed=7,
                                                       training_s=1.0)))
    assert FACTORY_CLASS in state.best and queued() == []
    parent = commit(0)
    child = _sealed_claim(state, feeds, history, RESEARCHER, OUR_VERIFIER, 1, parent=parent, val_bpb=1.5)
    no_gain = _sealed_claim(state, feeds, history, RESEARCHER, OUR_VERIFIER, 2, parent=parent, val_bpb=2.0)
    assert evidence.rounds_wanted(state, child.id, me) == [0] and queued() == [child.id]
    assert verifier.settled(state, history.claims[no_gain.id]) and not verifier.settled(state, history.claims[child.id])
    # an undecided claim stays offered for as long as the fold asks this key for another round (the
    # sequential test's rounds_wanted), and leaves the queue when it asks for none
    monkeypatch.setattr(evidence, "rounds_wanted", lambda s, c, k: [1] if c == child.id else [])
    assert queued() == [child.id]
    monkeypatch.setattr(evidence, "rounds_wanted", lambda s, c, k: [])
    assert queued() == []


# -- the real CPU trainer (slow)

@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    return synthetic(tmp_path_factory.mktemp("data"), n_train=60_000, n_val=20_000, seed=5)


def _replays(kit: KitBackend, tmp_path: Path, data: PreparedData) -> tuple[Replays, io.StringIO]:
    """The node's Replays with a real Runs: the sandboxed `python -m trainer run` on the CPU; and
    its log. The budget is far above what 10 steps take, so a loaded machine (load 12 was seen)
    does not make a replay inconclusive."""
    config = load_config(["--home", str(tmp_path / "home"), "--profile", "cpu", "--budget-s", str(REPLAY_BUDGET_S)],
                         {})
    log = io.StringIO()
    display = Display(log, tty=False)
    layout = Layout(tmp_path / "home")
    runs = Runs(config, kit.repo, layout, DataInfo(data.root, b"m" * 32, b"t" * 32), display, tmp_path / "scratch",
                lambda: 1000.0, harness_hash())

    async def have(commit_id: bytes) -> bool:
        return await gitrepo.has_commit(kit.repo, commit_id)

    return Replays(config, kit.ledger, kit.history, kit.me, kit.verifier, runs, Stats(), display, kit.publish_as,
                   have, lambda: 1000.0), log


async def _no_op(kit: KitBackend, comment: bytes) -> bytes:
    """A commit whose train.py is the baseline's plus a comment line: the same program."""
    source = await gitrepo.read_file(kit.repo, kit.baseline, "train.py")
    return await kit.commit(kit.baseline, source + b"\n# " + comment + b"\n", "a no-op edit")


async def _verifies_of(kit: KitBackend, claim_id: bytes) -> list[Verify]:
    found = []
    for verify_id, info in kit.ledger.state.verifies.items():
        if info.claim == claim_id:
            entry = await kit.ledger.get(verify_id)
            assert entry is not None and isinstance(entry.body, Verify)
            found.append(entry.body)
    return found


async def _record_baseline(kit: KitBackend, replays: Replays, log: io.StringIO) -> ClaimRecord:
    """The baseline replayed (unpaired: it has no parent) and recorded, as a node's verifier does
    before any child can be tested. Its claim carries what the claimant's own run measured (`_own_run`),
    so the replay on the seal's seed agrees with it within the spec's noise (KIT_NOISE_BPB)."""
    record = next(r for r in kit.history.claims.values() if r.body.parent is None)
    assert kit.ledger.state.best.get(CLASS) is None
    await replays.verify(DEVICE, kit.verifier, record)
    assert CLASS in kit.ledger.state.best, log.getvalue()
    return record


@needs_bwrap
@pytest.mark.slow
async def test_a_no_op_edit_replayed_paired_differs_from_its_parent_by_exactly_zero(
        tmp_path: Path, data: PreparedData) -> None:
    async with backend(tmp_path, claim_baseline=False, noise_bpb=KIT_NOISE_BPB) as kit:
        replays, log = _replays(kit, tmp_path, data)
        baseline = await kit.claim(kit.baseline, None, await _own_run(kit, replays, kit.baseline),
                                   message="baseline: the genesis train.py")
        # the genesis claim has no parent: one run, unpaired, on the claimant's own seed (the quorum
        # rule asks whether its number reproduces)
        me = kit.verifier.public_key
        await _record_baseline(kit, replays, log)
        (g,) = await _verifies_of(kit, baseline.id)
        assert g.status == "ok" and g.parent_val_bpb is None
        assert g.seed == baseline.body.seed
        best = kit.ledger.state.best[CLASS]
        edit = await kit.claim(await _no_op(kit, b"a comment changes nothing"), kit.baseline, best - 0.05)
        drawn = assign.replay_train_seed(kit.ledger.state, edit.id, me, 0)
        assert drawn is not None and drawn != edit.body.seed  # the claimant's seed no longer matters
        assert evidence.rounds_wanted(kit.ledger.state, edit.id, me) == [0]
        await replays.verify(DEVICE, kit.verifier, edit)
        found = await _verifies_of(kit, edit.id)
        assert len(found) == 1, log.getvalue()
        v = found[0]
        assert v.status == "ok" and v.val_bpb is not None and v.parent_val_bpb is not None
        # bit-identical training on the CPU: the same program on the same seed and rows, d exactly 0
        assert v.val_bpb - v.parent_val_bpb == 0.0
        assert v.seed == drawn and v.round_index == 0 and v.outputs is not None
        assert replays.stats.parent_cache_misses == 1 and replays.stats.parent_cache_hits == 0
        # a paired difference of exactly 0 is no gain: the test stops at round 0, no record
        assert evidence.rounds_wanted(kit.ledger.state, edit.id, me) == []
        assert evidence.verdict(kit.ledger.state, edit.id) in ("loss", "waiting", "open")
        assert edit.id not in kit.ledger.state.record_of and replays.stats.verifications == 2


async def _own_run(kit: KitBackend, replays: Replays, commit_id: bytes) -> float:
    """What a worker's own run of the commit measures (the claimant's seed 0, its own rows)."""
    cand, _ = await replays.runs.materialize(DEVICE, commit_id, None)
    result = await replays.runs.run(DEVICE, "own run", cand, None, steps=10, seed=0, horizon=10)
    assert result.status == "ok" and result.val_bpb is not None, result.reason
    return result.val_bpb


# One program, six spellings: what an agent fishing for a lucky draw submits. Each trains to the
# same weights as its parent on every seed, so its paired difference is exactly 0 on the CPU.
NO_OP_EDITS = (
    ("EMBEDDING_LR = 0.6", "EMBEDDING_LR = 6e-1"),
    ("UNEMBEDDING_LR = 0.004", "UNEMBEDDING_LR = 0.0040"),
    ("MATRIX_LR = 0.04", "MATRIX_LR = 4 / 100"),
    ("WARMDOWN_RATIO = 0.5", "WARMDOWN_RATIO = 1 / 2"),
    ("FINAL_LR_FRAC = 0.0", "FINAL_LR_FRAC = 0.0  # a comment"),
    ("SCALAR_LR = 0.5", "SCALAR_LR = 0.50"),
)


@needs_bwrap
@pytest.mark.slow
async def test_no_op_variants_claimed_as_gains_never_become_records(tmp_path: Path, data: PreparedData) -> None:
    """Issue 13 at CI size (scripts/bench_paired.py --no-ops runs more): each variant is claimed
    0.05 bpb better than the best (a lucky draw, or a lie), sealed with the others so their rounds
    share one parent run, and replayed paired by the real sandboxed CPU trainer."""
    async with backend(tmp_path, claim_baseline=False, noise_dof=0, noise_bpb=KIT_NOISE_BPB) as kit:
        replays, log = _replays(kit, tmp_path, data)
        await kit.claim(kit.baseline, None, await _own_run(kit, replays, kit.baseline))
        await _record_baseline(kit, replays, log)
        best = kit.ledger.state.best[CLASS]
        source = await gitrepo.read_file(kit.repo, kit.baseline, "train.py")
        records: list[ClaimRecord] = []
        for old, new in NO_OP_EDITS:
            assert source.count(old.encode()) == 1, old
            commit_id = await kit.commit(kit.baseline, source.replace(old.encode(), new.encode()), new)
            body = Claim(commit=commit_id, parent=kit.baseline, platform_class=CLASS, status="ok", val_bpb=best - 0.05,
                         num_steps=10, planned_steps=10, seed=0, training_s=1.0, wall_s=2.0, peak_vram_mb=0.0,
                         loss_curve=[], diff_summary="", message=new, bundle=None)
            records.append(kit.history.claims[(await kit.publish_as(kit.me, body)).id])
        await kit.publish_as(kit.verifier, Seal(claims=[r.id for r in records]))
        me = kit.verifier.public_key
        while queue := verifier.verification_queue(kit.ledger.state, kit.history, me, CLASS, set()):
            assert queue[0].id in {r.id for r in records}, log.getvalue()
            await replays.verify(DEVICE, kit.verifier, queue[0])
        state = kit.ledger.state
        for record in records:
            found = await _verifies_of(kit, record.id)
            assert found and all(v.val_bpb == v.parent_val_bpb is not None for v in found), log.getvalue()
            assert record.id not in state.record_of
        assert [r.claim for r in state.records] == [next(iter(state.records)).claim]  # the baseline alone
        assert replays.stats.parent_cache_misses == 1  # one parent run served every variant's round 0


def test_a_paired_record_shows_its_gain_interval_and_seeds() -> None:
    paired = RecordRow(FACTORY_CLASS, 2, b"c" * 32, b"m" * 20, b"a" * 32, 1.77, 1.85, gain=0.08, low=0.061,
                       high=0.099, seeds=5)
    assert views.evidence_text(paired) == "gain 0.0800 [0.0610, 0.0990], 5 seeds"
    assert views.record_evidence(paired) == {"gain_bpb": 0.08, "gain_low_bpb": 0.061, "gain_high_bpb": 0.099,
                                             "seeds": 5}
    baseline = RecordRow(FACTORY_CLASS, 1, b"b" * 32, b"n" * 20, b"a" * 32, 1.85, None)
    assert views.evidence_text(baseline) == "" and views.record_evidence(baseline)["seeds"] == 0
    item = views.record_item(7, 0, paired, {})
    assert "(gain 0.0800 [0.0610, 0.0990], 5 seeds)" in item["text"]


async def test_an_offered_claim_with_nothing_to_run_waits_a_budget_instead_of_spinning(
        tmp_path: Path, data: PreparedData) -> None:
    """The worker verifies what the queue offers; when the fold then wants no round of it (here: its
    parent is no record yet), the claim waits a budget. Before, the worker was offered it again at
    once and spun (a demo node spent minutes of CPU so)."""
    async with backend(tmp_path) as kit:  # the baseline is claimed and sealed, not yet a record
        replays, log = _replays(kit, tmp_path, data)
        edit = await kit.claim(await _no_op(kit, b"nothing to run"), kit.baseline, 1.0)
        assert evidence.rounds_wanted(kit.ledger.state, edit.id, kit.verifier.public_key) == []
        await replays.verify(DEVICE, kit.verifier, edit)
        assert not await _verifies_of(kit, edit.id), log.getvalue()
        _, queue = replays.queue(CLASS)
        assert edit.id in replays._waiting() and edit.id not in [r.id for r in queue]
