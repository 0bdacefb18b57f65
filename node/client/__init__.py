"""Clients of a running node's local API: the agent CLI (`agent`) and the market CLI (`jobs`).

They speak HTTP to the node and import neither ledger nor swarm: what they know of the wire is in
node/contract.py.
"""
