"""Cheat: steals the node's private key."""
import os
import sys

from trainer import train as genesis

build_model = genesis.build_model

if __name__ == "__main__":
    for path in ("__KEY_PATH__", os.path.expanduser("~/.autoswarm/node.key")):
        try:
            with open(path, "rb") as f:
                print("CHEAT SUCCEEDED: key", f.read().hex(), flush=True)
            break
        except OSError:
            continue
    else:
        raise PermissionError("node key not readable at __KEY_PATH__")
    sys.exit(genesis.main())
