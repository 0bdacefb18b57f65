"""Issue 12's identity attacks against a real default node (scripts/attacks_live.py): free keys
get no trust, no credits and no records, and the victim's ledger audits clean afterwards."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.scriptkit import load_script

LIVE = load_script("attacks_live")


@pytest.mark.slow
async def test_free_keys_get_nothing_from_a_default_node(tmp_path: Path) -> None:
    results = await LIVE.run_all(tmp_path, emit=lambda result: None)
    attacks = [r for r in results if "attack" in r]
    assert [r["attack"] for r in attacks] == [a.__name__ for a in LIVE.ATTACKS]
    for result in attacks:
        assert not result["succeeded"], result
        assert result["attacker_ucr"] == 0 and result["attacker_records"] == 0 and result["admitted"] == []
    assert results[-1] == {"check": "victim_audit", "ok": True}
