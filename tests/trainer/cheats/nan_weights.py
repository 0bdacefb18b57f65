"""Cheat (or a bug): skips the NaN check and saves NaN weights anyway."""
import math
import sys
import types

from trainer import train as genesis

build_model = genesis.build_model
genesis.EMBEDDING_LR = float("nan")
genesis.math = types.SimpleNamespace(**{**vars(math), "isfinite": lambda x: True})

if __name__ == "__main__":
    sys.exit(genesis.main())
