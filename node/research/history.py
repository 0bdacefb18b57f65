"""The swarm's experiment history as the research loop needs it: every claim's full body, by id.

The fold (ledger/fold.py) keeps only what credits need (author, commit, class, claimed value);
the loop also needs each claim's diff summary (the normalized key, what was tried), its seed and
step count (for replay) and its parent (for the proposer's evidence). `sync` reads the bodies of
claims the fold knows and this index does not yet, so it stays current whether entries came
from our own publishes or, later, from peers. Everything else here is a pure view.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ledger.bodies import Claim
from ledger.fold import State
from ledger.store import Ledger

from node.research.program import parse_summary
from node.research.proposer import Trial


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    id: bytes
    author: bytes
    seq: int
    time_ms: int
    body: Claim


@dataclass(slots=True)
class History:
    claims: dict[bytes, ClaimRecord] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)          # normalized keys of every claimed program
    by_commit: dict[bytes, list[bytes]] = field(default_factory=dict)

    async def sync(self, ledger: Ledger) -> int:
        """Indexes the claims the ledger's fold holds that are not indexed yet; returns how many."""
        added = 0
        for claim_id in [c for c in ledger.state.claims if c not in self.claims]:
            entry = await ledger.get(claim_id)
            if entry is None or not isinstance(entry.body, Claim):
                continue  # still in the one transaction in flight: the next sync sees it
            self.add(ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, entry.body))
            added += 1
        return added

    def add(self, record: ClaimRecord) -> None:
        if record.id in self.claims:
            return  # two syncs at once (a web request and a worker) may both find it
        self.claims[record.id] = record
        self.by_commit.setdefault(record.body.commit, []).append(record.id)
        _, key = parse_summary(record.body.diff_summary)
        if key is not None:
            self.keys.add(key)

    def value_of_commit(self, state: State, commit: bytes, platform_class: str) -> float | None:
        """A commit's best known val_bpb on one class: verified if any claim of it is, else the best
        claimed. The class matters: the genesis commit is claimed on every class, at other values."""
        ids = [i for i in self.by_commit.get(commit, [])
               if i in self.claims and self.claims[i].body.platform_class == platform_class]
        verified = [state.verified[i] for i in ids if i in state.verified]
        if verified:
            return min(verified)
        claimed = [self.claims[i].body.val_bpb for i in ids]
        numbers = [v for v in claimed if v is not None]
        return min(numbers) if numbers else None

    def trials(self, state: State, platform_class: str) -> list[Trial]:
        """Every claim of the class that changed constants, with its result against its parent."""
        out: list[Trial] = []
        for record in self.of_class(platform_class):
            body = record.body
            if body.parent is None:
                continue
            changes, _ = parse_summary(body.diff_summary)
            if not changes:
                continue
            parent_value = self.value_of_commit(state, body.parent, platform_class)
            delta = None
            if body.val_bpb is not None and parent_value is not None:
                delta = body.val_bpb - parent_value
            out.append(Trial(changes, delta))
        return out

    def of_class(self, platform_class: str) -> Iterable[ClaimRecord]:
        return (r for r in self.claims.values() if r.body.platform_class == platform_class)

    def baseline_ok(self, platform_class: str, baseline: bytes) -> bool:
        """Whether anyone has claimed a successful run of the genesis commit on this class."""
        return any(r.body.commit == baseline and r.body.parent is None and r.body.status == "ok"
                   for r in self.of_class(platform_class))

    def baseline_runs(self, platform_class: str, baseline: bytes, author: bytes) -> list[ClaimRecord]:
        """The author's claims of the genesis commit in this class (its baseline and calibration runs)."""
        return [r for r in self.of_class(platform_class)
                if r.body.commit == baseline and r.body.parent is None and r.author == author]
