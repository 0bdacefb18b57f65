"""A simulated swarm: many one-GPU nodes, a fake trainer, the real ledger and verification policy.

Knows nothing about asyncio, SQLite, git, networking or training: time is a number of simulated
seconds, every random draw comes from the `rng` passed in, and the same config and seed give the
same swarm. What is real: identities (ledger.keys), signed entries (ledger.entry.sign_entry), the
fold (ledger.fold.apply) and the verifier's choices and mints (node/research/verifier.py).

Theory of operation. Discrete events: each node's one worker finishes a job at some time, the
job's entries are signed and folded in, and the worker picks its next job with the research loop's
own choose_work (node/research/work.py): the baseline while the class has no successful baseline
claim, else the first claim of the verifier's queue (the node's own, verifier.verification_queue,
in a "paired" swarm), else an experiment on the class's
best verified commit.
Gossip is taken as instant (the swarm benchmark's p95 is under 0.5 s against 6-minute runs), so
every node sees one fold state. Sealing too: an anchor (node 0's verifier key) seals each
successful claim as it is published, as an anchor node's seal loop does within seconds
(node/wiring.py), so only the keys the seal assigns replay it (ledger/assign.py).

The fake trainer: every program has a true val_bpb. An edit of a parent crashes, leaves it about
the same, makes it worse, or makes it better by a gain whose scale shrinks as the swarm's true
progress grows (the easy wins go first). A run measures true + N(0, noise_sd_bpb); a replay is a
new independent run. The simulator knows the truth, so it can count false records: records whose
true value is not below the true value of the record before them.

With an Explorer (node/sim/simwork.py) the experiments come from it instead of the EditModel: each node
has a platform class, its own runs' noise, and programs whose true value the explorer knows per
class; records, the verification queue and the parents are then per class. Without one, nothing
here draws or orders differently, so every seed gives the swarm it gave before.
"""
from __future__ import annotations

import hashlib
import heapq
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ledger import assign, evidence, fold
from ledger.bodies import Body, Claim, Seal, Verify
from ledger.entry import Entry, sign_entry
from ledger.fold import RecordRow, State
from ledger.keys import Identity
from ledger.spec import DEFAULT_ASSIGNED, SwarmSpec

from node.research import verifier, work
from node.research.history import ClaimRecord, History
from node.sim import paired

CLASS = "sim-gpu"
BASELINE_COMMIT = b"\x00" * 20
RECORD_UCR_PER_BPB = 10**9
IDLE_S = 60.0              # a worker with nothing to run (explorer runs only) looks again after this long
PRUNE_EVERY_JOBS = 64      # drop settled claims from the policy's index this often (it only shrinks work)


class Explorer(Protocol):
    """Chooses the experiments of a simulation with a constants landscape (node/sim/simwork.py); without
    one, edits are drawn from the EditModel and every node is of CLASS."""

    def classes(self) -> list[str]: ...                  # each node's platform class
    def spec_noise(self) -> dict[str, float]: ...        # the spec's noise_bpb per class
    def noise_sd(self, platform_class: str) -> float: ...
    def true_bpb(self, commit: bytes, platform_class: str) -> float | None: ...
    def summary(self, commit: bytes) -> str: ...
    def experiment(self, swarm: _Swarm, node: int, platform_class: str, parent: bytes) -> bytes | None: ...
    def finished(self, swarm: _Swarm, record: ClaimRecord) -> None: ...


class Queue(Protocol):
    def __call__(self, state: State, history: History, verifier: bytes, platform_class: str, skip: set[bytes],
                 own: frozenset[bytes] = ..., now_ms: int | None = ...) -> list[ClaimRecord]: ...


@dataclass(frozen=True, slots=True)
class Policy:
    """Which claims a verifier replays: node/research/verifier.py's unpaired rules (the node's queue
    before issue 13; a "paired" swarm runs the node's own `verification_queue`), unless a benchmark
    compares another. `settled` must be monotone and imply that `queue` never returns the claim again."""

    queue: Queue = verifier.unpaired_queue
    settled: Callable[[State, ClaimRecord], bool] = verifier.unpaired_settled


