"""`python -m node` — until the research loop lands, says honestly what this build can do."""
from __future__ import annotations

import sys

STATUS = """\
autoswarm node — early build.

What works so far:
  python -m ledger --help      signed, hash-chained ledger: create a swarm spec, audit, show, stats
  python -m trainer --help     prepare data, run a sandboxed experiment of trainer/train.py

Not yet: joining a swarm, the research loop, the agent API and the dashboard (issues 4-6).
"""


def main(argv: list[str] | None = None) -> int:
    del argv
    sys.stdout.write(STATUS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
