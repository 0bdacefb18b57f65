"""The creator's admission policy: which joining nodes become trusted verifiers of their class.

Pure: a function of the fold's state and the profiles seen so far. node/wiring.py runs it on the
creator's node when `[swarm] admit = "auto"` and publishes what it returns, signed by the
creator's key (the only key whose Admit entries the fold honours).

"auto" admits every node that published a Profile of one of the swarm's classes and is not
frozen for a fork: right for a private swarm of machines one owner or team controls, and for
the demo. An open swarm on the internet wants "none" and admissions by hand, since anyone can
make keys (a Sybil could otherwise fill the quorum).
"""
from __future__ import annotations

from collections.abc import Mapping

from ledger.bodies import Admit
from ledger.fold import State


def due_admissions(state: State, profiles: Mapping[bytes, str]) -> list[Admit]:
    """Admit entries for every profiled author not yet trusted in its class, in key order."""
    out = []
    for author, platform_class in sorted(profiles.items()):
        if platform_class not in state.spec.platform_classes or author in state.frozen:
            continue
        if platform_class in state.anchors.get(author, frozenset()):
            continue
        out.append(Admit(verifier=author, platform_classes=[platform_class]))
    return out