@dataclass(frozen=True, slots=True)
class EditModel:
    """What one proposed edit does to the true val_bpb of its parent (shares add up to 1 with `worse`)."""

    crash_p: float = 0.05          # the program does not finish (bad code, out of memory)
    neutral_p: float = 0.25        # no real effect: delta ~ N(0, neutral_sd_bpb)
    better_p: float = 0.10         # a real gain: delta ~ -Exp(gain_mean_bpb x shrink)
    neutral_sd_bpb: float = 0.0002
    worse_mean_bpb: float = 0.006  # the rest: delta ~ +Exp(worse_mean_bpb)
    gain_mean_bpb: float = 0.004   # at the baseline
    gain_decay_bpb: float = 0.03   # gains shrink by a factor e for every this much true progress

    def __post_init__(self) -> None:
        if min(self.crash_p, self.neutral_p, self.better_p) < 0 or self.crash_p + self.neutral_p + self.better_p > 1:
            raise ValueError("edit shares must be non-negative and add up to at most 1")
        if min(self.neutral_sd_bpb, self.worse_mean_bpb, self.gain_mean_bpb) < 0 or self.gain_decay_bpb <= 0:
            raise ValueError("edit scales must be non-negative, gain_decay_bpb positive")

    def draw(self, parent_bpb: float, progress_bpb: float, rng: random.Random) -> float | None:
        """The child's true val_bpb, or None if it crashes."""
        u = rng.random()
        if u < self.crash_p:
            return None
        if u < self.crash_p + self.neutral_p:
            return parent_bpb + rng.gauss(0.0, self.neutral_sd_bpb)
        if u < self.crash_p + self.neutral_p + self.better_p:
            scale = self.gain_mean_bpb * math.exp(-max(0.0, progress_bpb) / self.gain_decay_bpb)
            return parent_bpb - rng.expovariate(1.0 / scale) if scale > 0 else parent_bpb
        return parent_bpb + (rng.expovariate(1.0 / self.worse_mean_bpb) if self.worse_mean_bpb > 0 else 0.0)


@dataclass(frozen=True, slots=True)
class SimConfig:
    nodes: int = 100
    hours: float = 24.0
    noise_sd_bpb: float = 0.0015   # run-to-run sd of a measured val_bpb over training seeds (see docs/benchmarks.md)
    spec_noise_bpb: float = 0.002  # the class's noise in the swarm spec: the node's default for GPUs
    quorum: int = 2
    budget_s: int = 300            # training time of every run, replays included
    overhead_s: float = 60.0       # per run outside training: start, compile, evaluation
    jitter: float = 0.05           # run lengths vary uniformly by this fraction
    join_window_s: float = 600.0   # nodes join uniformly over this long from time 0
    baseline_bpb: float = 1.0
    verify_ucr: int = 1000
    edits: EditModel = field(default_factory=EditModel)
    # How replays run (node/sim/paired.py): "independent" (a new independent run: the old model),
    # "claim_seed" (today's verifier: the claim's own training seed) or "paired" (the new verifier)
    replays: str = "independent"
    eval_sd_bpb: float = 0.0       # evaluation noise of one run, beside the training noise above
    pair_rho: float = 0.5          # share of the training noise two programs on one seed have in common

    def __post_init__(self) -> None:
        if self.nodes < 1 or not 1 <= self.quorum <= self.nodes:
            raise ValueError("need at least one node and 1 <= quorum <= nodes")
        if self.hours <= 0 or self.budget_s < 1 or self.overhead_s < 0 or not 0 <= self.jitter < 1:
            raise ValueError("hours and budget_s must be positive, overhead_s >= 0, 0 <= jitter < 1")
        if self.noise_sd_bpb < 0 or self.spec_noise_bpb < 0 or self.join_window_s < 0 or self.baseline_bpb <= 0:
            raise ValueError("noise, join window must be non-negative, baseline_bpb positive")
        if self.replays not in paired.REPLAY_MODES or self.eval_sd_bpb < 0 or not 0 <= self.pair_rho <= 1:
            raise ValueError(f"replays one of {paired.REPLAY_MODES}, eval_sd_bpb >= 0, 0 <= pair_rho <= 1")


@dataclass(frozen=True, slots=True)
class Run:
    """One GPU job: an own run (baseline or experiment) or a replay of a claim."""

    node: int
    kind: str            # "baseline", "experiment" or "verify"
    start_s: float
    end_s: float
    claim: bytes | None  # the claim it published (own runs) or replayed (verify)


