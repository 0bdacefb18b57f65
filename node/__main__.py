"""`python -m node`: see node/cli.py."""
from __future__ import annotations

from node.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
