"""The one per-class summary and the one "best record of a class" (node/web/views.py), over a real
ledger: what `python -m node status`, the node's API and the dashboard all show."""
from __future__ import annotations

from pathlib import Path

from ledger.bodies import Verify
from node.web import views
from tests.node.hubkit import CLASS, backend


async def test_class_summary_follows_claims_verifications_and_records(tmp_path: Path) -> None:
    async with backend(tmp_path) as kit:
        state = kit.ledger.state
        assert views.best_record(state, CLASS) is None
        assert views.best_record(state, "no-such-class") is None
        summary = views.class_summary(state, CLASS)
        assert summary == {"best_val_bpb": None, "best_commit": None, "best_claim": None, "records": 0,
                           "claims": 1, "claims_ok": 1, "verified": 0, "noise_bpb": 0.01}

        baseline_claim = next(iter(kit.history.claims.values()))
        await kit.publish_as(kit.verifier, Verify(claim=baseline_claim.id, commit=kit.baseline, platform_class=CLASS,
                                                  status="ok", val_bpb=1.5, num_steps=10, seed=0, training_s=1.0))
        state = kit.ledger.state
        best = views.best_record(state, CLASS)
        summary = views.class_summary(state, CLASS)
        assert best is not None and best.commit == kit.baseline
        assert summary["best_commit"] == kit.baseline.hex() and summary["best_claim"] == baseline_claim.id.hex()
        assert summary["records"] == 1 and summary["verified"] == 1 and summary["best_val_bpb"] == state.best[CLASS]
        # the dashboard's table says the same numbers
        row = views.best_table(state)["rows"][0]
        assert [c["text"] for c in row][:2] == [CLASS, views.bpb(summary["best_val_bpb"])]
