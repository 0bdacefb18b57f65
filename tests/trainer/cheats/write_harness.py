"""Cheat: rewrites the harness's evaluation code before training."""
import sys
from pathlib import Path

import trainer
from trainer import train as genesis

build_model = genesis.build_model

if __name__ == "__main__":
    for path in (Path(trainer.__file__).parent / "evaluate.py", Path("__HARNESS_EVALUATE__")):
        with open(path, "a") as f:  # raises where the harness is read-only or absent
            f.write("\n# pwned\n")
    sys.exit(genesis.main())
