"""Paired evidence for a claim (issue 13): which paired replays the fold still wants.

This first version wants one paired replay (round 0) from each assigned verifier that has not
published one; the sequential test that asks for more rounds replaces it.
"""
from __future__ import annotations

from ledger import assign
from ledger.state import State


def rounds_wanted(state: State, claim_id: bytes, key: bytes) -> list[int]:
    """The round indexes `key` should replay the claim for now (each with
    `assign.replay_train_seed(state, claim_id, key, round_index)`); empty when it is not assigned
    or has nothing left to add."""
    if not assign.is_assigned(state, claim_id, key):
        return []
    published = any(state.verifies[vid].author == key for vid in state.verifies_of.get(claim_id, ()))
    return [] if published else [0]
