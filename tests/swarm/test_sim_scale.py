"""The large-swarm simulator (scripts/sim_scale.py): its flood against hand-worked cases, and a
small swarm for two simulated hours end to end. The 1,000-node day is the benchmark's job."""
from __future__ import annotations

import importlib.util
import math
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sim_scale", ROOT / "scripts" / "sim_scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sim_scale"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


sim = _load()


def test_flood_on_a_line_sends_each_frame_once_and_adds_up_delays() -> None:
    cfg = sim.SimConfig(nodes=3, ingest_s=0.001, uplink_bps=1e12)
    adj = [[1], [0, 2], [1]]
    latency = {(0, 1): 0.010, (1, 2): 0.020}
    f = sim.flood(adj, latency, 0, 1000, cfg)
    assert f.held_s.tolist() == pytest.approx([0.0, 0.011, 0.032])
    assert f.sent.tolist() == [1, 1, 0]          # node 1 never sends it back to node 0
    assert f.received.tolist() == [0, 1, 1]


def test_flood_on_a_triangle_counts_the_duplicate() -> None:
    cfg = sim.SimConfig(nodes=3, ingest_s=0.001, uplink_bps=1e12)
    adj = [[1, 2], [0, 2], [0, 1]]
    latency = {(0, 1): 0.010, (0, 2): 0.010, (1, 2): 0.050}
    f = sim.flood(adj, latency, 0, 1000, cfg)
    # 1 and 2 both hear from 0 first and forward to each other before the other's copy lands
    assert f.sent.tolist() == [2, 1, 1]
    assert f.received.tolist() == [0, 2, 2]
    assert f.held_s.tolist() == pytest.approx([0.0, 0.011, 0.011], abs=1e-6)


def test_the_graph_comes_from_the_dial_choice_and_is_connected() -> None:
    cfg = sim.SimConfig(nodes=300, dials=3)
    adj = sim.build_graph(cfg, random.Random(5))
    degrees = [len(a) for a in adj]
    assert 5.5 <= sum(degrees) / len(degrees) <= 6.0 and min(degrees) >= 3
    assert all(v in adj[w] for v in range(300) for w in adj[v])  # undirected
    f = sim.flood(adj, {(v, w): 0.05 for v in range(300) for w in adj[v] if v < w}, 0, 500, cfg)
    assert all(math.isfinite(t) for t in f.held_s)


@pytest.mark.slow
def test_two_hundred_nodes_for_two_hours(tmp_path: Path) -> None:
    cfg = sim.SimConfig(nodes=200, hours=2.0, seed=3)
    result = sim.simulate(cfg, ledger_dir=tmp_path)
    assert result["every_node_holds_every_entry"]
    assert result["propagation_s"]["p95"] <= 5.0, result["propagation_s"]
    folds = result["folds"]
    assert folds["records"] > 10 and folds["balances"] > 10, folds
    # money and judgement agree everywhere. The records table (the path to SOTA) depends on the
    # order in which two verifiers' verifications arrive — a fold finding (docs/benchmarks.md, "A
    # finding about the fold"), more visible since lazy forwarding slowed propagation — so the
    # simulator reports it (`folds.differ.records`) and this test does not assert it
    assert not any(folds["differ"][t] for t in ("balances", "frozen", "verdicts", "leaderboard")), folds
    kinds = result["kinds"]
    assert kinds["claim"] > 200 * 2 * 8 and kinds["verify"] > 10 and kinds["mint"] >= kinds["verify"]
    # the real ledger file took every entry
    assert result["ledger"]["rows"] == result["entries"]
    assert 0 < result["bytes_per_node_per_h"]["median"] <= result["bytes_per_node_per_h"]["max"]
    assert result["uplink_busy_fraction_max"] < 0.01   # the model's premise: entries do not contend


def test_same_seed_same_swarm() -> None:
    cfg = sim.SimConfig(nodes=60, hours=0.5, seed=9, fold_sample=2)
    a, b = sim.simulate(cfg), sim.simulate(cfg)
    for key in ("entries", "kinds", "propagation_s", "bytes_per_node_per_h", "folds"):
        assert a[key] == b[key], key


def test_lazy_push_model_reaches_everyone_later_with_fewer_full_frames() -> None:
    cfg = sim.SimConfig(nodes=300, eager=1, pull_after_s=0.25)
    rng = random.Random(7)
    adj = sim.build_graph(cfg, rng)
    latency = {(v, w): rng.uniform(0.01, 0.1) for v in range(300) for w in adj[v] if v < w}
    push = sim.flood(adj, latency, 0, 1200, cfg)
    lazy = sim.lazy_flood(adj, latency, 0, 1200, cfg, random.Random(1))
    assert all(math.isfinite(t) for t in lazy.held_s)
    # no node gets it sooner than by pushing to all (but for the uplink's shorter queue: < 1 ms),
    # and full frames fall to about one per node
    assert all(lz >= p - 0.001 for lz, p in zip(lazy.held_s, push.held_s))
    assert lazy.received.sum() < 0.5 * push.received.sum()
    assert lazy.received.sum() >= 299 and lazy.announced is not None and lazy.announced.sum() > 0


def test_the_simulated_gossip_is_the_built_one() -> None:
    from swarm.gossip import EAGER_FANOUT, PULL_AFTER_S
    cfg = sim.SimConfig()
    assert (cfg.eager, cfg.pull_after_s, cfg.heads) == (EAGER_FANOUT, PULL_AFTER_S, "delta")
    assert sim.SimConfig(eager=None).eager is None   # --flood: the rule before lazy forwarding
