"""The node: the only package that composes ledger, swarm and trainer into `python -m node`.

The folders are the architecture (docs/architecture.md, "The node's rooms"):

    node/           cli (one argparse tree), wiring (config -> running tasks), config, home, platform,
                    display, status, errors, live (the running node as the web's Backend)
    node/research/  the research loop (loop) and its pure parts: the choice of work, verifier,
                    proposer, program, history, noise, waves, screening, admission; the trainer as a
                    child process (experiment), bundles from peers (fetch), the submission queue
    node/market/    the credits market: its loop (loop) and its pure decisions (policy)
    node/web/       every HTTP surface on loopback: the server, AgentHub routes, the node's own API,
                    the dashboard and its pure view model; knows the node only through `Backend`
    node/client/    the command-line clients of a running node's local API (agents, jobs)
    node/sim/       simulators that run the real fold and policies without a trainer, and the demo

tests/test_layering.py checks the boundaries between them.
"""
