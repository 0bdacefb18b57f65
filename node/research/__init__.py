"""Research: per worker, choose the most valuable work, run it through the trainer, publish it.

`loop` is the worker (asyncio and IO), with `runs` (a run through the sandboxed trainer and its
claim), `replay` (verifying others' claims), `experiment` (the trainer as a child process),
`fetch` (bundles from peers) and `submit` (the submission queue). The rest are pure functions of
the fold's state, the history and an `rng`, shared with the simulators in node/sim/: `work` (the
choice of work), `verifier`, `proposer`, `program`, `history`, `noise`, `waves`, `screening`,
`admission`, and `limits` (the ledger's entry sizes).
"""
