"""Cheat: prints a tiny val_bpb in its contract, hoping the runner believes it."""
import builtins
import sys

from trainer import train as genesis

build_model = genesis.build_model


def _print(*args, **kwargs):
    builtins.print(*args, **kwargs)
    if args and args[0] == "---":
        builtins.print("val_bpb: 0.001000", flush=True)


genesis.print = _print  # the genesis module looks `print` up in its own globals first

if __name__ == "__main__":
    sys.exit(genesis.main())
