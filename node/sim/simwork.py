"""A simulated node with many workers on a landscape of train.py's constants: policies compared.

Pure like node/sim/simulate.py, which it drives through its Explorer hook: the real fold, verification
policy, proposer (node/research/proposer.py), waves (node/research/waves.py) and screening (node/research/screening.py) run on
a stand-in train.py whose only meaning is its constants.

Theory of operation. The fake trainer: a program's true val_bpb is a floor plus, for each constant,
a weight times the squared log-distance of its value from the class's optimum, plus one interaction
(the learning rate's optimum moves with the batch size), as in the hyperparameter sweeps of the
anchors. A value more than CRASH_RATIO from its optimum crashes the run. A cheaper class (a smaller
GPU: fewer steps in the same time budget) has a val_bpb offset, noisier runs and optima shifted a
little (short runs like higher learning rates), so its winners do not all transfer.

Policies, per class: "independent" (every idle worker draws from the proposer, as research.py
does today) or "wave" (idle workers take the next proposal of a shared WaveQueue; an empty or
stale queue is refilled by plan_wave with n = the class's workers). `two_tier`: a worker of the
reference class first runs node/screening.next_confirmation, then its own policy. Every worker
verifies first, as research.py does (node/sim/simulate.py). Keys are tracked per class, so a
reference worker may run a program a cheap worker ran.

Issue 16 adds: policy "tpe" (Optuna's TPE behind node/research/proposers.py, told every result of
its class), the "rich" landscape (node/sim/richland.py: interactions and code-level edits), noise
split into a training-seed part and an evaluation part (simulate.py draws their sum), and
`machines`: the workers split over that many nodes, each with its own proposer, running set and
wave queue. A node sees another's program only once its claim is published, unless `leases` is on
(node/research/leases.py: a node announces what it runs when it starts it), so without leases two
nodes can run one program at once: `duplicates` counts experiments whose program was claimed or
running anywhere when they started.
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field

from node.research import screening
from node.errors import NoProposal
from node.research.history import ClaimRecord, History
from node.research.program import parse_program, parse_summary, summarize
from node.research.proposer import Proposal, Settings, Trial
from node.research.proposers import Proposer, make
from node.sim.richland import RICH_TRAIN_PY, rich_bpb
from node.sim.simulate import BASELINE_COMMIT, CLASS, Outcome, SimConfig, _Swarm, simulate
from node.research.waves import WaveQueue, WaveSettings, plan_wave

CHEAP_CLASS = "sim-cheap"
CRASH_RATIO = 6.0     # a constant this many times off its optimum (either way) crashes the run
SIM_TRAIN_PY = '''"""A stand-in train.py for the simulator: only its constants mean anything."""
DEPTH = 8
ASPECT_RATIO = 64
MATRIX_LR = 0.04
EMBEDDING_LR = 0.6
UNEMBEDDING_LR = 0.004
WEIGHT_DECAY = 0.2
WARMDOWN_RATIO = 0.5
TOTAL_BATCH_SIZE = 2**19
ADAM_BETA1 = 0.8
'''
# constant -> (optimum / genesis value, weight in bpb per squared natural-log distance)
SHAPE: dict[str, tuple[float, float]] = {
    "DEPTH": (1.5, 0.03), "ASPECT_RATIO": (1.0, 0.02), "MATRIX_LR": (1.6, 0.05), "EMBEDDING_LR": (0.7, 0.02),
    "UNEMBEDDING_LR": (2.0, 0.01), "WEIGHT_DECAY": (0.5, 0.008), "WARMDOWN_RATIO": (1.4, 0.03),
    "TOTAL_BATCH_SIZE": (0.5, 0.02), "ADAM_BETA1": (1.1, 0.1),
}
INTERACTION_BPB = 0.03   # x ln(MATRIX_LR/opt) x ln(TOTAL_BATCH_SIZE/opt): positive definite with SHAPE
LR_NAMES = ("MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR")


@dataclass(frozen=True, slots=True)
class Tier:
    platform_class: str
    workers: int
    noise_sd_bpb: float = 0.0015  # training-seed noise: another seed, another value
    spec_noise_bpb: float = 0.002
    offset_bpb: float = 0.0      # above the reference class's val_bpb for one program
    lr_shift: float = 1.0        # the learning rates' optima are this many times the reference's
    eval_sd_bpb: float = 0.0     # evaluation noise on top (another sample of validation rows)


@dataclass(frozen=True, slots=True)
class WorkConfig:
    tiers: tuple[Tier, ...] = (Tier(CLASS, 8),)
    policy: str = "independent"          # or "wave", or "tpe"
    two_tier: bool = False
    reference_class: str = CLASS
    hours: float = 12.0
    floor_bpb: float = 0.95              # the reference class's best possible val_bpb
    quorum: int = 2
    join_window_s: float = 30.0
    proposer_tries: int = 200            # the proposer's draws before it gives up (research.py: 200)
    wave_size: int | None = None         # proposals per wave; None: the class's workers
    landscape: str = "bowl"              # or "rich" (node/sim/richland.py)
    machines: int = 1                    # nodes the workers are split over (round robin)
    leases: bool = False                 # nodes see each other's running programs at once

    def __post_init__(self) -> None:
        if self.policy not in ("independent", "wave", "tpe"):
            raise ValueError(f"policy must be independent, wave or tpe, not {self.policy!r}")
        if self.landscape not in ("bowl", "rich") or self.machines < 1:
            raise ValueError("landscape must be bowl or rich, and machines at least 1")
        if not self.tiers or any(t.workers < 1 for t in self.tiers) or \
                len({t.platform_class for t in self.tiers}) != len(self.tiers):
            raise ValueError("tiers need distinct classes and at least one worker each")


def cheap_tier(workers: int) -> Tier:
    """A class about 3x cheaper: fewer steps in the budget (higher val_bpb), twice the noise."""
    return Tier(CHEAP_CLASS, workers, noise_sd_bpb=0.003, spec_noise_bpb=0.004, offset_bpb=0.08, lr_shift=1.2)


_GENESIS = {c.name: float(c.value) for c in parse_program(SIM_TRAIN_PY).constants}
_RICH_GENESIS = {c.name: float(c.value) for c in parse_program(RICH_TRAIN_PY).constants}


def genesis_of(landscape: str) -> tuple[str, dict[str, float]]:
    return (RICH_TRAIN_PY, dict(_RICH_GENESIS)) if landscape == "rich" else (SIM_TRAIN_PY, dict(_GENESIS))


def true_value(landscape: str, values: dict[str, float], tier: Tier, floor_bpb: float) -> float | None:
    if landscape == "rich":
        return rich_bpb(values, floor_bpb=floor_bpb, offset_bpb=tier.offset_bpb, lr_shift=tier.lr_shift)
    return landscape_bpb(values, tier, floor_bpb)


def landscape_bpb(values: dict[str, float], tier: Tier, floor_bpb: float) -> float | None:
    """The fake trainer: a program's true val_bpb on a class; None: the run crashes."""
    total = floor_bpb + tier.offset_bpb
    logs: dict[str, float] = {}
    for name, (ratio, weight) in SHAPE.items():
        value = values.get(name, _GENESIS[name])
        opt = _GENESIS[name] * ratio * (tier.lr_shift if name in LR_NAMES else 1.0)
        if value <= 0:
            return None
        logs[name] = math.log(value / opt)
        if abs(logs[name]) > math.log(CRASH_RATIO):
            return None
        total += weight * logs[name] ** 2
    return total + INTERACTION_BPB * logs["MATRIX_LR"] * logs["TOTAL_BATCH_SIZE"]


