"""A new user's first quarter hour (issue 18): `python -m node` in a fresh home, as a real process.

    python scripts/bench_first_hour.py [--limit-s 1800] [--keep DIR] [-- extra node args]

Starts `python -m node` (the README's first command, no options: the default budget and
profile) with a fresh temporary home, reads its output as it comes, and prints one JSON line:
seconds from the start to its first output line, to its first progress line (a phase with
time left), to the baseline's claim, and to the node's first own experiment's claim; then
stops it with SIGINT and checks that claim in the ledger (`python -m node status`, the real
CLI). A figure is null when it did not happen within --limit-s. Also the load average and the
machine, so a figure is read with the load it was measured at.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STOP_S = 60.0          # SIGINT to exit: the node kills its trainer and closes the ledger
STATUS_S = 120.0       # `python -m node status` on a stopped node's home

# what the node prints (node/research/loop.py, node/research/runs.py), one timestamped line each
PROGRESS = re.compile(r"\] (baseline|calibration|experiment|verify).*(about \d+ s left)")
BASELINE = re.compile(r"\] baseline val_bpb|\] baseline (crash|timeout|rejected)")
EXPERIMENT = re.compile(r"\] experiment 1: ")


def _reader(stream: object, lines: queue.Queue[tuple[float, str] | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put((time.monotonic(), line.rstrip("\n")))
    lines.put(None)


def measure(home: Path, limit_s: float, extra: list[str]) -> dict[str, object]:
    env = {**os.environ, "AUTOSWARM_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "node", *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    seen: dict[str, float | None] = {"first_line_s": None, "first_progress_s": None, "baseline_claim_s": None,
                                     "first_experiment_claim_s": None}
    tail: list[str] = []
    try:
        while time.monotonic() - start < limit_s and seen["first_experiment_claim_s"] is None:
            try:
                item = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            if item is None:
                break   # the node exited
            at, text = item
            tail = (tail + [text])[-20:]
            since = round(at - start, 1)
            for name, hit in (("first_line_s", True), ("first_progress_s", PROGRESS.search(text)),
                              ("baseline_claim_s", BASELINE.search(text)),
                              ("first_experiment_claim_s", EXPERIMENT.search(text))):
                if hit and seen[name] is None:
                    seen[name] = since
                    print(f"bench_first_hour: {name} {since} s: {text[:160]}", file=sys.stderr, flush=True)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    status = subprocess.run([sys.executable, "-m", "node", "status"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=STATUS_S)
    return {**seen, "exit_code": proc.returncode, "status_ok": status.returncode == 0,
            "status_claims": _claims(status.stdout), "tail": tail[-5:] if seen["first_experiment_claim_s"] is None
            else []}


def _claims(text: str) -> int | None:
    """All claims in the ledger, as `python -m node status` counts them per class."""
    try:
        classes = json.loads(text)["classes"]
        return sum(int(c["claims"]) for c in classes.values())
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit-s", type=float, default=1800.0, help="give up after this long (default 1800)")
    p.add_argument("--keep", type=Path, default=None, help="use this (new) folder as the home and keep it")
    p.add_argument("extra", nargs="*", help="more arguments for python -m node (after --)")
    args = p.parse_args(argv)
    home = args.keep or Path(tempfile.mkdtemp(prefix="autoswarm-first-hour-")) / "home"
    if home.exists() and any(home.iterdir()):
        p.error(f"{home} is not empty: the benchmark needs a fresh home")
    load_before = os.getloadavg()
    try:
        figures = measure(home, args.limit_s, args.extra)
    finally:
        if args.keep is None:
            shutil.rmtree(home.parent, ignore_errors=True)
    print(json.dumps({"bench": "first_hour", **figures, "limit_s": args.limit_s, "args": args.extra,
                      "load_avg_before": [round(x, 2) for x in load_before],
                      "load_avg_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
                      "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())},
                     sort_keys=True))
    return 0 if figures["first_experiment_claim_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
