"""How fast this CPU trains right now, for the demo's budget: a short torch workload the size of a
CPU-profile training step, timed against the same workload on the reference machine.

The demo's swarm has a time budget like any other (the protocol's), and at the demo's ~18 CPU
steps its agent's learning-rate edit gains clearly; at 3 steps (what 5 s gave on 2 cores shared at
load 5, CI beside other work, before the CPU profile ran on one thread) it does not, and replays on
other seeds refuted the claim. So the demo scales its budget with the probe: 8 s on a machine at
least as fast as the reference (the 2-core CI VM, idle), proportionally more on a slower or busier
one.
"""
from __future__ import annotations

import statistics
import time

from trainer.constants import PROFILES

# The workload: a two-layer MLP's forward and backward on a batch the size of the CPU profile's
# (16 sequences of 128 tokens, model width 64), REPEATS times per trial, on the profile's threads.
ROWS, WIDTH, HIDDEN, REPEATS, TRIALS = 16 * 128, 64, 256, 12, 5
# One trial's median seconds on the reference machine, idle: 56-63 ms in five runs (2026-12-07).
REFERENCE_TRIAL_S = 0.060
# What the demo's edit needs there: ~18 CPU steps, 2 untimed and 16 of ~0.5 s on the profile's one
# thread (docs/benchmarks.md, "Trainer: one CPU thread").
REFERENCE_BUDGET_S = 8
MAX_BUDGET_S = 60


def trial_seconds() -> float:
    """The median seconds of TRIALS timed runs of the workload (imports torch: seconds, once)."""
    import torch

    torch.set_num_threads(PROFILES["cpu"].threads or torch.get_num_threads())  # as the trainer's sandbox runs
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, WIDTH, generator=gen)
    w1 = torch.randn(WIDTH, HIDDEN, generator=gen).requires_grad_()
    w2 = torch.randn(HIDDEN, WIDTH, generator=gen).requires_grad_()

    def once() -> None:
        for _ in range(REPEATS):
            loss = ((x @ w1).relu() @ w2).square().mean()
            loss.backward()
        w1.grad = w2.grad = None

    once()  # warm the allocator and the kernels
    times = []
    for _ in range(TRIALS):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def budget_for(trial_s: float) -> int:
    """The demo's training seconds per experiment for a machine whose trial took `trial_s`."""
    slower = max(1.0, trial_s / REFERENCE_TRIAL_S)
    return min(MAX_BUDGET_S, round(REFERENCE_BUDGET_S * slower))
