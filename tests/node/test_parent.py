"""A record whose commit no peer serves does not stop research: the node builds on the best commit
it holds and says so once (issue 12, "a node never stalls on a best commit it cannot fetch")."""
from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from ledger.bodies import Verify
from ledger.keys import Identity
from node.config import load_config
from node.display import Display
from node.errors import NoProposal
from node.home import DataInfo, Layout
from node.platform import Device
from node.research.loop import Research
from swarm.gitrepo import Repository
from tests.ledger.factory import commit, identity
from tests.node.hubkit import CLASS, KitBackend, backend

DEVICE = Device(None, "cpu", 0, "", CLASS)


def _research(kit: KitBackend, tmp_path: Path, out: io.StringIO) -> Research:
    config = load_config(["--home", str(tmp_path / "home"), "--profile", "cpu"], {})
    return Research(config, kit.ledger, kit.repo, Layout(tmp_path / "home"),
                    DataInfo(tmp_path / "data", b"m" * 32, b"t" * 32), kit.me, kit.verifier,
                    Display(out, tty=False), tmp_path / "scratch", random.Random(1), lambda: 1000.0)


async def _record(kit: KitBackend, commit_id: bytes, parent: bytes | None, val_bpb: float, author: Identity) -> None:
    """A claim of `commit_id` that the swarm's trusted verifier reproduced: a record if it is the best."""
    record = await kit.claim(commit_id, parent, val_bpb, who=author)
    await kit.publish_as(kit.verifier, Verify(claim=record.id, commit=commit_id, platform_class=CLASS, status="ok",
                                              val_bpb=val_bpb, num_steps=10, seed=0, training_s=1.0))
    assert any(r.claim == record.id for r in kit.ledger.state.records), "the test needs it to be a record"


async def test_an_unserved_best_commit_leaves_the_node_on_the_best_one_it_holds(tmp_path: Path) -> None:
    async with backend(tmp_path, claim_baseline=False) as kit:
        await _record(kit, kit.baseline, None, 1.5, kit.me)
        here = await kit.commit(kit.baseline, b"MATRIX_LR = 0.05\n", "a held improvement")
        await _record(kit, here, kit.baseline, 1.4, identity(7))
        gone = commit(99)   # claimed and reproduced, but its bundle is nowhere
        await _record(kit, gone, here, 1.3, identity(8))
        out = io.StringIO()
        research = _research(kit, tmp_path, out)
        assert research.parent_of(CLASS) == gone
        assert await research.parent_here(DEVICE) == here
        assert await research.parent_here(DEVICE) == here
        said = [line for line in out.getvalue().splitlines() if "is not here" in line]
        assert len(said) == 1 and gone.hex()[:12] in said[0] and here.hex()[:12] in said[0]


async def test_with_only_the_unserved_best_above_the_baseline_it_builds_on_the_baseline(tmp_path: Path) -> None:
    async with backend(tmp_path, claim_baseline=False) as kit:
        await _record(kit, kit.baseline, None, 1.5, kit.me)
        await _record(kit, commit(98), kit.baseline, 1.3, identity(8))
        research = _research(kit, tmp_path, io.StringIO())
        assert await research.parent_here(DEVICE) == kit.baseline


async def test_the_best_commit_here_is_the_parent(tmp_path: Path) -> None:
    async with backend(tmp_path, claim_baseline=False) as kit:
        await _record(kit, kit.baseline, None, 1.5, kit.me)
        here = await kit.commit(kit.baseline, b"MATRIX_LR = 0.05\n", "a held improvement")
        await _record(kit, here, kit.baseline, 1.4, identity(7))
        out = io.StringIO()
        assert await _research(kit, tmp_path, out).parent_here(DEVICE) == here
        assert "is not here" not in out.getvalue()


async def test_a_missing_baseline_is_still_no_proposal(tmp_path: Path) -> None:
    """The one case with nothing to build on: a joined node whose baseline is not here either."""
    async with backend(tmp_path, claim_baseline=False) as kit, Repository.open(tmp_path / "empty") as empty:
        await _record(kit, kit.baseline, None, 1.5, kit.me)
        await _record(kit, commit(97), kit.baseline, 1.3, identity(8))
        research = _research(kit, tmp_path, io.StringIO())
        research.repo = empty
        with pytest.raises(NoProposal, match="not here yet"):
            await research.parent_here(DEVICE)
