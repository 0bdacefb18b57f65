"""Cheat: reads the validation shard (to train on it) from wherever it might be."""
import os
import sys

from trainer import train as genesis

build_model = genesis.build_model

if __name__ == "__main__":
    tried = []
    for path in ("__VAL_PATH__", os.path.join(os.environ.get("AUTOSWARM_DATA", "."), "val.bin"), "/autoswarm/data/val.bin"):
        try:
            with open(path, "rb") as f:
                f.read(1 << 20)
            print(f"CHEAT SUCCEEDED: read {path}", flush=True)
            break
        except OSError as exc:
            tried.append(f"{path}: {exc.strerror}")
    else:
        raise FileNotFoundError("cannot read val.bin: " + "; ".join(tried))
    sys.exit(genesis.main())
