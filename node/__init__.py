"""The node: the only package that composes ledger, swarm and trainer into `python -m node`.

So far a solo research loop on this machine (docs/node.md): config and home (config, home), the
workers (platform, node), the loop (research) with its pure parts (verifier, program, proposer,
history), the trainer as a child process (experiment), and the terminal (display, status).
Peers, the agent API and the market come next (issue 5).
"""
