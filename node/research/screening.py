"""Two-tier screening: explore on a cheaper platform class, confirm its winners on the reference class.

Pure functions of the fold's state and the history index: no IO, no clock.

Theory of operation. Every platform class has its own path of records (its parent is its best
verified commit), so without coordination a node with a few reference GPUs and many cheap ones
runs two unrelated searches. Two-tier screening couples them: cheap workers explore as usual
(their claims are the *screen*); a reference worker, before proposing an edit of its own, looks
for *screened winners* — successful claims of a screening class that beat their parent's value on
that class by more than `margin_sds` run-to-run standard deviations of that class — and runs the
best one not yet tried on the reference class (a *confirmation*). The winner's edit (its constant
changes, read from its diff summary) is applied to the reference class's parent, so a win found on
an old cheap parent still transfers. Ranking: the gain in units of the screening class's noise
(a verified claim's agreed median stands in for its claimed value), larger first. Dedup: one edit
(the same constant changes) is one candidate, and it is skipped once the reference class holds a
claim of the transplanted program (by normalized key) or of the same edit on any parent, or while
a worker runs it (`busy`). A claim the swarm refuses on sight (ledger/plausible.py: more steps
than its class can fit in the budget) is no winner: its gain was never possible, and confirming
it would spend a reference run on an absurd number. A confirmation is an ordinary claim on the
reference class: the verifiers judge it as any other. Only claims that count as evidence
(node/research/memory.py: ours, verified ones, a few of authors with standing) can be winners, and
their edit is read from their code where the node holds it, so fake claims of big gains on a cheap
class cannot spend the reference class's runs.
"""
from __future__ import annotations

from collections.abc import Collection
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from ledger.fold import State
from ledger.plausible import implausible
from node.research import verifier
from node.research.history import History
from node.research.program import (
    BadProgram,
    Value,
    apply_changes,
    format_value,
    key_with,
    parse_program,
    parse_summary,
)
from node.research.proposer import Proposal

SCREEN_Z = 1.0          # a screened winner beats its parent by this many noise sds of its class


@dataclass(frozen=True, slots=True)
class Winner:
    claim: bytes                               # the screening class's claim
    platform_class: str
    changes: dict[str, tuple[Value, Value]]    # as its diff summary states them
    gain_bpb: float                            # parent's value minus the claim's (verified where it is)
    gain_sds: float                            # the same in noise standard deviations of its class


@dataclass(frozen=True, slots=True)
class Confirmation:
    winner: Winner
    proposal: Proposal     # the winner's edit applied to the reference class's parent


def role(platform_class: str, reference_class: str, screening_classes: Collection[str]) -> str:
    """What a worker of this class does first: "confirm" (reference), "screen" (cheaper), "explore"."""
    if platform_class == reference_class:
        return "confirm"
    return "screen" if platform_class in screening_classes else "explore"


def _edit(changes: dict[str, tuple[Value, Value]]) -> frozenset[tuple[str, str]]:
    return frozenset((name, format_value(new)) for name, (_, new) in changes.items())


def screened_winners(state: State, history: History, screening_classes: Collection[str],
                     margin_sds: float = SCREEN_Z) -> list[Winner]:
    """Claims of the screening classes that beat their parent by the margin, best first, one per edit."""
    found: dict[frozenset[tuple[str, str]], Winner] = {}
    history.refresh(state)
    for cls in sorted(set(screening_classes)):
        sd = verifier.noise_sd(state, cls)
        for record in history.of_class(cls):
            body = record.body
            # the cheap numeric filters first: this runs before every reference worker's own experiment
            if body.parent is None or body.status != "ok" or body.val_bpb is None or record.id in state.refuted \
                    or not history.counts(record.id):
                continue   # a claim that does not count (node/research/memory.py) wins nothing
            value = state.verified.get(record.id, body.val_bpb)
            parent_value = value_in_class(state, history, body.parent, cls)
            if parent_value is None or not parent_value - value > margin_sds * sd:
                continue
            if implausible(state.spec, body):
                continue  # its numbers cannot be true on its class: no winner, however good they look
            changes, _ = history.changes_of(record.id)
            if not changes or "code: changed beyond constants" in body.diff_summary:
                continue  # only constant edits transplant onto another parent
            gain = parent_value - value
            winner = Winner(record.id, cls, changes, gain, gain / sd if sd > 0 else float("inf"))
            edit = _edit(changes)
            held = found.get(edit)
            if held is None or (winner.gain_sds, winner.claim) > (held.gain_sds, held.claim):
                found[edit] = winner
    return sorted(found.values(), key=lambda w: (-w.gain_sds, -w.gain_bpb, w.claim))


def value_in_class(state: State, history: History, commit: bytes, platform_class: str) -> float | None:
    """A commit's best known val_bpb on one class."""
    return history.value_of_commit(state, commit, platform_class)


def tried_on(state: State, history: History, platform_class: str) -> tuple[set[str], set[frozenset[tuple[str, str]]]]:
    """The normalized keys and the edits the class has claims of."""
    keys: set[str] = set()
    edits: set[frozenset[tuple[str, str]]] = set()
    for record in history.of_class(platform_class):
        changes, key = parse_summary(record.body.diff_summary)
        if key is not None:
            keys.add(key)
        if changes:
            edits.add(_edit(changes))
    return keys, edits


def next_confirmation(state: State, history: History, parent_source: str, *, reference_class: str,
                      screening_classes: Collection[str], busy: AbstractSet[str] = frozenset(),
                      margin_sds: float = SCREEN_Z) -> Confirmation | None:
    """The best screened winner the reference class has not run, as a proposal on its parent
    (`parent_source`: the reference class's best verified train.py); None: nothing to confirm."""
    winners = screened_winners(state, history, [c for c in screening_classes if c != reference_class], margin_sds)
    if not winners:
        return None
    try:
        parent = parse_program(parent_source)
    except BadProgram:
        return None
    current = {c.name: c.value for c in parent.constants if c.name not in parent.reassigned}
    keys, edits = tried_on(state, history, reference_class)
    for winner in winners:
        if _edit(winner.changes) in edits or any(name not in current for name in winner.changes):
            continue
        moves = {name: new for name, (_, new) in winner.changes.items()
                 if current[name] != new or type(current[name]) is not type(new)}
        if not moves:
            continue  # the reference parent already has these values
        key = key_with(parent, moves)
        if key in keys or key in busy or key == parent.key:
            continue
        proposal = Proposal(apply_changes(parent, moves), {n: (current[n], v) for n, v in moves.items()}, key)
        return Confirmation(winner, proposal)
    return None