@dataclass(frozen=True, slots=True)
class Figures:
    """The benchmark's numbers; GPU seconds count the runs that finished within the simulated time."""

    experiments: int               # own runs, baselines included
    baselines: int
    crashes: int
    verifications: int             # replays
    claims_replayed: int
    claims_verified: int
    records: int                   # the first is the baseline's: it has no predecessor to beat
    false_records: int
    false_record_rate: float       # false records / records with a predecessor
    own_gpu_s: float
    verify_gpu_s: float
    verification_share: float      # verify_gpu_s / (own_gpu_s + verify_gpu_s)
    true_progress_bpb: float       # baseline's true val_bpb minus the last record's
    best_true_found_bpb: float     # the best true val_bpb of any program run (what perfect verification would find)
    entries: int
    mints: int
    refused_mints: int             # mints the fold judged invalid: always 0 unless the policy is broken
    minted_ucr: int
    # issue 13's figures
    records_per_day: float = 0.0
    gain_error_median: float | None = None  # median |reported - true| / true gain of true records
    paired_rounds: int = 0                  # paired verifies published
    parent_runs: int = 0                    # parent runs they needed (the rest came from a cache)


@dataclass(slots=True)
class Outcome:
    config: SimConfig
    state: State
    runs: list[Run]
    truth: dict[bytes, float | None]  # claim id -> the program's true val_bpb (None: it crashes)
    figures: Figures
    record_times: list[tuple[float, RecordRow]] = field(default_factory=list)  # (simulated s, row)


@dataclass(frozen=True, slots=True)
class _Job:
    kind: str
    start_s: float
    end_s: float
    commit: bytes = BASELINE_COMMIT
    parent: bytes | None = None
    record: ClaimRecord | None = None  # the claim a replay checks
    round_index: int | None = None     # a paired round (replays "paired")
    seed: int = 0                      # the replay's training seed


