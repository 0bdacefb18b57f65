"""Every HTTP surface the node serves on loopback: AgentHub's routes, the node's own JSON API and
the dashboard, in one aiohttp app (`server`).

Knows the running node only through `backend.Backend`: nothing here imports the research loop, the
market's loop or the peer.
"""
