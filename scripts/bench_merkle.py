"""Merkle proof benchmark: tree heads, proofs and checkpoints; one JSON object per line.

    .venv/bin/python scripts/bench_merkle.py --sizes 100000 1000000 --ledger /tmp/bench/ledger-100k.db

Figures (medians; every figure also lists its runs or its percentiles):
  tree_head       one pass over n synthetic leaves with a Frontier (O(log n) memory): leaves/s
  tree_build      building the Tree of every perfect subtree's hash that proofs are cut from
  inclusion       proof generation per leaf (random leaves), its size, and verification:
                  merkle.verify_inclusion alone, and checkpoint.verify_inclusion (which also checks
                  the proven entry's Ed25519 signature) when --ledger is given
  consistency     proof generation and verification between random m < n
  checkpoint      checkpoint.make_checkpoint of the --ledger file: read every row, hash, sign;
                  checkpoint.prove_entry of one entry of that file (rows read, tree built, one proof)

Synthetic leaves are LEAF_BYTES bytes each, about the size of a ledger row's wire, so hashing
costs what it costs on a real file.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger import checkpoint, merkle  # noqa: E402
from ledger.keys import Identity  # noqa: E402

LEAF_BYTES = 300


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def leaves(n: int) -> list[bytes]:
    pad = b"\x5a" * (LEAF_BYTES - 8)
    return [i.to_bytes(8, "big") + pad for i in range(n)]


def per_call_us(fn: Callable[[], object], calls: int) -> list[float]:
    """Each call timed on its own, in microseconds."""
    out = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def stats_us(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"median_us": round(statistics.median(s), 2), "p10_us": round(s[len(s) // 10], 2),
            "p90_us": round(s[9 * len(s) // 10], 2), "p99_us": round(s[99 * len(s) // 100], 2), "samples": len(s)}


def bench_size(n: int, reps: int, proofs: int, rng: random.Random) -> None:
    data = leaves(n)
    runs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        _, root = merkle.tree_head(data)
        runs.append(time.perf_counter() - t0)
    emit(figure="tree_head", n=n, median_s=round(statistics.median(runs), 4), runs_s=[round(r, 4) for r in runs],
         leaves_per_s=round(n / statistics.median(runs)))

    runs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        tree = merkle.Tree.build(data)
        runs.append(time.perf_counter() - t0)
    assert tree.root() == root
    tree_bytes = sum(len(level) for level in tree.levels)
    emit(figure="tree_build", n=n, median_s=round(statistics.median(runs), 4), runs_s=[round(r, 4) for r in runs],
         tree_mib=round(tree_bytes / 2**20, 1))

    indexes = [rng.randrange(n) for _ in range(proofs)]
    paths = {}
    gen = []
    for i in indexes:
        t0 = time.perf_counter_ns()
        paths[i] = tree.inclusion_proof(i)
        gen.append((time.perf_counter_ns() - t0) / 1000)
    sizes = [len(p) for p in paths.values()]
    encoded = [len(checkpoint.InclusionProof(i, n, data[i], tuple(p)).encode()) - LEAF_BYTES for i, p in paths.items()]
    emit(figure="inclusion_generate", n=n, **stats_us(gen), hashes_max=max(sizes), hashes_median=statistics.median(sizes),
         path_bytes_max=32 * max(sizes), encoded_bytes_without_leaf_max=max(encoded))

    it = iter(indexes * 2)

    def verify_one() -> None:
        i = next(it)
        merkle.verify_inclusion(data[i], i, n, paths[i], root)

    emit(figure="inclusion_verify", n=n, **stats_us(per_call_us(verify_one, len(indexes))))

    pairs = [(rng.randrange(1, n), n) for _ in range(max(100, proofs // 10))]
    cgen, cproofs = [], []
    for m, _ in pairs:
        t0 = time.perf_counter_ns()
        cproofs.append(tree.consistency_proof(m))
        cgen.append((time.perf_counter_ns() - t0) / 1000)
    emit(figure="consistency_generate", n=n, **stats_us(cgen), hashes_max=max(len(p) for p in cproofs))
    roots = {m: tree.root(m) for m, _ in pairs}
    cit = iter(list(zip(pairs, cproofs)))

    def verify_cons() -> None:
        (m, _), path = next(cit)
        merkle.verify_consistency(m, n, path, roots[m], root)

    emit(figure="consistency_verify", n=n, **stats_us(per_call_us(verify_cons, len(pairs))))


def bench_ledger(path: Path, reps: int, proofs: int, rng: random.Random) -> None:
    identity = Identity.generate()
    runs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        signed = checkpoint.make_checkpoint(path, identity, time_ms=int(time.time() * 1000))
        runs.append(time.perf_counter() - t0)
    n = signed.checkpoint.count
    emit(figure="checkpoint_file", file=str(path), entries=n, median_s=round(statistics.median(runs), 4),
         runs_s=[round(r, 4) for r in runs], entries_per_s=round(n / statistics.median(runs)),
         checkpoint_bytes=len(signed.wire))

    t0 = time.perf_counter()
    checkpoint.check_file(path, signed)
    emit(figure="checkpoint_check_file", entries=n, s=round(time.perf_counter() - t0, 4))

    # what `python -m ledger prove FILE --entry ID` costs: read the rows, build the tree, cut one proof
    conn, _, _, _ = checkpoint._open(path, None)
    try:
        entry_id = conn.execute("SELECT id FROM entries WHERE row = ?", (rng.randrange(n) + 1,)).fetchone()[0]
    finally:
        conn.close()
    runs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        proof = checkpoint.prove_entry(path, entry_id)
        runs.append(time.perf_counter() - t0)
    checkpoint.verify_inclusion(signed, proof)
    emit(figure="prove_entry_file", entries=n, median_s=round(statistics.median(runs), 4),
         runs_s=[round(r, 4) for r in runs], hashes=len(proof.path), encoded_bytes=len(proof.encode()))

    # proofs of real entries: the full buyer's check, Merkle path and entry signature
    conn, tree = checkpoint._tree(path, None)
    try:
        rows = [rng.randrange(n) for _ in range(min(proofs, 2000))]
        wires = {i: conn.execute("SELECT wire FROM entries WHERE row = ?", (i + 1,)).fetchone()[0] for i in rows}
    finally:
        conn.close()
    built = [checkpoint.InclusionProof(i, n, wires[i], tuple(tree.inclusion_proof(i))) for i in rows]
    it = iter(built)

    def verify_one() -> None:
        checkpoint.verify_inclusion(signed, next(it))

    emit(figure="inclusion_verify_with_entry_signature", entries=n, **stats_us(per_call_us(verify_one, len(built))),
         encoded_bytes_median=statistics.median(len(p.encode()) for p in built))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--ledger", type=Path, default=None, help="a ledger file to checkpoint (read-only)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--proofs", type=int, default=10_000, help="random proofs generated and verified per size")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    emit(figure="machine", utc=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
         python=platform.python_version(), cpus=os.cpu_count(), load_avg=os.getloadavg(), leaf_bytes=LEAF_BYTES)
    for n in args.sizes:
        bench_size(n, args.reps, args.proofs, rng)
    if args.ledger is not None:
        bench_ledger(args.ledger, args.reps, args.proofs, rng)
    emit(figure="done", load_avg=os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