class _Swarm:
    """The mutable bookkeeping of one simulation; `simulate` is its only user."""

    def __init__(self, config: SimConfig, rng: random.Random, policy: Policy,
                 explorer: Explorer | None = None) -> None:
        self.config, self.rng, self.policy, self.explorer = config, rng, policy, explorer
        classes = explorer.classes() if explorer is not None else [CLASS] * config.nodes
        if len(classes) != config.nodes:
            raise ValueError("the explorer must name one platform class per node")
        self.classes = classes
        noise = explorer.spec_noise() if explorer is not None else {CLASS: config.spec_noise_bpb}
        self.creator = _identity(b"creator")
        self.researchers = [_identity(b"researcher-%d" % i) for i in range(config.nodes)]
        self.verifiers = [_identity(b"verifier-%d" % i) for i in range(config.nodes)]
        spec = SwarmSpec(
            name="sim", creator=self.creator.public_key, created_ms=0, harness_hash=b"h" * 32,
            dataset_hash=b"d" * 32, tokenizer_hash=b"t" * 32, time_budget_s=config.budget_s, metric="val_bpb",
            direction="min", baseline_commit=BASELINE_COMMIT, allowed_files=["train.py"],
            platform_classes=sorted(noise), verifiers=[v.public_key for v in self.verifiers], quorum=config.quorum,
            noise_bpb=noise, record_ucr_per_bpb=RECORD_UCR_PER_BPB,
            verify_ucr=config.verify_ucr, assigned=0 if len(noise) > 1 else DEFAULT_ASSIGNED,
            # The assignment draws from every key trusted in a class, and spec verifiers are trusted
            # in all of them, but a node replays only its own hardware's class: with several classes
            # a claim could be assigned to keys that never replay it (open, docs/architecture.md).
            # Several classes therefore let every trusted key count, as before the seals.
            )
        self.state = fold.initial(spec)
        self.heads: dict[bytes, tuple[int, bytes | None]] = {}
        self.history = History()            # the claims the policy may still want: settled ones are pruned
        self.truth: dict[bytes, float | None] = {}
        self.commit_truth: dict[bytes, float | None] = {BASELINE_COMMIT: config.baseline_bpb}
        self.runs: list[Run] = []
        self.entries = self.mints = self.refused = self.jobs = 0
        self.baseline_claimed: set[str] = set()   # classes with a successful baseline claim
        self.record_times: list[tuple[float, RecordRow]] = []  # when each record row appeared
        # the swarm's training-noise salt: drawn only by the seeded replay modes, so "independent"
        # swarms draw exactly what they drew before
        self.salt = rng.randbytes(16) if config.replays != "independent" else b""
        self.parent_cache: dict[tuple[int, bytes, int], float] = {}  # (node, parent, seed) -> its value
        self.paired_rounds = self.parent_runs = 0

    # -- the ledger

    def publish(self, who: Identity, body: Body, at_s: float) -> Entry:
        seq, prev = self.heads.get(who.public_key, (0, None))
        entry = sign_entry(who, swarm=self.state.swarm_id, seq=seq + 1, prev=prev, body=body,
                           time_ms=int(at_s * 1000))
        self.heads[who.public_key] = (entry.seq, entry.id)
        records = len(self.state.records)
        fold.apply(self.state, entry)
        self.record_times += [(at_s, row) for row in self.state.records[records:]]
        self.entries += 1
        if entry.kind == "mint":
            self.mints += 1
            self.refused += self.state.verdicts.get(entry.id, "") != ""
        return entry

    # -- choosing: node/research/work.py's choose_work, as every node's worker does

    def next_job(self, node: int, now_s: float) -> _Job:
        c, cls = self.config, self.classes[node]
        verify: list[ClaimRecord] = []
        if cls in self.baseline_claimed:  # before the baseline the queue cannot matter: skip its cost
            # as the research loop: never vouch for our own research key while another verifier can
            own = frozenset({self.researchers[node].public_key}) if c.nodes > 1 else frozenset()
            verify = self.policy.queue(self.state, self.history, self.verifiers[node].public_key, cls, set(),
                                       own=own, now_ms=int(now_s * 1000))
        # no market, submissions, calibration or max_experiments here: the other inputs stay at rest
        match work.choose_work(work.Situation(baseline_done=cls in self.baseline_claimed, verify=verify)):
            case work.Baseline():
                return self._own("baseline", now_s, BASELINE_COMMIT, None, cls)
            case work.Verify(claim=record):
                return self._verify_job(node, now_s, record)
            case work.Experiment():
                return self._experiment(node, now_s, cls)
            case other:
                raise AssertionError(f"the simulator offers no {type(other).__name__}")  # a bug here, not input

    def _verify_job(self, node: int, now_s: float, record: ClaimRecord) -> _Job:
        c = self.config
        key = self.verifiers[node].public_key
        if c.replays != "paired" or record.body.parent is None:
            return _Job("verify", now_s, now_s + self._length(c.budget_s + c.overhead_s), record=record,
                        seed=record.body.seed)
        rounds = evidence.rounds_wanted(self.state, record.id, key)
        seed = assign.replay_train_seed(self.state, record.id, key, rounds[0]) if rounds else None
        if seed is None:
            raise AssertionError("the paired queue offers only claims with a round to run")  # a bug here
        runs = 1 if (node, record.body.parent, seed) in self.parent_cache else 2
        return _Job("verify", now_s, now_s + runs * self._length(c.budget_s + c.overhead_s), record=record,
                    round_index=rounds[0], seed=seed)

    def _experiment(self, node: int, now_s: float, cls: str) -> _Job:
        c = self.config
        rows = [r for r in self.state.records if r.platform_class == cls]
        parent = rows[-1].commit if rows else BASELINE_COMMIT
        if self.explorer is not None:
            chosen = self.explorer.experiment(self, node, cls, parent)
            if chosen is None:  # no untried edit left: the worker looks again later, as research.py's does
                return _Job("idle", now_s, now_s + IDLE_S)
            return self._own("experiment", now_s, chosen, parent, cls)
        commit = hashlib.sha1(b"sim-commit-%d" % len(self.commit_truth)).digest()
        parent_bpb = self.commit_truth[parent]
        if parent_bpb is None:
            raise AssertionError("a record's program never crashes")  # a bug here, not peer input
        last_true = self.commit_truth[rows[-1].commit] if rows else c.baseline_bpb
        progress = c.baseline_bpb - (last_true if last_true is not None else c.baseline_bpb)
        self.commit_truth[commit] = c.edits.draw(parent_bpb, progress, self.rng)
        return self._own("experiment", now_s, commit, parent, cls)

    def true_bpb(self, commit: bytes, platform_class: str) -> float | None:
        if self.explorer is not None:
            return self.explorer.true_bpb(commit, platform_class)
        return self.commit_truth[commit]

    def _own(self, kind: str, now_s: float, commit: bytes, parent: bytes | None, cls: str) -> _Job:
        c = self.config
        if self.true_bpb(commit, cls) is None:  # crashes show early: startup, compile, first steps
            return _Job(kind, now_s, now_s + c.overhead_s * self.rng.uniform(0.2, 1.0) + 1.0, commit, parent)
        return _Job(kind, now_s, now_s + self._length(c.budget_s + c.overhead_s), commit, parent)

    def _length(self, seconds: float) -> float:
        return seconds * (1.0 + self.rng.uniform(-self.config.jitter, self.config.jitter))

    def _measure(self, true_bpb: float, cls: str, commit: bytes, seed: int) -> float:
        sd = self.explorer.noise_sd(cls) if self.explorer is not None else self.config.noise_sd_bpb
        c = self.config
        if c.replays == "independent":
            return max(1e-6, true_bpb + self.rng.gauss(0.0, sd))
        return paired.measure(true_bpb, self.salt, commit, seed, sd_train=sd, sd_eval=c.eval_sd_bpb,
                              rho=c.pair_rho, rng=self.rng)

    # -- finishing: what a worker publishes when a job ends

    def finish(self, node: int, job: _Job) -> None:
        c = self.config
        if job.record is not None:
            self._finish_verify(node, job, job.record)
            return
        if job.kind == "idle":
            return
        cls = self.classes[node]
        true_bpb = self.true_bpb(job.commit, cls)
        value = None if true_bpb is None else self._measure(true_bpb, cls, job.commit, node)
        summary = f"key: k1-{hashlib.md5(job.commit).hexdigest()}" if self.explorer is None \
            else self.explorer.summary(job.commit)
        # the summary's key names the program (md5 as a name, not for security; it shapes claim ids and
        # so the verifier ranks: changing it changes every seed's swarm)
        body = Claim(commit=job.commit, parent=job.parent, platform_class=cls,
                     status="ok" if value is not None else "crash", val_bpb=value, num_steps=1000,
                     planned_steps=1000, seed=node, training_s=float(c.budget_s) if value is not None else 0.0,
                     wall_s=job.end_s - job.start_s, peak_vram_mb=0.0, loss_curve=[],
                     diff_summary=summary, message=job.kind, bundle=None)
        entry = self.publish(self.researchers[node], body, job.end_s)
        if value is not None:
            self.publish(self.verifiers[0], Seal(claims=[entry.id]), job.end_s)
        self.truth[entry.id] = true_bpb
        record = ClaimRecord(entry.id, entry.author, entry.seq, entry.time_ms, body)
        self.history.add(record)
        if job.parent is None and value is not None:
            self.baseline_claimed.add(cls)
        if self.explorer is not None:
            self.explorer.finished(self, record)
        self.runs.append(Run(node, job.kind, job.start_s, job.end_s, entry.id))

    def _finish_verify(self, node: int, job: _Job, record: ClaimRecord) -> None:
        me = self.verifiers[node]
        true_bpb = self.truth[record.id]
        if true_bpb is None:
            raise AssertionError("the policy replays only successful claims")
        cls, body = record.body.platform_class, record.body
        parent_value = None
        if job.round_index is not None and body.parent is not None:
            cached = self.parent_cache.get((node, body.parent, job.seed))
            if cached is None:
                parent_true = self.true_bpb(body.parent, cls)
                if parent_true is None:
                    raise AssertionError("a record's program never crashes")  # a bug here, not peer input
                cached = self.parent_cache[(node, body.parent, job.seed)] = self._measure(
                    parent_true, cls, body.parent, job.seed)
                self.parent_runs += 1
            parent_value = cached
            self.paired_rounds += 1
        verify = Verify(claim=record.id, commit=body.commit, platform_class=cls, status="ok",
                        val_bpb=self._measure(true_bpb, cls, body.commit, job.seed), num_steps=body.num_steps,
                        seed=job.seed, training_s=float(self.config.budget_s),
                        round_index=job.round_index or 0, parent_val_bpb=parent_value)
        entry = self.publish(me, verify, job.end_s)
        self.runs.append(Run(node, "verify", job.start_s, job.end_s, record.id))
        # then the mints research.py publishes after its own verify entry
        mint, _ = verifier.record_mint(self.state, me.public_key, record.id)
        if mint is not None:
            self.publish(me, mint, job.end_s)
        fee = verifier.verification_mint(self.state, me.public_key, entry.id)
        if fee is not None:
            self.publish(me, fee, job.end_s)

    def prune(self) -> None:
        self.history.claims = {k: r for k, r in self.history.claims.items() if not self.policy.settled(self.state, r)}


