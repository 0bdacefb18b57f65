"""Simulated swarms (no trainer, no network, no clock): the real fold, verifier and proposer on
numbers, and the demo, which starts real node processes on loopback."""