@dataclass(slots=True)
class _Explorer:
    config: WorkConfig
    rng: random.Random
    sources: dict[bytes, str] = field(default_factory=dict)
    summaries: dict[bytes, str] = field(default_factory=dict)
    values: dict[bytes, dict[str, float]] = field(default_factory=dict)
    history: History = field(default_factory=History)      # every claim: node/sim/simulate.py prunes its own
    trials: dict[str, list[Trial]] = field(default_factory=dict)
    keys: dict[str, set[str]] = field(default_factory=dict)  # per class: run or running
    queues: dict[str, WaveQueue] = field(default_factory=dict)
    kinds: dict[bytes, str] = field(default_factory=dict)   # commit -> "own", "wave" or "confirm"
    claimed: dict[str, set[str]] = field(default_factory=dict)   # per class: keys of published claims
    running: dict[tuple[int, str], set[str]] = field(default_factory=dict)  # (machine, class) -> keys
    started: dict[bytes, tuple[int, str]] = field(default_factory=dict)     # commit -> (machine, key)
    proposers: dict[tuple[int, str], Proposer] = field(default_factory=dict)
    duplicates: int = 0
    proposed: int = 0

    def __post_init__(self) -> None:
        source, values = genesis_of(self.config.landscape)
        self.sources[BASELINE_COMMIT], self.values[BASELINE_COMMIT] = source, values

    def _tried(self, machine: int, platform_class: str) -> set[str]:
        """What a node knows is taken: every published claim, its own running programs, and with
        leases every node's running programs."""
        out = set(self.claimed.get(platform_class, set()))
        for (m, cls), keys in self.running.items():
            if cls == platform_class and (m == machine or self.config.leases):
                out |= keys
        return out

    def _proposer(self, machine: int, platform_class: str) -> Proposer:
        if (machine, platform_class) not in self.proposers:
            tpe = self.config.policy == "tpe"   # the bandit draws no seed: its runs stay as they were
            self.proposers[(machine, platform_class)] = make(
                "tpe" if tpe else "bandit", genesis_source=self.sources[BASELINE_COMMIT], profile="gpu",
                seed=self.rng.randrange(2**31) if tpe else 0, settings=Settings(max_tries=self.config.proposer_tries))
        return self.proposers[(machine, platform_class)]

    def classes(self) -> list[str]:
        return [t.platform_class for t in self.config.tiers for _ in range(t.workers)]

    def tier(self, platform_class: str) -> Tier:
        return next(t for t in self.config.tiers if t.platform_class == platform_class)

    def spec_noise(self) -> dict[str, float]:
        return {t.platform_class: t.spec_noise_bpb for t in self.config.tiers}

    def noise_sd(self, platform_class: str) -> float:
        tier = self.tier(platform_class)
        return math.hypot(tier.noise_sd_bpb, tier.eval_sd_bpb)

    def true_bpb(self, commit: bytes, platform_class: str) -> float | None:
        return true_value(self.config.landscape, self.values[commit], self.tier(platform_class), self.config.floor_bpb)

    def summary(self, commit: bytes) -> str:
        return self.summaries.get(commit) or summarize(None, self.sources[commit])

    def experiment(self, swarm: _Swarm, node: int, platform_class: str, parent: bytes) -> bytes | None:
        source = self.sources[parent]
        c = self.config
        machine = node % c.machines
        tried = self._tried(machine, platform_class)
        proposal, kind = None, "own"
        if c.two_tier and platform_class == c.reference_class:
            others = [t.platform_class for t in c.tiers if t.platform_class != c.reference_class]
            found = screening.next_confirmation(swarm.state, self.history, source, reference_class=platform_class,
                                                screening_classes=others, busy=tried)
            if found is not None:
                proposal, kind = found.proposal, "confirm"
        trials = self.trials.get(platform_class, [])
        if proposal is None and c.policy == "wave":
            queue = self.queues.setdefault(f"{machine}/{platform_class}", WaveQueue())
            parent_key = parse_program(source).key
            proposal = queue.take(parent_key, tried)
            if proposal is None:
                try:
                    queue.load(plan_wave(source, profile="gpu", trials=trials, tried=tried,
                                         n=c.wave_size or self._workers(machine, platform_class), rng=self.rng,
                                         settings=WaveSettings(proposer=Settings(max_tries=c.proposer_tries))))
                except NoProposal:
                    return None
                proposal = queue.take(parent_key, tried)
            kind = "wave"
        if proposal is None:
            try:
                proposal = self._proposer(machine, platform_class).propose(source, trials=trials, tried=tried,
                                                                           rng=self.rng)
            except NoProposal:
                return None
        return self._commit(parent, proposal, kind, machine, platform_class)

    def _workers(self, machine: int, platform_class: str) -> int:
        nodes = [i for i, cls in enumerate(self.classes()) if cls == platform_class]
        return max(1, sum(1 for i in nodes if i % self.config.machines == machine))

    def _commit(self, parent: bytes, proposal: Proposal, kind: str, machine: int, platform_class: str) -> bytes:
        commit = hashlib.sha1(b"sim-work-%d" % len(self.sources)).digest()
        self.sources[commit] = proposal.source
        self.values[commit] = {**self.values[parent], **{n: float(new) for n, (_, new) in proposal.changes.items()}}
        self.summaries[commit] = summarize(self.sources[parent], proposal.source)
        self.kinds[commit] = kind
        taken = self.claimed.get(platform_class, set()).union(
            *(keys for (_, cls), keys in self.running.items() if cls == platform_class))
        self.duplicates += proposal.key in taken
        self.proposed += 1
        self.running.setdefault((machine, platform_class), set()).add(proposal.key)
        self.keys.setdefault(platform_class, set()).add(proposal.key)
        self.started[commit] = (machine, proposal.key)
        return commit

    def finished(self, swarm: _Swarm, record: ClaimRecord) -> None:
        self.history.add(record)
        body = record.body
        if body.commit in self.started:
            machine, key = self.started.pop(body.commit)
            self.running.get((machine, body.platform_class), set()).discard(key)
            self.claimed.setdefault(body.platform_class, set()).add(key)
            for (_, cls), proposer in self.proposers.items():
                if cls == body.platform_class:   # every node's optimizer learns every published result
                    proposer.observe(key, self.values[body.commit], body.val_bpb)
        if body.parent is None:
            return
        changes, _ = parse_summary(body.diff_summary)
        parent_value = screening.value_in_class(swarm.state, self.history, body.parent, body.platform_class)
        delta = None if body.val_bpb is None or parent_value is None else body.val_bpb - parent_value
        self.trials.setdefault(body.platform_class, []).append(Trial(changes, delta))