def simulate(config: SimConfig, rng: random.Random, policy: Policy = Policy(),
             explorer: Explorer | None = None) -> Outcome:
    if config.replays == "paired" and policy == Policy():
        policy = Policy(queue=paired.paired_queue, settled=paired.paired_settled)
    swarm = _Swarm(config, rng, policy, explorer)
    end_s = config.hours * 3600
    events: list[tuple[float, int, int]] = []  # (time, tie-break, node): the node's worker is free
    for node in range(config.nodes):
        heapq.heappush(events, (rng.uniform(0, config.join_window_s), node, node))
    jobs: dict[int, _Job] = {}
    order = config.nodes
    while events:
        now_s, _, node = heapq.heappop(events)
        if now_s > end_s:
            break
        done = jobs.pop(node, None)
        if done is not None:
            swarm.finish(node, done)
        swarm.jobs += 1
        if swarm.jobs % PRUNE_EVERY_JOBS == 0:
            swarm.prune()
        job = swarm.next_job(node, now_s)
        jobs[node] = job
        heapq.heappush(events, (job.end_s, order, node))
        order += 1
    return Outcome(config, swarm.state, swarm.runs, swarm.truth, _figures(swarm), swarm.record_times)


def false_records(state: State, truth: dict[bytes, float | None]) -> list[bytes]:
    """Record claims whose true value is not below the true value of the record before them."""
    out = []
    for before, row in zip(state.records, state.records[1:]):
        new, old = truth[row.claim], truth[before.claim]
        if new is None or old is None or not new < old:
            out.append(row.claim)
    return out


