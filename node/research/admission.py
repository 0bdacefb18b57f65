"""The creator's hand admissions: which listed keys become trusted verifiers of their class.

Pure: a function of the fold's state, the profiles seen so far and the keys the operator listed
(`[swarm] admit_keys`). node/wiring.py runs it on the creator's node and publishes what it
returns, signed by the creator's key (the only key whose Admit entries the fold honours).

Nobody is admitted for asking: keys are free to make, so a swarm that admitted every key that
published a Profile let one person fill the quorum with Sybils (issue 12). A key the operator did
not list earns trust by the fold's own rule (agreeing replays, `spec.trust_replays`) or not at all.
A listed key is admitted for the class its Profile names, once it has published one, unless it is
frozen for a fork.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping

from ledger.bodies import Admit
from ledger.fold import State


def due_admissions(state: State, profiles: Mapping[bytes, str], keys: Collection[bytes]) -> list[Admit]:
    """Admit entries for every listed, profiled key not yet trusted by hand in its class, in key order."""
    out = []
    for author in sorted(set(keys) & set(profiles)):
        platform_class = profiles[author]
        if platform_class not in state.spec.platform_classes or author in state.frozen:
            continue
        if platform_class in state.anchors.get(author, frozenset()):
            continue
        out.append(Admit(verifier=author, platform_classes=[platform_class]))
    return out
