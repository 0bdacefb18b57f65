"""Claims that cannot be true on their face: refused before anyone spends a replay on them.

Pure: a function of the spec and a claim's body, no state, no clock, so every node refuses the
same claims. A replay costs the verifier as much as the run it checks; a claim of a million steps
on a CPU class costs every verifier a run killed at its wall-clock limit, again and again, while
it stays open. The numbers a claim reports about its own run bound what a replay costs, so a
claim whose numbers no run of its class could produce is refused on sight:

- more steps than the spec's `max_steps` for the class (a limit the swarm's creator set from the
  class's measured steps per second, with a wide margin; a class without one has no limit);
- more training time than the budget allows, beyond the same slack the verifier grants its own
  replays (a run stops at the budget; this catches numbers, not slow machines);
- more steps than its own planned horizon (a timed run stops at the horizon or earlier);
- a result without a single training step, or of a class the swarm does not have.

Checks only what the claim says about itself. Whether its value is real is the verifiers' job.
"""
from __future__ import annotations

from ledger.bodies import Claim
from ledger.spec import SwarmSpec

# A run's training time may pass the budget by a step and timing jitter; a claim beyond
# budget x slack + grace is no run of this swarm's (the same coarse bounds as a verifier's
# own replay fit, node/research/verifier.py).
TRAINING_SLACK = 1.5
TRAINING_GRACE_S = 10.0


def implausible(spec: SwarmSpec, claim: Claim) -> str:
    """Why no run of the claim's class could have produced its numbers; "" when it could."""
    cls = claim.platform_class
    if cls not in spec.platform_classes:
        return f"platform class {cls!r} is not one of this swarm's ({', '.join(spec.platform_classes)})"
    if claim.status == "ok" and claim.num_steps < 1:
        return "a result without a single training step"
    limit = spec.max_steps.get(cls)
    if limit is not None and claim.num_steps > limit:
        return (f"{claim.num_steps} steps cannot fit the {spec.time_budget_s} s budget on {cls} "
                f"(the swarm allows at most {limit})")
    # planned_steps 0: a claim that does not say (failures, older nodes); a replay then uses num_steps
    if 0 < claim.planned_steps < claim.num_steps:
        return f"{claim.num_steps} steps run past the claim's own planned horizon of {claim.planned_steps}"
    allowed_s = spec.time_budget_s * TRAINING_SLACK + TRAINING_GRACE_S
    if claim.training_s > allowed_s:
        return (f"{claim.training_s:.1f} s of training cannot fit the {spec.time_budget_s} s budget "
                f"(at most {allowed_s:.0f} s)")
    return ""
