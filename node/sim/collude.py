"""A swarm with a colluding minority: what the colluders can mint without contributing an improvement.

Knows nothing about asyncio, SQLite, git or networking: time is simulated seconds and every draw
comes from the `rng` passed in. What is real: identities, signed entries, the fold (ledger.fold,
rebuilt whenever it asks, as the store's writer does), the seals and assignment (ledger/assign.py,
an anchor sealing every claim as it is published, as node/wiring.py's seal loop does), the mint
rules (ledger/credits.py) and the honest verifier's choices (node/research/verifier.py).

Theory of operation. Three kinds of identity, one GPU worker each:
- anchors: the spec's verifiers, honest; they research, replay their verification queue and seal;
- honest: they earn trust by replaying claims the anchors decided (spec.trust_replays agreeing
  replays, ledger/facts.py), then research and replay their queue as a node does;
- colluders: they earn trust the same honest way (the only way in), then
  * vouch: every trusted colluder publishes a "replay" of every colluder claim with the claimed
    value the instant it is sealed (no GPU spent), and mints every record share and fee the fold
    may accept for it;
  * copy: when an honest claim beats the best, a colluder claims the same program under a new
    commit, a little better than the honest number and back-dated one second before it. Nodes
    serve a claim's bundle only once it is sealed (node/bundlegate.py), so the copy is published
    `copy_delay_s` after the original's seal (by default a second: fetch, commit, sign) and is
    sealed after it. `copy_delay_s` 0 plays a copier who rebuilt the edit from the claim's diff
    summary alone and got its copy into the original's seal;
  * fake: each colluder claims an invented gain of a no-op edit every `fake_every_s`;
  * look honest: otherwise replay their queue truthfully (earning fees for work they did).
  Colluders research nothing, so every record credit minted to them is for an improvement they
  did not contribute; fees are counted apart, for vouches (no work) and honest replays (work done).

GPU time: own runs and replays (trust-earning ones included) of every worker take the run length;
vouches and fake claims take none. The verification share is replay GPU-seconds over all GPU-seconds.
"""
from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from random import Random

from ledger import credits, fold
from ledger.bodies import Body, Claim, Mint, Seal, Verify
from ledger.entry import Entry, sign_entry
from ledger.keys import Identity
from ledger.spec import DEFAULT_ASSIGNED, SwarmSpec

from node.research import verifier
from node.research.history import ClaimRecord, History
from node.sim.simulate import EditModel

CLASS = "sim-gpu"
BASELINE = b"\x00" * 20
RATE_UCR_PER_BPB = 10**9
IDLE_S = 60.0            # a worker with nothing to do looks again after this long
PRUNE_EVERY_JOBS = 64    # drop settled claims from the verifier's index this often


@dataclass(frozen=True, slots=True)
class CollusionConfig:
    nodes: int = 40
    colluding: float = 0.1         # the share of all identities that collude
    anchors: int = 4               # spec verifiers (honest), out of `nodes`
    hours: float = 8.0
    budget_s: int = 300
    overhead_s: float = 60.0
    noise_sd_bpb: float = 0.0015
    spec_noise_bpb: float = 0.002
    quorum: int = 2
    assigned: int = DEFAULT_ASSIGNED
    trust_replays: int = 5
    fake_every_s: float = 1800.0   # each trusted colluder's invented claims
    copy: bool = True              # colluders claim copies of honest improvements
    copy_delay_s: float = 1.0      # from the original's seal to the copy's claim (0: sealed together)
    trust_tolerance_bpb: float | None = None  # None: the spec's default (its noise_bpb), as a node's spec has
    edits: EditModel = field(default_factory=EditModel)

    def __post_init__(self) -> None:
        if not 1 <= self.anchors <= self.nodes or not 0 <= self.colluding < 1 or self.copy_delay_s < 0:
            raise ValueError("need 1 <= anchors <= nodes, 0 <= colluding < 1 and copy_delay_s >= 0")
        if self.colluders() > self.nodes - self.anchors:
            raise ValueError("the colluders must fit among the nodes that are no anchor")

    def colluders(self) -> int:
        return round(self.colluding * self.nodes)