@dataclass(frozen=True, slots=True)
class WorkFigures:
    """Per simulated node: the reference class's path, and what the workers ran."""

    best_true_bpb: float          # true val_bpb of the reference class's last record at the end
    progress_bpb: float           # the genesis program's true value minus that
    hours_to_target: float | None  # first record within target of the floor; None: never
    records: int
    experiments: int
    confirmations: int            # reference-class runs of screened winners
    confirmed: int                # of those, claims that became records
    waves: int
    duplicates: int = 0           # experiments whose program was claimed or running anywhere at their start
    proposed: int = 0             # experiments the explorer started


def simulate_work(config: WorkConfig, rng: random.Random, target_bpb: float = 0.01) -> tuple[Outcome, WorkFigures]:
    """One simulated node; `target_bpb`: how close to the reference class's floor counts as reached."""
    nodes = sum(t.workers for t in config.tiers)
    explorer = _Explorer(config, rng)
    sim = SimConfig(nodes=nodes, hours=config.hours, quorum=min(config.quorum, nodes),
                    join_window_s=config.join_window_s, baseline_bpb=config.floor_bpb)
    outcome = simulate(sim, rng, explorer=explorer)
    ref = config.reference_class
    reference = explorer.tier(ref)
    start = true_value(config.landscape, genesis_of(config.landscape)[1], reference, config.floor_bpb)
    rows = [(t, row) for t, row in outcome.record_times if row.platform_class == ref]
    truths = [(t, explorer.true_bpb(row.commit, ref)) for t, row in rows]
    if start is None or any(v is None for _, v in truths):
        raise AssertionError("the genesis program and every record run")  # a bug here, not peer input
    best = next((v for _, v in reversed(truths) if v is not None), start)
    reached = next((t / 3600 for t, v in truths if v is not None and v <= config.floor_bpb + target_bpb), None)
    claims = outcome.state.claims
    ref_commits = {info.commit for info in claims.values() if info.platform_class == ref}
    confirmed_commits = {c for c, k in explorer.kinds.items() if k == "confirm" and c in ref_commits}
    return outcome, WorkFigures(
        best_true_bpb=best, progress_bpb=start - best, hours_to_target=reached, records=len(rows),
        experiments=outcome.figures.experiments,
        confirmations=len(confirmed_commits),
        confirmed=sum(1 for _, row in rows if row.commit in confirmed_commits),
        waves=sum(q.waves for q in explorer.queues.values()), duplicates=explorer.duplicates,
        proposed=explorer.proposed)
