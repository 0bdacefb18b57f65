"""scripts/bench_hostile.py at a small size: every attack against a default peer on loopback
leaves honest dials accepted (>= 95%: all of them at this size) and honest entries delivered."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_hostile", ROOT / "scripts" / "bench_hostile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_hostile"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _load()
SMALL = bench.Scale(attackers=16, honest=4, entries=3, flood_entries=1200, addrs=1000, disk_keys=12, disk_posts=480, honest_big=40,
                     flood_per_key=60, flood_tries=2)


@pytest.mark.slow
@pytest.mark.parametrize("attack", sorted(bench.ATTACKS))
async def test_attack_leaves_honest_peers_served(attack: str) -> None:
    result = await bench.run_attack(attack, SMALL)
    assert result["honest_accept_share"] >= 0.95, result
    assert result["honest_entries_delivered"] == 1.0, result
    if attack == "slots":
        assert result["attacker_connections"] <= 4   # the per-address limit
    if attack == "plain_get":
        assert result["answered"] == {400: SMALL.attackers * 10}
    if attack == "pending":
        assert result["attacker_banned"], result
    if attack == "disk":   # 40 posts per fresh key, about 4 MB: each key keeps its 256 KiB, no more
        assert result["within_quota"] and result["stamped_honest_delivered"] == 1.0, result
        assert result["attacker_bytes_stored"] <= result["attacker_keys"] * result["per_key_quota_bytes"], result
        assert result["flood_sent"] == result["flood_posts"] and result["refused"].get("quota_author", 0) > 0, result
    if attack == "flood":   # banned on every try, within seconds, then refused by key and by address
        assert result["banned_tries"] == SMALL.flood_tries and result["ban_s_median"] < 15, result
        assert result["refused_by_key"] and result["refused_by_addr"], result
    if attack == "eclipse":
        assert result["attacker_in_table"] <= 64 and result["attacker_dial_share"] <= 0.2, result
