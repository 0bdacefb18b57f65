"""Research per GPU-hour (issue 16): proposers compared in a simulated swarm. One JSON object per line.

    python scripts/bench_research.py [--hours 8] [--seeds 5] [--target-gain-bpb 0.03] [--only NAME]
                                     [--flood 3000]

Each configuration runs node/sim/simwork.py on the rich landscape (node/sim/richland.py:
interactions between constants, code-level edits as switches; seed noise 0.0014 and evaluation
noise 0.0005 bpb) with 8 GPUs, once per seed. Configurations:
  bandit-8       today's proposer (node/research/proposer.py), one node with 8 GPUs
  tpe-8          Optuna TPE behind the proposer interface (node/research/optimizer.py)
  wave-8         waves of 8 (node/research/waves.py)
  bandit-8x1     8 one-GPU nodes, today's proposer, no leases: a node sees another's program
                 only when its claim is published
  bandit-8x1-leases  the same with leases (node/research/leases.py): running programs are seen at once
  tpe-8x1        8 one-GPU nodes with TPE each, no leases
Lines: {"bench": "research_run"} per (configuration, seed): GPU-hours until the first record whose
true gain over the genesis program reaches --target-gain-bpb (null: never), the true gain at the
end, busy share (GPU time in experiments, baselines and replays over all GPU time), duplicate rate
(experiments whose program was claimed or running anywhere when they started); {"bench":
"research_summary"} per configuration: medians (a run that never reached the target counts as all
its GPU-hours). Then {"bench": "research_flood"} per seed: --flood fake crash claims signed by a
fresh identity (real entries folded by the real fold), naming every edit the proposer would make
next; whether each proposer's output, the counted keys and the trials are unchanged.
"""
from __future__ import annotations

import hashlib
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ledger import fold
from ledger.bodies import Claim
from ledger.entry import sign_entry
from ledger.keys import Identity
from ledger.spec import SwarmSpec
from node.errors import NoProposal
from node.research.history import ClaimRecord, History
from node.research.program import parse_program, summarize
from node.research.proposer import Proposal, propose
from node.research.proposers import make
from node.sim.richland import RICH_TRAIN_PY
from node.sim.simulate import CLASS, Outcome
from node.sim.simwork import Tier, WorkConfig, WorkFigures, genesis_of, simulate_work, true_value
from scripts.benchkit import parse_sim, sim_parser

GPUS = 8
TIER = Tier(CLASS, GPUS, noise_sd_bpb=0.0014, eval_sd_bpb=0.0005)


def configs(hours: float) -> dict[str, WorkConfig]:
    def rich(**kw: Any) -> WorkConfig:
        return WorkConfig(tiers=(TIER,), hours=hours, landscape="rich", **kw)
    return {
        "bandit-8": rich(), "tpe-8": rich(policy="tpe"), "wave-8": rich(policy="wave"),
        "bandit-8x1": rich(machines=GPUS), "bandit-8x1-leases": rich(machines=GPUS, leases=True),
        "tpe-8x1": rich(policy="tpe", machines=GPUS),
    }


def measure(outcome: Outcome, figures: WorkFigures, config: WorkConfig, target_gain_bpb: float) -> dict[str, Any]:
    start = true_value("rich", genesis_of("rich")[1], TIER, config.floor_bpb)
    assert start is not None
    reached = next((t / 3600 for t, row in outcome.record_times
                    if (v := outcome.truth.get(row.claim)) is not None and start - v >= target_gain_bpb), None)
    total_s = GPUS * config.hours * 3600
    busy_s = sum(min(r.end_s, config.hours * 3600) - r.start_s for r in outcome.runs)
    return {"gpu_hours_to_target": None if reached is None else round(reached * GPUS, 2),
            "true_gain_bpb": round(figures.progress_bpb, 5), "records": figures.records,
            "experiments": figures.experiments, "busy_share": round(busy_s / total_s, 3),
            "duplicate_rate": round(figures.duplicates / max(1, figures.proposed), 4)}


