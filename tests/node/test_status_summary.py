"""`python -m node status` (node/status.py) shows the one per-class summary of node/web/views.py,
read from a real home: a real ledger file named by HOME/swarms/current."""
from __future__ import annotations

from pathlib import Path

from ledger.bodies import KINDS, Verify
from ledger.store import Ledger
from node import status
from node.config import load_config
from node.configfile import ensure_config_file
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


async def test_status_shows_the_running_nodes_peers_and_the_ledger_path(tmp_path: Path) -> None:
    """With a node serving on the home (its api.json), status asks it for its peers (they are not
    in the ledger); with none, it says so instead of reporting 0 as if it knew."""
    from node.web.server import serve_api

    async with backend(tmp_path / "kit") as kit:
        home = kit.home
        layout = Layout(home)
        layout.swarm("test").mkdir(parents=True, exist_ok=True)
        (layout.swarms / CURRENT_FILE).write_text("test\n")
        ensure_config_file(home)
        async with Ledger.open(layout.ledger("test"), kit.ledger.spec):
            pass
        config = load_config(["--home", str(home), "status"], env={})
        alone = await status.collect(config)
        assert (alone["running"], alone["peers"], alone["connected"]) == (False, 0, [])
        assert alone["ledger"] == str(layout.ledger("test"))
        peers = [{"node": "as-peer-one", "received": 3}, {"node": "as-peer-two", "received": 1}]
        kit.snapshot = lambda: {"workers": [], "peers": peers, "queued": 0, "address": "127.0.0.1:7400"}  # type: ignore[method-assign]
        async with serve_api("127.0.0.1:0", home, kit, "127.0.0.1:7400"):
            live = await status.collect(config)
        assert (live["running"], live["peers"], live["peer_address"]) == (True, 2, "127.0.0.1:7400")
        assert live["connected"] == ["as-peer-one", "as-peer-two"]
