"""The credits market on one node: `loop` reacts to the ledger (offer, accept, run, settle, spot
check); `policy` holds its decisions as pure functions."""
