"""Cheat: writes a file outside its work folder."""
import sys

from trainer import train as genesis

build_model = genesis.build_model

if __name__ == "__main__":
    with open("__OUTSIDE_PATH__", "w") as f:
        f.write("escaped")
    sys.exit(genesis.main())