def _figures(swarm: _Swarm) -> Figures:
    state, runs, c = swarm.state, swarm.runs, swarm.config
    own = [r for r in runs if r.kind != "verify"]
    replays = [r for r in runs if r.kind == "verify"]
    own_s = sum(r.end_s - r.start_s for r in own)
    verify_s = sum(r.end_s - r.start_s for r in replays)
    false = false_records(state, swarm.truth)
    last = swarm.truth[state.records[-1].claim] if state.records else None
    found = [v for v in swarm.truth.values() if v is not None]
    return Figures(
        experiments=len(own), baselines=sum(1 for r in own if r.kind == "baseline"),
        crashes=sum(1 for r in own if r.claim is not None and swarm.truth[r.claim] is None),
        verifications=len(replays), claims_replayed=len({r.claim for r in replays}),
        claims_verified=len(state.verified), records=len(state.records), false_records=len(false),
        false_record_rate=len(false) / max(1, len(state.records) - 1),
        own_gpu_s=own_s, verify_gpu_s=verify_s,
        verification_share=verify_s / (own_s + verify_s) if own_s + verify_s > 0 else 0.0,
        true_progress_bpb=c.baseline_bpb - last if last is not None else 0.0,
        best_true_found_bpb=min(found, default=c.baseline_bpb),
        entries=swarm.entries, mints=swarm.mints, refused_mints=swarm.refused, minted_ucr=state.total_minted_ucr,
        records_per_day=max(0, len(state.records) - 1) * 24 / c.hours,
        gain_error_median=gain_error(state, swarm.truth), paired_rounds=swarm.paired_rounds,
        parent_runs=swarm.parent_runs)


def gain_error(state: State, truth: dict[bytes, float | None]) -> float | None:
    """Median of |reported - true| / true gain over the records that are real gains (true > 0)."""
    errors = []
    for before, row in zip(state.records, state.records[1:]):
        new, old = truth[row.claim], truth[before.claim]
        if new is None or old is None or row.prev is None or not new < old:
            continue
        errors.append(abs((row.prev - row.value) - (old - new)) / (old - new))
    return statistics.median(errors) if errors else None


def _identity(name: bytes) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"autoswarm/sim\x00" + name).digest())
