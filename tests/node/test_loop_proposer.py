"""The research loop's own experiments (issue 16): the configured proposer, and leases across nodes.

Two nodes here are two Research objects, each on its own ledger file of one swarm; what one
publishes reaches the other as the signed wires gossip carries (`_gossip`), or through real peers
on 127.0.0.1. Only the trainer is
a fake (`_Trainer`): it records what the ledger held while it "ran" and returns a crash.
"""
from __future__ import annotations

import asyncio
import io
import random
from pathlib import Path

import pytest

from ledger.bodies import Claim, Post, Seal, Verify
from ledger.keys import Identity
from ledger.store import Ledger
from node.config import load_config
from node.configfile import CONFIG_FILE
from node.display import Display
from node.home import DataInfo, Layout
from node.platform import Device
from node.research import leases, proposers
from node.research.experiment import RunResult
from node.research.loop import Research
from node.research.program import normalized_key, summarize
from node.research.proposers import Bandit, Tpe
from swarm import gitrepo
from swarm.peer import Peer
from swarm.peerconfig import PeerConfig
from tests.ledger.factory import identity
from tests.node.hubkit import CLASS, KitBackend, backend
from tests.node.marketkit import FAST

DEVICE = Device(None, "cpu", 0, "", CLASS)
NOW_S = 1_000_000.0


def _research(kit: KitBackend, ledger: Ledger, home: Path, me: Identity, seed: int, proposer: str = "") -> Research:
    home.mkdir(parents=True)
    if proposer:
        (home / CONFIG_FILE).write_text(f'[research]\nproposer = "{proposer}"\n')
    config = load_config(["--home", str(home), "--profile", "cpu"], {})
    return Research(config, ledger, kit.repo, Layout(home), DataInfo(home / "data", b"m" * 32, b"t" * 32), me,
                    identity(me.public_key[0] + 1000), Display(io.StringIO(), tty=False), home / "scratch",
                    random.Random(seed), lambda: NOW_S)


async def _gossip(source: Ledger, target: Ledger) -> None:
    """Every entry of `source` into `target`, as the wires a peer's sync would carry."""
    for author in await source.heads():
        await target.append_wires(await source.wires_after(author, 0, 10_000))


class _Trainer:
    """Stands in for Runs.run: notes the leases the node's ledger held when the run started."""

    def __init__(self, research: Research) -> None:
        self.research = research
        self.leased_at_start: list[set[str]] = []

    async def run(self, device: Device, what: str, cand: Path, parent: Path | None, **_: object) -> RunResult:
        book = leases.LeaseBook()
        await book.sync(self.research.ledger, int(NOW_S * 1000))
        self.leased_at_start.append({x.key for x in book.leases if x.author == self.research.researcher.public_key})
        return RunResult("crash", "a fake trainer", None, 0, 0, 0, 0.0, 0.0, 0.0, (), "", "", 1.0)


def test_the_config_names_what_the_proposers_module_makes() -> None:
    from node.config import PROPOSERS
    assert PROPOSERS == proposers.NAMES


@pytest.mark.parametrize("name, kind", [("", Bandit), ("bandit", Bandit), ("tpe", Tpe)])
async def test_the_configured_proposer_draws_the_nodes_own_edits(tmp_path: Path, name: str, kind: type) -> None:
    async with backend(tmp_path) as kit:
        genesis = (await gitrepo.read_file(kit.repo, kit.baseline, "train.py")).decode()
        changed = genesis.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.06")
        better = await kit.commit(kit.baseline, changed.encode(), "lr")
        claim = Claim(commit=better, parent=kit.baseline, platform_class=CLASS, status="ok", val_bpb=1.4, num_steps=10,
                      planned_steps=10, seed=0, training_s=1.0, wall_s=2.0, peak_vram_mb=0.0, loss_curve=[3.0],
                      diff_summary=summarize(genesis, changed), message="lr", bundle=None)
        entry = await kit.publish_as(identity(7), claim)
        await kit.publish_as(kit.verifier, Seal(claims=[entry.id]))
        await kit.publish_as(kit.verifier, Verify(claim=entry.id, commit=better, platform_class=CLASS, status="ok",
                                                  val_bpb=1.4, num_steps=10, seed=0, training_s=1.0))
        research = _research(kit, kit.ledger, tmp_path / "home", kit.me, 1, name)
        assert research.config.proposer == (name or "bandit")
        await research.history.sync(kit.ledger)
        chosen = await research.proposing.proposer()
        parent_source = (await gitrepo.read_file(kit.repo, better, "train.py")).decode()
        proposal = research.proposing.propose(DEVICE, parent_source, chosen)
        assert isinstance(chosen.made[(CLASS, "cpu")], kind)
        assert proposal.key == normalized_key(proposal.source) and proposal.key not in research.history.keys
        assert proposal.changes and all(n in parent_source for n in proposal.changes)
        if kind is Tpe:   # told the verified claim (the only counted one with a parent), once
            assert chosen.made[(CLASS, "cpu")].optimizer.observed == 1       # type: ignore[attr-defined]
            research.proposing.propose(DEVICE, parent_source, chosen)
            assert chosen.made[(CLASS, "cpu")].optimizer.observed == 1       # type: ignore[attr-defined]


