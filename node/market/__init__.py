"""The credits market on one node: `loop` reacts to the ledger (offer, accept, settle, spot-check
picks); `jobs` is the executor's side (witness a payment, run the job, sign the receipt, replay a
spot check); `policy` holds its decisions as pure functions."""
