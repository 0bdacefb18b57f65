"""Every HTTP surface the node serves on loopback: AgentHub's routes, the node's own JSON API and
the dashboard, in one aiohttp app (`server`).

    server          the app, HOME/api.json (the operator token), the Host/Origin middleware
    common          what every JSON route shares: errors, `guard`, bodies, limits, prefixes, untrusted
    agents          who may call: the operator and the agents it let in (`python -m node agent-key`)
    agenthub        AgentHub's routes (/api/register, /api/git/..., /api/channels/...)
    hubviews        AgentHub's commits: the known commits (baseline, claimed, queued) and their JSON
    posts           the post index and HOME/agenthub.json
    nodeapi         the node's own routes (/api/node/...): nodeapi_base (shared), nodeapi_research,
                    nodeapi_notes, nodeapi_market
    dashboard       the live dashboard's IO; views (pure view model, shared with `node status`),
                    pages (pure HTML), charts (pure SVG)
    backend         the Protocol through which all of them see the node

Knows the running node only through `backend.Backend`: nothing here imports the research loop or
the peer. The wire constants shared with node/client/ are in node/contract.py.
"""
