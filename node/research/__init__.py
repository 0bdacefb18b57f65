"""Research: per worker, choose the most valuable work, run it through the trainer, publish it.

`loop` is the only module here with asyncio and IO of its own (with `experiment`, `fetch` and
`submit`); the rest are pure functions of the fold's state, the history and an `rng`, shared
with the simulators in node/sim/.
"""