@dataclass(frozen=True, slots=True)
class CollusionFigures:
    colluders: int
    records: int
    colluder_records: int            # records whose claim a colluder authored
    colluder_record_ucr: int         # record credit minted to colluders (all of it unearned)
    colluder_vouch_fee_ucr: int      # fees for vouches: replays never run
    colluder_work_fee_ucr: int       # fees for replays they ran
    colluder_balance_ucr: int
    colluders_trusted: int           # at the end
    honest_trusted: int              # honest keys that are no anchor, trusted at the end
    honest_untrusted: int            # honest keys that are no anchor, not trusted at the end
    colluder_claims: int             # fakes and copies
    copies: int                      # copies of honest improvements among them
    copy_records: int                # records that are copies (a record of an honest program under a colluder's name)
    colluder_claims_verified: int
    own_gpu_s: float
    verify_gpu_s: float
    verification_share: float
    entries: int
    rebuilds: int
    folds_equal: bool                # the incremental fold equals a rebuild of the same entries


class _Sim:
    def __init__(self, config: CollusionConfig, rng: Random) -> None:
        self.c, self.rng = config, rng
        self.keys = [_identity(b"node-%d" % i) for i in range(config.nodes)]
        self.colluder_ids = set(range(config.nodes - config.colluders(), config.nodes))
        self.colluder_keys = {self.keys[i].public_key for i in self.colluder_ids}
        spec = SwarmSpec(
            name="collude", creator=_identity(b"creator").public_key, created_ms=0, harness_hash=b"h" * 32,
            dataset_hash=b"d" * 32, tokenizer_hash=b"t" * 32, time_budget_s=config.budget_s, metric="val_bpb",
            direction="min", baseline_commit=BASELINE, allowed_files=["train.py"], platform_classes=[CLASS],
            verifiers=[k.public_key for k in self.keys[:config.anchors]], quorum=config.quorum,
            noise_bpb={CLASS: config.spec_noise_bpb}, record_ucr_per_bpb=RATE_UCR_PER_BPB, verify_ucr=1000,
            trust_replays=config.trust_replays, assigned=config.assigned,
            trust_tolerance_bpb={} if config.trust_tolerance_bpb is None else {CLASS: config.trust_tolerance_bpb})
        self.spec = spec
        self.state = fold.initial(spec)
        self.rows: list[Entry] = []
        self.heads: dict[bytes, tuple[int, bytes | None]] = {}
        self.history = History()
        self.truth: dict[bytes, float | None] = {BASELINE: 1.0}   # commit -> true val_bpb
        self.colluder_claims: list[bytes] = []
        self.copies: set[bytes] = set()        # claim ids of copies
        self.vouches: set[bytes] = set()       # verify ids of replays never run
        self.own_s = self.verify_s = 0.0
        self.rebuilds = self.jobs = 0
        self.next_fake_s: dict[int, float] = {}

    # -- the ledger, as a store's writer folds it

    def publish(self, who: Identity, body: Body, at_s: float, time_ms: int | None = None) -> Entry:
        seq, prev = self.heads.get(who.public_key, (0, None))
        entry = sign_entry(who, swarm=self.state.swarm_id, seq=seq + 1, prev=prev, body=body,
                           time_ms=int(at_s * 1000) if time_ms is None else time_ms)
        self.heads[who.public_key] = (entry.seq, entry.id)
        self.rows.append(entry)
        fold.apply(self.state, entry)
        if self.state.needs_rebuild:
            self.state = fold.rebuild(self.spec, self.rows)
            self.rebuilds += 1
        return entry

    def claim(self, node: int, commit: bytes, parent: bytes | None, value: float | None, at_s: float,
              time_ms: int | None = None) -> Entry:
        body = Claim(commit=commit, parent=parent, platform_class=CLASS, status="ok" if value is not None else "crash",
                     val_bpb=value, num_steps=1000, planned_steps=1000, seed=node,
                     training_s=float(self.c.budget_s) if value is not None else 0.0,
                     wall_s=float(self.c.budget_s), peak_vram_mb=0.0, loss_curve=[],
                     diff_summary=f"key: k1-{commit.hex()}", message="", bundle=None)
        entry = self.publish(self.keys[node], body, at_s, time_ms)
        self.history.add(ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, body))
        if value is not None:  # an anchor's seal loop seals it within seconds; never its own claim
            sealer = self.keys[0] if node != 0 else self.keys[1 % self.c.anchors]
            self.publish(sealer, Seal(claims=[entry.id]), at_s)
        if node in self.colluder_ids:
            self.colluder_claims.append(entry.id)
            self.vouch_all(at_s)
        return entry

    def trusted(self, node: int) -> bool:
        return credits.trusted(self.state, self.keys[node].public_key, CLASS)

    def measure(self, commit: bytes) -> float:
        true = self.truth[commit]
        if true is None:
            raise AssertionError("only successful programs are replayed")  # a bug here, not input
        return max(1e-6, true + self.rng.gauss(0.0, self.c.noise_sd_bpb))

    def run_s(self) -> float:
        return (self.c.budget_s + self.c.overhead_s) * self.rng.uniform(0.95, 1.05)

    # -- honest work

    def replay(self, node: int, claim_id: bytes, at_s: float) -> None:
        """A replay run to its end: a verify entry with a fresh measurement, then every mint it earns."""
        me = self.keys[node]
        info = self.state.claims[claim_id]
        ver = self.publish(me, Verify(claim=claim_id, commit=info.commit, platform_class=CLASS, status="ok",
                                      val_bpb=self.measure(info.commit), num_steps=1000, seed=node,
                                      training_s=float(self.c.budget_s)), at_s)
        self.mint(node, claim_id, ver, at_s)

    def mint(self, node: int, claim_id: bytes, ver: Entry, at_s: float) -> None:
        me = self.keys[node]
        record, _ = verifier.record_mint(self.state, me.public_key, claim_id)
        if record is not None:
            self.publish(me, record, at_s)
        fee = verifier.verification_mint(self.state, me.public_key, ver.id)
        if fee is not None:
            self.publish(me, fee, at_s)

    def earning_replay(self, node: int) -> bytes | None:
        """A claim the anchors decided that this untrusted key has not replayed: its way to trust."""
        me = self.keys[node].public_key
        done = {c for (k, c) in self.state.votes if k == me}
        open_ = [c for c, d in self.state.anchor_decisions.items()
                 if c not in done and self.state.claims[c].author != me and self.truth.get(self.state.claims[c].commit)]
        return self.rng.choice(sorted(open_)) if open_ else None

    def experiment(self, node: int, now_s: float) -> tuple[float, tuple[bytes, bytes | None, float | None]]:
        records = self.state.records
        if not records:
            commit, parent, true = BASELINE, None, self.truth[BASELINE]
        else:
            parent = records[-1].commit
            commit = hashlib.sha1(b"collude-commit-%d" % len(self.truth)).digest()
            progress = 1.0 - (self.truth[parent] or 1.0)
            true = self.c.edits.draw(self.truth[parent] or 1.0, progress, self.rng)
            self.truth[commit] = true
        value = None if true is None else true + self.rng.gauss(0.0, self.c.noise_sd_bpb)
        return now_s + self.run_s(), (commit, parent, value)

    # -- the colluders

    def vouch_all(self, at_s: float) -> None:
        """Every trusted colluder 'replays' every colluder claim with its claimed value, and mints."""
        for node in sorted(self.colluder_ids):
            if not self.trusted(node):
                continue
            me = self.keys[node]
            for claim_id in self.colluder_claims:
                info = self.state.claims[claim_id]
                if info.author == me.public_key or (me.public_key, claim_id) in self.state.replayed_ok:
                    continue
                ver = self.publish(me, Verify(claim=claim_id, commit=info.commit, platform_class=CLASS, status="ok",
                                              val_bpb=info.claimed, num_steps=1000, seed=node, training_s=1.0), at_s)
                self.vouches.add(ver.id)
                fee = Mint(reason="verification", subject=ver.id, quorum=[], to=me.public_key,
                           amount=self.spec.verify_ucr, value=None, prev_best=None)
                self.publish(me, fee, at_s)  # whether or not the fold will pay it
        self.colluder_mints(at_s)

    def colluder_mints(self, at_s: float) -> None:
        for claim_id in self.colluder_claims:
            for node in sorted(self.colluder_ids):
                record, _ = credits.record_mint(self.state, self.keys[node].public_key, claim_id)
                if record is not None:
                    self.publish(self.keys[node], record, at_s)

    def copy(self, honest: Entry, at_s: float) -> None:
        body = honest.body
        if not self.c.copy or not isinstance(body, Claim) or body.val_bpb is None or not self.colluder_ids:
            return
        best = self.state.best.get(CLASS)
        if best is None or body.val_bpb >= best - self.spec.noise_bpb[CLASS]:
            return
        node = sorted(self.colluder_ids)[len(self.colluder_claims) % len(self.colluder_ids)]
        commit = hashlib.sha1(b"copy-" + body.commit).digest()
        self.truth[commit] = self.truth[body.commit]   # the same program under another commit
        # the original was sealed at at_s (claim() seals at once); the copy comes after, whatever it says
        copy = self.claim(node, commit, body.parent, body.val_bpb - self.spec.noise_bpb[CLASS] / 3,
                          at_s + self.c.copy_delay_s, time_ms=max(0, honest.time_ms - 1000))
        self.copies.add(copy.id)

    def fake(self, node: int, now_s: float) -> None:
        records = self.state.records
        if not records:
            return
        parent = records[-1].commit
        commit = hashlib.sha1(b"fake-%d-%d" % (node, len(self.truth))).digest()
        self.truth[commit] = self.truth[parent]        # a no-op edit
        self.claim(node, commit, parent, records[-1].value - 3 * self.spec.noise_bpb[CLASS], now_s)

    # -- one worker's next job: returns when it is free again

    def step(self, node: int, now_s: float) -> float:
        me = self.keys[node].public_key
        colluder = node in self.colluder_ids
        lost = self.state.vote_counts.get((me, CLASS), (0, 0))[1] > 0  # a disagreement: trust is gone for good
        if not self.trusted(node) and not lost:
            target = self.earning_replay(node)
            if target is not None:
                end_s = now_s + self.run_s()
                self.verify_s += end_s - now_s
                self.replay(node, target, end_s)
                return end_s
        if colluder and not self.trusted(node):
            return now_s + IDLE_S
        if colluder:
            self.vouch_all(now_s)
            if now_s >= self.next_fake_s.get(node, 0.0):
                self.next_fake_s[node] = now_s + self.c.fake_every_s
                self.fake(node, now_s)
        queue = verifier.unpaired_queue(self.state, self.history, me, CLASS, set(), own=frozenset({me}),
                                            now_ms=int(now_s * 1000)) if self.trusted(node) else []
        if queue:
            end_s = now_s + self.run_s()
            self.verify_s += end_s - now_s
            self.replay(node, queue[0].id, end_s)
            return end_s
        if colluder:
            return now_s + IDLE_S
        end_s, (commit, parent, value) = self.experiment(node, now_s)
        self.own_s += end_s - now_s
        entry = self.claim(node, commit, parent, value, end_s)
        self.copy(entry, end_s)
        return end_s


