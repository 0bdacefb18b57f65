"""When two verify entries provably disagree: the evidence a later dispute or referee step starts from.

Pure: entries in, a verdict out; no state, no clock, no keys beyond what the entries carry.

Theory of operation. A verify entry carries `outputs`, a sha256 commitment its replay made to what
the evaluation produced (trainer/outputs.py: a Merkle root over each evaluation batch's summed
loss and byte count, bound to the eval seed). Two signed verify entries of the same replay (same
claim, commit, platform class, steps and training seed), both ok, both committed to their
outputs, and with values apart by more than the class's tolerance, are a disagreement that anyone
holding the two entries can check: the signatures bind each author to its number and to its
outputs, and neither can later reveal other outputs than those it committed to. At least one of
the two is wrong beyond noise, and the entries alone show it. Usually the commitments differ; if
they are equal, the outputs fix the value (to within the quantum), so one author reported a value
its own outputs do not give.

What the disagreement does not say is who is wrong. That is the referee's step, not built yet:
ask both authors to open their commitments (the eval seed and the per-batch leaves, each leaf
checked against the digest with trainer/outputs.check_proof), bisect to a batch where they differ,
and recompute that one batch. The leaves are comparable batch by batch only when both replays
scored the same rows, i.e. used the same eval seed; today each verifier draws its own, so the
referee must recompute whole evaluations until replay eval seeds come from a value that both
replays share and neither author chose. Verifies signed before the field existed (outputs None) never
provably disagree: they committed to nothing.

The tolerance the fold uses between a replay and its quorum is `ledger.facts.tolerance(state, cls)`
(the spec's trust_tolerance_bpb, else its noise_bpb); pass that.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ledger.bodies import HASH_BYTES, Verify
from ledger.entry import Entry
from ledger.errors import LedgerError

_SAME_REPLAY = ("claim", "commit", "platform_class", "num_steps", "seed")


class BadTolerance(LedgerError, ValueError):
    """A tolerance that is negative or not a finite number."""


@dataclass(frozen=True, slots=True)
class Disagreement:
    """Two committed verifies of one replay whose values are apart beyond tolerance.

    `first` and `second` are the two entries' ids, the smaller first, so the same pair gives the same
    Disagreement whichever order it was found in.
    """

    claim: bytes
    first: bytes
    second: bytes
    first_author: bytes
    second_author: bytes
    gap_bpb: float        # |first's val_bpb - second's|
    tolerance_bpb: float  # what it was judged against
    # Equal commitments but values far apart: the outputs fix the value (to within the quantum), so
    # one author reported a value its own outputs do not give; opening them settles it, no recompute.
    same_outputs: bool = False


def why_not(a: Entry, b: Entry, tolerance_bpb: float) -> str | None:
    """Why entries `a` and `b` do not provably disagree, or None when they do."""
    verdict = _judge(a, b, tolerance_bpb)
    return verdict if isinstance(verdict, str) else None


def disagreement(a: Entry, b: Entry, tolerance_bpb: float) -> Disagreement | None:
    """The Disagreement between verify entries `a` and `b`, or None when the entries do not prove one.

    The order of `a` and `b` does not matter. Raises BadTolerance for a negative or non-finite
    tolerance; any other pair of entries (other kinds, other claims, failed replays) is simply
    not a disagreement.
    """
    verdict = _judge(a, b, tolerance_bpb)
    return verdict if isinstance(verdict, Disagreement) else None


def _judge(a: Entry, b: Entry, tolerance_bpb: float) -> Disagreement | str:
    if not (math.isfinite(tolerance_bpb) and tolerance_bpb >= 0):
        raise BadTolerance(f"tolerance must be a finite number >= 0, got {tolerance_bpb}")
    if a.id == b.id:
        return "the same entry"
    if a.id > b.id:
        a, b = b, a  # one verdict, and one Disagreement, whichever order the pair was found in
    va, vb = a.body, b.body
    if not isinstance(va, Verify) or not isinstance(vb, Verify):
        return f"not two verify entries ({a.kind}, {b.kind})"  # a and b in id order: one message per pair
    if a.swarm != b.swarm:
        return "entries of different swarms"
    for name in _SAME_REPLAY:
        if getattr(va, name) != getattr(vb, name):
            return f"not the same replay: {name} differs"
    if va.val_bpb is None or vb.val_bpb is None:
        return "a replay that failed has no value to disagree with"
    if va.outputs is None or vb.outputs is None:
        return "a verify without an outputs commitment committed to nothing"
    gap = abs(va.val_bpb - vb.val_bpb)
    if not gap > tolerance_bpb:
        return f"values within tolerance ({gap:.6f} <= {tolerance_bpb:.6f} bpb)"
    return Disagreement(claim=va.claim, first=a.id, second=b.id, first_author=a.author, second_author=b.author,
                        gap_bpb=gap, tolerance_bpb=tolerance_bpb, same_outputs=va.outputs == vb.outputs)


def outputs_from_hex(text: object) -> bytes | None:
    """The trainer result's `outputs` (64 hex digits) as the bytes a Verify carries; None if absent
    or malformed (a result without a commitment is still a result, it just proves less)."""
    if not isinstance(text, str) or len(text) != 2 * HASH_BYTES:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None
