"""The peer: aiohttp connections, gossip and anti-entropy of feeds, bundle transfer, limits.

May import `ledger`; never `node` or `trainer`.
"""
