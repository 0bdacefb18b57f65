"""Poison-proof memory (issue 16): what the proposer learns from the ledger, and what a flood of
fake claims cannot make it learn. Real ledger files, real git objects, the real proposer."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import fold
from ledger.bodies import Claim
from ledger.store import Ledger
from node.errors import NoProposal
from node.research import memory
from node.research.history import ClaimRecord, History
from node.research.program import summarize
from node.research.proposer import Proposal, propose
from swarm import gitrepo
from tests.ledger.factory import CLASS, Feeds, identity, make_spec, seal, verify

SOURCE = "MATRIX_LR = 0.04\nWEIGHT_DECAY = 0.2\nDEPTH = 8\nWARMDOWN_RATIO = 0.5\n"
AUTHOR = "t <t@autoswarm>"
FLOOD = 3000


def _claim(commit: bytes, parent: bytes | None, value: float | None, summary: str) -> Claim:
    return Claim(commit=commit, parent=parent, platform_class=CLASS, status="ok" if value is not None else "crash",
                 val_bpb=value, num_steps=10, planned_steps=10, seed=0, training_s=1.0, wall_s=1.0, peak_vram_mb=0.0,
                 loss_curve=[], diff_summary=summary, message="", bundle=None)


def _propose(history: History, state: fold.State) -> Proposal:
    return propose(SOURCE, profile="cpu", trials=history.trials(state, CLASS), tried=history.keys,
                   rng=random.Random(11))


@pytest.mark.slow
async def test_a_flood_of_fake_crash_claims_leaves_the_proposal_unchanged(tmp_path: Path) -> None:
    creator, me, attacker = identity(1), identity(2), identity(3)
    spec = make_spec(creator, [creator])
    async with Ledger.open(tmp_path / "ledger.sqlite", spec) as ledger, \
            gitrepo.Repository.open(tmp_path / "repo") as repo:
        history = History(repo=repo)
        genesis = await gitrepo.commit_file(repo, None, {"train.py": SOURCE.encode()}, "genesis", AUTHOR, 0)
        base = await ledger.publish(me, _claim(genesis, None, 1.0, summarize(None, SOURCE)), time_ms=1)
        history.add(ClaimRecord(base.id, base.author, base.seq, base.time_ms, _body(base)))
        # our own experiments: a win and a crash, each a real commit
        rng = random.Random(3)
        for value in (0.99, None):
            proposal = propose(SOURCE, profile="cpu", trials=[], tried=history.keys, rng=rng)
            commit = await gitrepo.commit_file(repo, genesis, {"train.py": proposal.source.encode()}, "e", AUTHOR, 1)
            entry = await ledger.publish(me, _claim(commit, genesis, value, summarize(SOURCE, proposal.source)),
                                         time_ms=2)
            history.add(ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, _body(entry)))
        await history.sync(ledger)
        before = _propose(history, ledger.state)
        keys_before, trials_before = set(history.keys), history.trials(ledger.state, CLASS)

        # the attacker: every edit the proposer could draw, each a real commit it "ran" and saw crash
        targets: list[Proposal] = []
        seen = set(history.keys)
        draw = random.Random(5)
        while len(targets) < FLOOD:
            try:
                p = propose(SOURCE, profile="cpu", trials=[], tried=seen, rng=draw)
            except NoProposal:
                break
            seen.add(p.key)
            targets.append(p)
        assert before.key in {p.key for p in targets}   # the flood names exactly what we would run next
        feeds, wires = Feeds(ledger.swarm_id), []
        for n in range(FLOOD):
            target = targets[n % len(targets)]
            commit = await gitrepo.commit_file(repo, genesis, {"train.py": target.source.encode()}, "x", AUTHOR, n)
            # half tell the truth about their code, half lie (summary of one edit, code of another)
            told = target if n % 2 == 0 else targets[(n + 1) % len(targets)]
            wires.append(feeds.sign(attacker, _claim(commit, genesis, None, summarize(SOURCE, told.source))).wire)
        outcomes = await ledger.append_wires(wires)
        assert sum(1 for o in outcomes if o.status.name == "APPENDED") == FLOOD
        assert await history.sync(ledger) == FLOOD

        assert _propose(history, ledger.state) == before
        assert history.keys == keys_before and history.trials(ledger.state, CLASS) == trials_before


def _body(entry: object) -> Claim:
    body = getattr(entry, "body")
    assert isinstance(body, Claim)
    return body


def test_verified_claims_count_fully_unverified_a_little_from_authors_with_standing_only() -> None:
    creator, peer, stranger = identity(1), identity(2), identity(3)
    spec = make_spec(creator, [creator])
    state = fold.initial(spec.spec)
    feeds = Feeds(spec.swarm_id)
    history = History()
    base_src = SOURCE
    edits = ["MATRIX_LR = 0.06\nWEIGHT_DECAY = 0.2\nDEPTH = 8\nWARMDOWN_RATIO = 0.5\n",
             "MATRIX_LR = 0.04\nWEIGHT_DECAY = 0.1\nDEPTH = 8\nWARMDOWN_RATIO = 0.5\n",
             "MATRIX_LR = 0.04\nWEIGHT_DECAY = 0.2\nDEPTH = 16\nWARMDOWN_RATIO = 0.5\n"]
    base = feeds.sign(creator, _claim(b"\x00" * 20, None, 1.0, summarize(None, base_src)))
    fold.apply(state, base)
    history.add(ClaimRecord(base.id, base.author, base.seq, base.time_ms, _body(base)))
    entries = []
    for n, (who, src, value) in enumerate([(peer, edits[0], 0.98), (peer, edits[1], 0.999), (stranger, edits[2], None)]):
        entry = feeds.sign(who, _claim(bytes([n + 1]) * 20, b"\x00" * 20, value, summarize(base_src, src)))
        fold.apply(state, entry)
        history._index(ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, _body(entry)))
        entries.append(entry)
    history.refresh(state)
    assert not any(history.counts(e.id) for e in entries)    # nobody has standing yet
    fold.apply(state, feeds.sign(creator, seal(entries[0])))
    fold.apply(state, feeds.sign(creator, verify(entries[0], 0.98)))
    assert entries[0].id in state.verified
    history.refresh(state)
    assert history.weight[entries[0].id] == 1.0                       # verified
    assert history.weight[entries[1].id] == memory.UNVERIFIED_WEIGHT  # its author has standing now
    assert history.weight[entries[2].id] == 0.0                       # a stranger's unverified crash
    assert {t.weight for t in history.trials(state, CLASS)} == {1.0, memory.UNVERIFIED_WEIGHT}
    assert summarize(base_src, edits[2]).splitlines()[-1][5:] not in history.keys


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.booleans()), max_size=60))
def test_an_author_without_a_verified_claim_never_counts_and_one_with_counts_boundedly(
        rows: list[tuple[int, bool, bool]]) -> None:
    spec = make_spec(identity(1), [identity(1)])
    state = fold.initial(spec.spec)
    authors = [identity(10 + i).public_key for i in range(4)]
    claims = [memory.Counted(bytes([i]) * 32, authors[a], i, own, lying) for i, (a, own, lying) in enumerate(rows)]
    out = memory.weights(state, claims)
    assert set(out) == {c.id for c in claims}
    for c in claims:
        assert out[c.id] == (0.0 if c.lying else 1.0 if c.own else 0.0)   # nothing verified: no standing


async def test_a_verified_claim_whose_summary_disagrees_with_its_code_counts_nothing(tmp_path: Path) -> None:
    creator, peer = identity(1), identity(2)
    spec = make_spec(creator, [creator])
    edited = SOURCE.replace("DEPTH = 8", "DEPTH = 16")
    claimed = SOURCE.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.08")
    async with Ledger.open(tmp_path / "ledger.sqlite", spec) as ledger, \
            gitrepo.Repository.open(tmp_path / "repo") as repo:
        genesis = await gitrepo.commit_file(repo, None, {"train.py": SOURCE.encode()}, "genesis", AUTHOR, 0)
        honest = await gitrepo.commit_file(repo, genesis, {"train.py": edited.encode()}, "a", AUTHOR, 1)
        liar = await gitrepo.commit_file(repo, genesis, {"train.py": edited.encode() + b"#\n"}, "b", AUTHOR, 2)
        feeds = Feeds(ledger.swarm_id)
        base = feeds.sign(creator, _claim(genesis, None, 1.0, summarize(None, SOURCE)))
        good = feeds.sign(peer, _claim(honest, genesis, 0.98, summarize(SOURCE, edited)))
        bad = feeds.sign(peer, _claim(liar, genesis, 0.97, summarize(SOURCE, claimed)))
        wires = [base, good, bad, feeds.sign(creator, seal(good, bad)), feeds.sign(creator, verify(good, 0.98)),
                 feeds.sign(creator, verify(bad, 0.97))]
        await ledger.append_wires([e.wire for e in wires])
        assert good.id in ledger.state.verified and bad.id in ledger.state.verified
        history = History(repo=repo)
        await history.sync(ledger)
        assert history.counts(good.id) and not history.counts(bad.id)
        assert bad.id in history.lying and summarize(SOURCE, claimed).splitlines()[-1][5:] not in history.keys
        assert [t.changes for t in history.trials(ledger.state, CLASS)] == [{"DEPTH": (8, 16)}]


def test_a_strangers_fake_win_on_a_cheap_class_is_no_screened_winner() -> None:
    from node.research.screening import screened_winners

    creator, stranger = identity(1), identity(2)
    spec = make_spec(creator, [creator])
    state, feeds, history = fold.initial(spec.spec), Feeds(spec.swarm_id), History()
    edited = SOURCE.replace("DEPTH = 8", "DEPTH = 16")
    base = feeds.sign(creator, _claim(b"\0" * 20, None, 1.0, summarize(None, SOURCE)))
    fake = feeds.sign(stranger, _claim(b"\1" * 20, b"\0" * 20, 0.5, summarize(SOURCE, edited)))
    mine = feeds.sign(creator, _claim(b"\2" * 20, b"\0" * 20, 0.99, summarize(SOURCE, edited + "#\n")))
    for entry in (base, fake, mine):
        fold.apply(state, entry)
    history.add(ClaimRecord(base.id, base.author, base.seq, base.time_ms, _body(base)))
    history._index(ClaimRecord(fake.id, fake.author, fake.seq, fake.time_ms, _body(fake)))
    assert screened_winners(state, history, [CLASS]) == []
    history.add(ClaimRecord(mine.id, mine.author, mine.seq, mine.time_ms, _body(mine)))
    assert [w.claim for w in screened_winners(state, history, [CLASS])] == [mine.id]