def simulate_collusion(config: CollusionConfig, rng: Random) -> CollusionFigures:
    sim = _Sim(config, rng)
    events = [(rng.uniform(0, 600.0), node, node) for node in range(config.nodes)]
    heapq.heapify(events)
    order = config.nodes
    end_s = config.hours * 3600
    while events:
        now_s, _, node = heapq.heappop(events)
        if now_s > end_s:
            break
        sim.jobs += 1
        if sim.jobs % PRUNE_EVERY_JOBS == 0:
            sim.history.claims = {k: r for k, r in sim.history.claims.items()
                                  if not verifier.unpaired_settled(sim.state, r)}
        heapq.heappush(events, (sim.step(node, now_s), order, node))
        order += 1
    return _figures(sim)


def _figures(sim: _Sim) -> CollusionFigures:
    state, colluders = sim.state, sim.colluder_keys
    honest = [k.public_key for k in sim.keys[sim.c.anchors:] if k.public_key not in colluders]
    record_ucr = vouch_fee = work_fee = 0
    for entry in sim.rows:
        body = entry.body
        if not isinstance(body, Mint) or state.verdicts.get(entry.id) != "" or body.to not in colluders:
            continue
        if body.reason == "record":
            record_ucr += body.amount
        elif body.subject in sim.vouches:
            vouch_fee += body.amount
        else:
            work_fee += body.amount
    total_s = sim.own_s + sim.verify_s
    return CollusionFigures(
        colluders=len(colluders), records=len(state.records),
        colluder_records=sum(1 for r in state.records if r.author in colluders),
        colluder_record_ucr=record_ucr, colluder_vouch_fee_ucr=vouch_fee, colluder_work_fee_ucr=work_fee,
        colluder_balance_ucr=sum(state.balances.get(k, 0) for k in colluders),
        colluders_trusted=sum(1 for k in colluders if credits.trusted(state, k, CLASS)),
        honest_trusted=sum(1 for k in honest if credits.trusted(state, k, CLASS)),
        honest_untrusted=sum(1 for k in honest if not credits.trusted(state, k, CLASS)),
        colluder_claims=len(sim.colluder_claims), copies=len(sim.copies),
        copy_records=sum(1 for r in state.records if r.claim in sim.copies),
        colluder_claims_verified=sum(1 for c in sim.colluder_claims if c in state.verified),
        own_gpu_s=round(sim.own_s, 1), verify_gpu_s=round(sim.verify_s, 1),
        verification_share=round(sim.verify_s / total_s, 4) if total_s else 0.0,
        entries=len(sim.rows), rebuilds=sim.rebuilds,
        folds_equal=fold.tables(state) == fold.tables(fold.rebuild(sim.spec, sim.rows)))


def _identity(name: bytes) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"autoswarm/collude\x00" + name).digest())
