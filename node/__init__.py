"""The node: the only package that composes ledger, swarm and trainer into `python -m node`."""
