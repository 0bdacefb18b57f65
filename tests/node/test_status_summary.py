"""`python -m node status` (node/status.py) shows the one per-class summary of node/web/views.py,
read from a real home: a real ledger file named by HOME/swarms/current."""
from __future__ import annotations

from pathlib import Path

from ledger.bodies import KINDS, Verify
from ledger.store import Ledger
from node import status
from node.config import ensure_config_file, load_config
from node.home import CURRENT_FILE, Layout
from node.web import views
from tests.node.hubkit import CLASS, backend


async def test_status_classes_are_the_shared_summary(tmp_path: Path) -> None:
    home = tmp_path / "home"
    layout = Layout(home)
    layout.swarm("test").mkdir(parents=True)
    (layout.swarms / CURRENT_FILE).write_text("test\n")
    ensure_config_file(home)  # the defaults `python -m node` writes on its first run
    async with backend(tmp_path / "kit") as kit:
        claim = next(iter(kit.history.claims.values()))
        await kit.publish_as(kit.verifier, Verify(claim=claim.id, commit=kit.baseline, platform_class=CLASS,
                                                  status="ok", val_bpb=1.5, num_steps=10, seed=0, training_s=1.0))
        async with Ledger.open(layout.ledger("test"), kit.ledger.spec) as copy:
            for _row, entry in await kit.ledger.entries_since(0, sorted(KINDS), 1000):
                await copy.append(entry)
            expected = views.class_summary(copy.state, CLASS)
    found = await status.collect(load_config(["--home", str(home), "status"], env={}))
    shown = found["classes"][CLASS]
    assert {k: shown[k] for k in expected} == expected
    assert expected["records"] == 1 and expected["best_commit"] == kit.baseline.hex()
    assert shown["leaderboard"][0]["commit"] == kit.baseline.hex()
