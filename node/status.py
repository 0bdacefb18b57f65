"""`python -m node status`: the ledger's state as one JSON object, for agents and scripts.

Reads the home's current swarm (HOME/swarms/current) while a node may be running on it: the
ledger is SQLite in WAL mode, so this reader sees the last committed rows and never blocks the
node's writer. Creates nothing: a home without a swarm is an error line, not a new swarm.

Peers and addresses are not in the ledger: where a node runs on the home (HOME/api.json), they
come from its local API (`GET /api/node/status`, with the operator token of that file), bounded by
a short timeout; otherwise `"running": false` and no peers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from ledger.bodies import UCR_PER_CREDIT, Claim
from ledger.errors import KeyFileError
from ledger.fold import State, leaderboard
from ledger.keys import Identity, node_id_text
from ledger.store import Ledger

from node.config import NodeConfig
from node.contract import API_FILE, MAX_API_FILE_BYTES, NODE_API_PREFIX
from node.home import Layout, current_slug
from node.research.noise import replay_noise, run_to_run_noise
from node.web import views

TOP_N = 10  # leaderboard rows per class
LIVE_TIMEOUT_S = 5.0  # asking a running node for its peers; a busy node may answer late


async def _live(home: Path) -> dict[str, Any] | None:
    """The running node's own snapshot (peers, address, workers), or None where none answers."""
    try:
        api = json.loads((home / API_FILE).read_bytes()[:MAX_API_FILE_BYTES])
        url, token = str(api["url"]), str(api["token"])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=LIVE_TIMEOUT_S)) as session:
            async with session.get(f"{url}{NODE_API_PREFIX}/status",
                                   headers={"Authorization": f"Bearer {token}"}) as answer:
                body = await answer.json() if answer.status == 200 else None
    except (OSError, ValueError, KeyError, TypeError, aiohttp.ClientError, TimeoutError):
        return None  # no node, a stale api.json, or a node too busy to answer: the ledger still is
    node = body.get("node") if isinstance(body, dict) else None
    return node if isinstance(node, dict) else None


def _identity(path: Any) -> str | None:
    try:
        return Identity.load(path).node_id
    except KeyFileError:
        return None


def _noise(state: State, cls: str) -> dict[str, float | int] | None:
    """What the ledger's re-runs say about the class's noise (node/research/noise.py), beside the spec's."""
    found = replay_noise(state, cls)
    if found is None:
        return None
    return {"sigma_bpb": found.sigma_bpb, "tolerance_bpb": found.tolerance_bpb, "dof": found.dof,
            "dropped": found.dropped}


async def _run_to_run(ledger: Ledger, cls: str) -> dict[str, float | int] | None:
    """The spread of the genesis commit's runs with different data seeds (the creator's calibration)."""
    spec, values, seeds = ledger.spec.spec, [], set()
    for claim_id, info in ledger.state.claims.items():
        if info.commit != spec.baseline_commit or info.platform_class != cls or info.claimed is None:
            continue
        entry = await ledger.get(claim_id)
        if entry is not None and isinstance(entry.body, Claim) and entry.body.seed not in seeds:
            seeds.add(entry.body.seed)
            values.append(info.claimed)
    found = run_to_run_noise(values)
    if found is None:
        return None
    return {"sigma_bpb": found.sigma_bpb, "tolerance_bpb": found.tolerance_bpb, "runs": found.samples}


async def collect(config: NodeConfig) -> dict[str, Any]:
    layout = Layout(config.home)
    slug = current_slug(layout)
    async with Ledger.open(layout.ledger(slug)) as ledger:
        state, signed = ledger.state, ledger.spec
        spec = signed.spec
        classes: dict[str, Any] = {}
        for cls in spec.platform_classes:
            classes[cls] = {
                **views.class_summary(state, cls),
                "measured_replay_noise": _noise(state, cls),
                "measured_run_to_run_noise": await _run_to_run(ledger, cls),
                "leaderboard": [{"claim": cid.hex(), "commit": state.claims[cid].commit.hex(), "val_bpb": value}
                                for cid, value in leaderboard(state, cls)[:TOP_N]],
            }
        return {
            "home": str(config.home),
            "swarm": slug,
            "swarm_id": signed.swarm_id.hex(),
            "entries": await ledger.count(),
            "identities": {"research": _identity(layout.research_key), "verifier": _identity(layout.verifier_key)},
            "spec": {"name": spec.name, "time_budget_s": spec.time_budget_s, "platform_classes": spec.platform_classes,
                     "quorum": spec.quorum, "verifiers": [node_id_text(v) for v in spec.verifiers],
                     "baseline_commit": spec.baseline_commit.hex(), "record_ucr_per_bpb": spec.record_ucr_per_bpb,
                     "verify_ucr": spec.verify_ucr},
            "classes": classes,
            "records": [{"platform_class": r.platform_class, "n": r.n, "claim": r.claim.hex(), "commit": r.commit.hex(),
                         "author": node_id_text(r.author), "val_bpb": r.value, "prev_val_bpb": r.prev,
                         **views.record_evidence(r)}
                        for r in state.records],
            "balances": {node_id_text(k): {"ucr": v, "credits": v / UCR_PER_CREDIT}
                         for k, v in sorted(state.balances.items()) if v},
            "total_minted_ucr": state.total_minted_ucr,
            "ledger": str(layout.ledger(slug)),
            **_live_fields(await _live(config.home)),
        }


def _live_fields(node: dict[str, Any] | None) -> dict[str, Any]:
    if node is None:
        return {"running": False, "peers": 0, "peer_address": None, "connected": []}
    found = node.get("peers")
    peers: list[Any] = found if isinstance(found, list) else []
    return {"running": True, "peers": len(peers), "peer_address": node.get("address"),
            "connected": [p.get("node") for p in peers if isinstance(p, dict)]}