async def test_a_lease_keeps_a_second_node_off_the_program_the_first_one_runs(tmp_path: Path) -> None:
    async with backend(tmp_path) as kit, Ledger.open(tmp_path / "b.sqlite", kit.ledger.spec) as other:
        a = _research(kit, kit.ledger, tmp_path / "a", kit.me, 3)
        b = _research(kit, other, tmp_path / "b", identity(600), 3)      # the same draws as a's
        trainer = _Trainer(a)
        a.runs.run = trainer.run          # type: ignore[method-assign]
        await a.history.sync(a.ledger)
        await a._experiment(DEVICE, None)
        [running] = trainer.leased_at_start
        [lease] = [leases.decode(e.body, e.author, e.time_ms)
                   for _, e in await a.ledger.entries_since(0, ["post"], 10) if isinstance(e.body, Post)]
        assert running == {lease.key}, "the lease went out before the run started"
        assert 0 < lease.until_ms - NOW_S * 1000 <= leases.MAX_LEASE_S * 1000
        parent = (await gitrepo.read_file(kit.repo, kit.baseline, "train.py")).decode()

        # without the lease, b (a stranger to a: a's crash claim does not count for it) draws a's program
        await _gossip(kit.ledger, other)
        await b.history.sync(other)
        blind = _research(kit, other, tmp_path / "blind", identity(600), 3)
        await blind.history.sync(other)
        assert blind.proposing.propose(DEVICE, parent, await blind.proposing.proposer()).key == lease.key
        # with the lease synced, it draws another one
        assert await b.proposing.leases.sync(other, int(NOW_S * 1000)) == 1
        assert b.proposing.propose(DEVICE, parent, await b.proposing.proposer()).key != lease.key
        # once the lease runs out, the program is free again
        await b.proposing.leases.sync(other, lease.until_ms)
        assert b.proposing.leases.taken(CLASS, lease.until_ms, {}, b.researcher.public_key) == set()


GOSSIP_S = 30.0     # for an entry to cross between two peers on 127.0.0.1 (a second or less when idle)


async def test_over_real_gossip_the_second_node_runs_another_program_while_the_first_one_runs(
        tmp_path: Path) -> None:
    """Two nodes, each a ledger file and a real peer on 127.0.0.1; the second draws while the first
    one's (fake) trainer runs, with the same draws as the first: the lease has to cross the wire."""
    async with backend(tmp_path) as kit, Ledger.open(tmp_path / "b.sqlite", kit.ledger.spec) as other, \
            Peer.open(PeerConfig(**FAST), kit.ledger, kit.me) as peer_a:  # type: ignore[arg-type]
        b_id = identity(600)
        async with Peer.open(PeerConfig(bootstrap=(peer_a.address,), **FAST), other, b_id) as _:  # type: ignore[arg-type]
            a = _research(kit, kit.ledger, tmp_path / "a", kit.me, 3)
            b = _research(kit, other, tmp_path / "b", b_id, 3)
            a.on_publish = peer_a.announce
            drawn: list[str] = []

            async def meanwhile(device: Device, what: str, cand: Path, parent: Path | None, **_: object) -> RunResult:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + GOSSIP_S
                while not await b.proposing.leases.sync(other, int(NOW_S * 1000)):
                    assert loop.time() < deadline, "a's lease never reached b"
                    await asyncio.sleep(0.05)
                await b.history.sync(other)
                source = (await gitrepo.read_file(kit.repo, kit.baseline, "train.py")).decode()
                drawn.append(b.proposing.propose(DEVICE, source, await b.proposing.proposer()).key)
                return RunResult("crash", "a fake trainer", None, 0, 0, 0, 0.0, 0.0, 0.0, (), "", "", 1.0)

            a.runs.run = meanwhile        # type: ignore[method-assign]
            await a.history.sync(a.ledger)
            await a._experiment(DEVICE, None)
            [running] = {x.key for x in b.proposing.leases.leases}
            assert drawn and drawn[0] != running
            # the same draws without the lease: b would have run a's program
            blind = _research(kit, other, tmp_path / "blind", b_id, 3)
            await blind.history.sync(other)
            source = (await gitrepo.read_file(kit.repo, kit.baseline, "train.py")).decode()
            assert blind.proposing.propose(DEVICE, source, await blind.proposing.proposer()).key == running
