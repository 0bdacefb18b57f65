"""The swarm's experiment history as the research loop needs it: every claim's full body, by id.

The fold (ledger/fold.py) keeps only what credits need (author, commit, class, claimed value);
the loop also needs each claim's diff summary (the normalized key, what was tried), its seed and
step count (for replay) and its parent (for the proposer's evidence). `sync` reads the bodies of
claims the fold knows and this index does not yet, so it stays current whether entries came
from our own publishes or, later, from peers.

What the proposer may learn from a claim is weighed by node/research/memory.py: our own claims and
verified ones fully, unverified claims of authors with standing a little, the rest not at all, so
a flood of fake claims changes neither `keys` (the programs counted as tried) nor `trials`. A claim
passed to `add` directly is ours (the loop adds what it publishes); `sync` adds everyone's. With a
repository, `sync` also reads each counted claim's constants diff from the code (the commit against
its parent) where both are held, and a claim whose summary disagrees with its code counts nothing.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ledger.bodies import Claim
from ledger.fold import State
from ledger.store import Ledger
from swarm import gitrepo
from swarm.errors import RepositoryError
from swarm.gitrepo import Repository

from node.research import memory
from node.research.program import Value, parse_summary, summarize
from node.research.proposer import Trial

Changes = dict[str, tuple[Value, Value]]
MAX_DERIVE_PER_SYNC = 64     # claims whose code one sync reads: a backlog is worked off over several


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
    keys: set[str] = field(default_factory=set)          # normalized keys of the programs that count as tried
    by_commit: dict[bytes, list[bytes]] = field(default_factory=dict)
    repo: Repository | None = None                       # where claims' code is read from; None: summaries only
    own: set[bytes] = field(default_factory=set)          # claims this node published
    derived: dict[bytes, tuple[Changes, str | None]] = field(default_factory=dict)  # claim -> read from its code
    lying: set[bytes] = field(default_factory=set)        # claims whose summary disagrees with their code
    weight: dict[bytes, float] = field(default_factory=dict)  # claim -> evidence weight (memory.weights)
    _token: tuple[int, ...] = ()
    _unread: set[bytes] = field(default_factory=set)      # counted claims whose code we did not hold yet

    async def sync(self, ledger: Ledger) -> int:
        """Indexes the claims the ledger's fold holds that are not indexed yet; returns how many."""
        added = 0
        for claim_id in [c for c in ledger.state.claims if c not in self.claims]:
            entry = await ledger.get(claim_id)
            if entry is None or not isinstance(entry.body, Claim):
                continue  # still in the one transaction in flight: the next sync sees it
            self._index(ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, entry.body))
            added += 1
        self.refresh(ledger.state)
        if self.repo is not None and self._unread:
            await self._derive(self.repo)
            self.refresh(ledger.state)
        return added

    def add(self, record: ClaimRecord) -> None:
        """A claim this node published (its summary we wrote from the code ourselves)."""
        self.own.add(record.id)
        self._index(record)
        _, key = parse_summary(record.body.diff_summary)
        if key is not None:
            self.keys.add(key)   # at once: the next proposal must not repeat it, whatever the state

    def _index(self, record: ClaimRecord) -> None:
        if record.id in self.claims:
            return  # two syncs at once (a web request and a worker) may both find it
        self.claims[record.id] = record
        self.by_commit.setdefault(record.body.commit, []).append(record.id)

    def refresh(self, state: State) -> None:
        """Recomputes the weights and the counted keys when the state may have moved them."""
        token = memory.token(state, self.own, self.lying, len(self.claims))
        if token == self._token:
            return
        self._token = token
        self.weight = memory.weights(state, (memory.Counted(r.id, r.author, r.seq, r.id in self.own, r.id in self.lying)
                                             for r in self.claims.values()))
        keys: set[str] = set()
        for claim_id, w in self.weight.items():
            if w > 0:
                key = self.changes_of(claim_id)[1]
                if key is not None:
                    keys.add(key)
                if claim_id not in self.own and claim_id not in self.derived:
                    self._unread.add(claim_id)
        self.keys = keys

    def changes_of(self, claim_id: bytes) -> tuple[Changes, str | None]:
        """A claim's constant changes and key: from its code where read, else from its summary."""
        if claim_id in self.derived:
            return self.derived[claim_id]
        return parse_summary(self.claims[claim_id].body.diff_summary)

    async def _derive(self, repo: Repository) -> None:
        for claim_id in sorted(self._unread)[:MAX_DERIVE_PER_SYNC]:
            body = self.claims[claim_id].body
            if body.parent is None:
                self._unread.discard(claim_id)
                continue
            try:
                if not (await gitrepo.has_commit(repo, body.commit) and await gitrepo.has_commit(repo, body.parent)):
                    continue   # not fetched (yet): its summary stands in while it counts
                child = (await gitrepo.read_file(repo, body.commit, "train.py")).decode(errors="replace")
                parent = (await gitrepo.read_file(repo, body.parent, "train.py")).decode(errors="replace")
            except RepositoryError:
                self.lying.add(claim_id)   # a held commit without a readable train.py is no program
                self._unread.discard(claim_id)
                continue
            found = parse_summary(summarize(parent, child))
            self.derived[claim_id] = found
            self._unread.discard(claim_id)
            if found[1] != parse_summary(body.diff_summary)[1]:
                self.lying.add(claim_id)

    def counts(self, claim_id: bytes) -> bool:
        return self.weight.get(claim_id, 1.0 if claim_id in self.own else 0.0) > 0

    def value_of_commit(self, state: State, commit: bytes, platform_class: str) -> float | None:
        """A commit's best known val_bpb on one class: verified if any claim of it is, else the best
        claimed by a claim that counts. The class matters: the genesis commit is claimed on every
        class, at other values."""
        ids = [i for i in self.by_commit.get(commit, [])
               if i in self.claims and self.claims[i].body.platform_class == platform_class]
        verified = [state.verified[i] for i in ids if i in state.verified]
        if verified:
            return min(verified)
        claimed = [self.claims[i].body.val_bpb for i in ids if self.counts(i) or self.claims[i].body.parent is None]
        numbers = [v for v in claimed if v is not None]
        return min(numbers) if numbers else None

    def trials(self, state: State, platform_class: str) -> list[Trial]:
        """Every counted claim of the class that changed constants, with its result against its
        parent (the verified median where there is one) and its weight."""
        if not self.claims:
            return []   # nothing to weigh (and no state needed to weigh it)
        self.refresh(state)
        out: list[Trial] = []
        for record in self.of_class(platform_class):
            body = record.body
            w = self.weight.get(record.id, 1.0 if record.id in self.own else 0.0)
            if body.parent is None or w <= 0:
                continue
            changes, _ = self.changes_of(record.id)
            if not changes:
                continue
            parent_value = self.value_of_commit(state, body.parent, platform_class)
            value = state.verified.get(record.id, body.val_bpb)
            delta = None
            if value is not None and parent_value is not None:
                delta = value - parent_value
            elif body.val_bpb is not None:
                continue   # a run that worked against a parent of unknown value: no evidence either way
            out.append(Trial(changes, delta, w))
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