def flood_check(seed: int, flood: int) -> dict[str, object]:
    """Honest history (our own claims on the rich landscape), then `flood` fake crash claims."""
    creator = Identity.from_seed(hashlib.sha256(b"bench-research-creator").digest())
    attacker = Identity.from_seed(hashlib.sha256(b"bench-research-attacker-%d" % seed).digest())
    spec = SwarmSpec(name="bench", creator=creator.public_key, created_ms=0, harness_hash=b"h" * 32,
                     dataset_hash=b"d" * 32, tokenizer_hash=b"t" * 32, time_budget_s=300, metric="val_bpb",
                     direction="min", baseline_commit=b"\0" * 20, allowed_files=["train.py"],
                     platform_classes=[CLASS], verifiers=[creator.public_key], quorum=1, noise_bpb={CLASS: 0.002},
                     record_ucr_per_bpb=10**9, verify_ucr=1000)
    state, history, rng = fold.initial(spec), History(), random.Random(seed)
    heads: dict[bytes, tuple[int, bytes | None]] = {}

    def publish(who: Identity, body: Claim, own: bool) -> None:
        seq, prev = heads.get(who.public_key, (0, None))
        entry = sign_entry(who, swarm=state.swarm_id, seq=seq + 1, prev=prev, body=body, time_ms=seq + 1)
        heads[who.public_key] = (entry.seq, entry.id)
        fold.apply(state, entry)
        record = ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, body)
        history.add(record) if own else history._index(record)

    def claim(commit: bytes, parent: bytes | None, value: float | None, summary: str) -> Claim:
        return Claim(commit=commit, parent=parent, platform_class=CLASS, status="ok" if value is not None else "crash",
                     val_bpb=value, num_steps=10, planned_steps=10, seed=0, training_s=1.0, wall_s=1.0,
                     peak_vram_mb=0.0, loss_curve=[], diff_summary=summary, message="", bundle=None)

    genesis = b"\0" * 20
    publish(creator, claim(genesis, None, 1.0, summarize(None, RICH_TRAIN_PY)), True)
    for n in range(20):
        p = propose(RICH_TRAIN_PY, profile="gpu", trials=history.trials(state, CLASS), tried=history.keys, rng=rng)
        publish(creator, claim(hashlib.sha1(b"own-%d" % n).digest(), genesis, 1.0 + rng.gauss(0, 0.002),
                               summarize(RICH_TRAIN_PY, p.source)), True)

    def outputs() -> tuple[object, ...]:
        history.refresh(state)
        trials = history.trials(state, CLASS)
        bandit = make("bandit", genesis_source=RICH_TRAIN_PY, profile="gpu", seed=seed)
        tpe = make("tpe", genesis_source=RICH_TRAIN_PY, profile="gpu", seed=seed)
        for t in trials:   # the optimizer is told what counts: our own and verified claims
            tpe.observe("", {n: new for n, (_, new) in t.changes.items()}, None if t.delta_bpb is None else 1.0)
        return (bandit.propose(RICH_TRAIN_PY, trials=trials, tried=history.keys, rng=random.Random(seed)).key,
                tpe.propose(RICH_TRAIN_PY, trials=trials, tried=history.keys, rng=random.Random(seed)).key,
                frozenset(history.keys), tuple(trials))

    before = outputs()
    # the attacker names what the honest proposer draws next, then everything after it
    targets: list[Proposal] = []
    seen, draw = set(history.keys), random.Random(seed + 1)
    trials = history.trials(state, CLASS)
    while len(targets) < flood:
        try:
            p = propose(RICH_TRAIN_PY, profile="gpu", trials=trials, tried=seen,
                        rng=random.Random(seed) if not targets else draw)
        except NoProposal:
            break
        seen.add(p.key)
        targets.append(p)
    started = time.monotonic()
    for n in range(flood):
        publish(attacker, claim(hashlib.sha1(b"fake-%d-%d" % (seed, n)).digest(), genesis, None,
                                summarize(RICH_TRAIN_PY, targets[n % len(targets)].source)), False)
    after = outputs()
    return {"bench": "research_flood", "seed": seed, "fake_claims": flood,
            "named_next_bandit_edit": before[0] in {p.key for p in targets},
            "bandit_unchanged": before[0] == after[0], "tpe_unchanged": before[1] == after[1],
            "keys_unchanged": before[2] == after[2], "trials_unchanged": before[3] == after[3],
            "flood_s": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = sim_parser(__doc__.splitlines()[0], hours=8.0)
    parser.add_argument("--target-gain-bpb", type=float, default=0.03)
    parser.add_argument("--flood", type=int, default=3000)
    args, chosen = parse_sim(parser, argv, configs)
    if args.flood < 0:
        parser.error("--flood must not be negative")
    for name, config in chosen.items():
        rows: list[dict[str, Any]] = []
        for seed in range(args.seeds):
            started = time.monotonic()
            outcome, figures = simulate_work(config, random.Random(seed))
            row = measure(outcome, figures, config, args.target_gain_bpb)
            rows.append(row)
            print(json.dumps({"bench": "research_run", "config": name, "seed": seed, "hours": config.hours,
                              "gpus": GPUS, **row, "wall_s": round(time.monotonic() - started, 1)}), flush=True)
        gpu_hours = [r["gpu_hours_to_target"] if r["gpu_hours_to_target"] is not None else GPUS * config.hours
                     for r in rows]
        print(json.dumps({
            "bench": "research_summary", "config": name, "seeds": args.seeds, "hours": config.hours, "gpus": GPUS,
            "target_gain_bpb": args.target_gain_bpb,
            "median_gpu_hours_to_target": round(statistics.median(gpu_hours), 2),
            "reached": f"{sum(r['gpu_hours_to_target'] is not None for r in rows)}/{len(rows)}",
            "median_true_gain_bpb": round(statistics.median(r["true_gain_bpb"] for r in rows), 5),
            "median_busy_share": round(statistics.median(r["busy_share"] for r in rows), 3),
            "median_duplicate_rate": round(statistics.median(r["duplicate_rate"] for r in rows), 4),
        }), flush=True)
    if args.flood and args.only is None:
        for seed in range(args.seeds):
            print(json.dumps(flood_check(seed, args.flood)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
