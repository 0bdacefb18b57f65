"""The simulator's noise model and the paired verifier's choices (issue 13).

Pure like node/sim/simulate.py, which calls it. Knows nothing of the fold's rules beyond what
ledger/evidence.py exports: which rounds a verifier should run (`rounds_wanted`) and with which
seed (`ledger.assign.replay_train_seed`).

Theory of operation. A run of program X with training seed s measures

    true(X) + sd_train x (sqrt(rho) x Z(s) + sqrt(1 - rho) x Z(X, s)) + sd_eval x N(0, 1)

where Z(s) and Z(X, s) are standard normals fixed by a hash of (swarm salt, s) and (swarm salt, X,
s): the same program on the same seed trains to the same weights, as on the real trainer, so a
replay with the claimant's seed repeats its training luck and only evaluation noise is new. Two
programs on one seed share the part rho of the training noise (same initialisation, same data
order), which a paired difference cancels. The evaluation noise is drawn afresh for every run.

Replay modes: "independent" (the old simulator: a replay is a new independent run, one draw of
the run-to-run sd, kept so that older figures reproduce), "claim_seed" (today's verifier: the
claim's own seed, so the claimant's training draw is shared) and "paired" (the new verifier: the
rounds ledger/evidence.py asks for, candidate and parent on the seed the seal draws, the parent's
run cached per (verifier, parent, seed)).
"""
from __future__ import annotations

import hashlib
import math
import random
import struct

from node.research import verifier

REPLAY_MODES = ("independent", "claim_seed", "paired")


def standard_normal(*parts: bytes) -> float:
    """A standard normal fixed by `parts` (Box-Muller on two hashed uniforms)."""
    digest = hashlib.sha256(b"\x00".join(parts)).digest()
    a, b = struct.unpack(">QQ", digest[:16])
    u1 = (a + 1) / 2.0**64 * (1 - 2.0**-53)
    u2 = b / 2.0**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)


def training_noise(salt: bytes, commit: bytes, seed: int, sd_train: float, rho: float) -> float:
    """The training draw of `commit` on `seed`: the part rho shared by every program on that seed."""
    s = seed.to_bytes(8, "big", signed=True)
    shared = standard_normal(b"seed", salt, s)
    own = standard_normal(b"program", salt, commit, s)
    return sd_train * (math.sqrt(rho) * shared + math.sqrt(1.0 - rho) * own)


def measure(true_bpb: float, salt: bytes, commit: bytes, seed: int, *, sd_train: float, sd_eval: float,
            rho: float, rng: random.Random) -> float:
    noise = training_noise(salt, commit, seed, sd_train, rho) + (rng.gauss(0.0, sd_eval) if sd_eval > 0 else 0.0)
    return max(1e-6, true_bpb + noise)


# the paired verifier's choices are the node's own (node/research/verifier.py)
paired_queue = verifier.verification_queue
paired_settled = verifier.settled
