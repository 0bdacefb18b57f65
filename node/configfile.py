"""The node's config file on disk, `HOME/config.toml`: its commented defaults (DEFAULT_TOML, every
key present, so a person reads what can be changed where it is changed), written once on first
run and never rewritten, and reading it into sections merged over those defaults. An unknown
section or key is a ConfigError here; node/config.py checks each value's type and range.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from node.errors import ConfigError

CONFIG_FILE = "config.toml"

DEFAULT_TOML = """\
# autoswarm node configuration. Every key is optional: delete one to get its default back.
# Changing a [swarm] value or a budget starts a new solo swarm (its spec pins them); the old one
# stays under swarms/ in this folder.

[research]
# cpu | gpu | auto: auto runs one worker per local NVIDIA GPU, or one CPU worker when there is none
profile = "auto"
# training seconds per experiment on a GPU (autoresearch's five minutes)
gpu_budget_s = 300
# training seconds per experiment for the tiny CPU model: short, so a laptop makes progress
cpu_budget_s = 30
# 0: each run of this node's own (baseline, experiments, submitted commits) trains until the budget
# is spent; N: exactly N steps within the budget, so results compare on a machine whose speed
# changes with its load (the demo; the budget then only bounds a run)
steps = 0
# data-order seed of this node's own experiments; one seed keeps its results comparable
seed = 0
# train.py constants the proposer never edits: they change how the budget is measured, not the model
frozen_constants = ["UNTIMED_STEPS", "PLAN_AFTER_STEPS"]
# extra runs of the genesis train.py with other data seeds, made by the node that creates a swarm:
# their spread is the class's run-to-run noise (`python -m node status`), which records must beat
calibration_runs = 2
# a file that every node sharing this machine's CPU names: they then run one trainer at a time
# (several nodes on one machine, as `python -m node demo` starts). Empty: no lock.
machine_lock = ""
# how many trainers those nodes run at once (the CPU profile trains on one thread: 2 suit 2 cores)
machine_slots = 1
# plan experiments in waves when this node has several workers of a class: a factorial screen of
# one or two constants across them (node/research/waves.py). Off by default: in the simulator it used the
# GPUs more but reached a target later than independent proposals (docs/node.md).
waves = false
# two-tier screening (node/research/screening.py): workers of the screening classes explore cheaply, and a
# worker of the reference class first confirms their winners. Empty: every class explores alone.
reference_class = ""
screening_classes = []
# what proposes this node's own experiments (node/research/proposers.py): "bandit", the built-in
# proposer (one or two constants nudged by fixed factors); "tpe", Optuna's TPE over every editable
# constant, told every counted result. bandit is the default: in the simulator TPE did not reach
# the target sooner (docs/benchmarks.md, research per GPU-hour).
proposer = "bandit"
# false: no experiments of this node's own proposer; the node still runs the baseline, paid jobs,
# verifications and the commits agents submit (a verifier-only node, or one that runs only its
# agent's ideas)
experiments = true

[swarm]
# name written into the solo swarm's spec
name = "solo"
# per platform class: the tolerance between verifiers and the margin a record must beat the best by.
# cpu: 0.04, from the measured run-to-run spread of the tiny model (sd 0.014 over data seeds; the
# evaluation itself adds ~0.001; docs/benchmarks.md). gpu: autoresearch's reported run-to-run noise.
noise_bpb_cpu = 0.04
noise_bpb_gpu = 0.002
# credits minted for a record, in micro-credits per 1.0 of val_bpb gained (1 credit = 1_000_000)
record_ucr_per_bpb = 1_000_000_000
# micro-credits a verifier mints for one verification run
verify_ucr = 100_000

# trusted verifiers besides this node's own, as node ids (`python -m node status` shows a node's id)
verifiers = []
# agreeing verifications that make a claim verified (at most the number of trusted verifiers)
quorum = 1
# the paired test of a claim (ledger/evidence.py): the most paired replays (training seeds) one claim
# gets, the expected share of records that are no real gain, and the degrees of freedom the class's
# noise estimate needs before any claim may become a record (0: the spec's noise_bpb alone; for a
# demo swarm, which would otherwise wait for about a dozen paired replays of several claims)
max_rounds = 6
record_fdr = 0.01
noise_dof = 16
# how other nodes become trusted verifiers of the swarm this node creates (nobody is trusted for asking):
# earned: a key whose replays agree with the trusted verifiers' often enough earns trust, and loses it
#   on one disagreement (the rule every node's ledger applies; right for an open swarm);
# none: only `verifiers` and `admit_keys` verify (a private swarm of machines you control).
admit = "earned"
# node ids this node, as the swarm's creator, admits by hand as verifiers of the class each profiles
# (works with either setting above; unlike `verifiers`, adding one later keeps the same swarm)
admit_keys = []

[network]
# where peers reach this node (host:port). 127.0.0.1 keeps a solo swarm private; listen on 0.0.0.0
# and set `advertise` to a reachable address to let other machines join. When the port is taken
# the node takes the next free one; the port it got is kept for the next start (HOME/peer-port.json).
# Port 0: any free port, another one at every start.
listen = "127.0.0.1:7400"
# the address other machines reach this node at (host:port), when it is not `listen`'s (NAT, 0.0.0.0)
advertise = ""
# addresses of nodes of a swarm to join (host:port); empty: this node creates its own swarm
bootstrap = []
# the local API (AgentHub routes, the node's CLI, the dashboard); keep it on 127.0.0.1
api_listen = "127.0.0.1:0"
# MiB of other nodes' entries this node stores, all strangers together (not our own entries, nor
# those of trusted verifiers and nodes holding credits); past it their entries are refused
stranger_quota_mib = 512

[market]
# offer this node's workers for other users' jobs (credits market; docs/market.md)
offer = true
# the price this node asks, in micro-credits per GPU-second (a CPU worker counts as one GPU)
price_ucr_per_gpu_s = 100
# share of receipts the swarm's trusted verifiers replay; every node must use the same rate
spot_check_rate = 0.1
# seconds a payer waits after the first offer for better ones, before it accepts
accept_window_s = 0.3
# peers that must report holding a payment before this node starts the job (at most; fewer if
# fewer are connected), so a payer who forks its feed cannot pay two executors with one credit
quorum = 2

[agent]
# a command-line coding agent the node runs for each worker (docs/agents.md has the commands for
# Claude Code, Codex and aider): in a scratch folder holding the best commit's train.py and a
# BRIEF.md to follow; the train.py it leaves is checked and queued like `python -m node submit`.
# Empty: no agent (the built-in proposer, and whatever agents submit through the API).
command = ""
# seconds one agent run may take; past it the agent and every process it started are killed
timeout_s = 1800
# its submissions are labelled NAME-WORKER (for example agent-gpu0)
name = "agent"

[display]
# seconds between refreshes of the status line on a terminal
refresh_s = 2.0
"""


def ensure_config_file(home: Path) -> Path:
    """Writes the commented defaults on first run; an existing file is never touched."""
    path = home / CONFIG_FILE
    if not path.exists():
        try:
            home.mkdir(parents=True, exist_ok=True)
            path.write_text(DEFAULT_TOML)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot write the default config: {exc.strerror}") from None
    return path


def read_config_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    defaults = tomllib.loads(DEFAULT_TOML)
    merged: dict[str, dict[str, Any]] = {section: dict(keys) for section, keys in defaults.items()}
    for section, keys in raw.items():
        if section not in defaults or not isinstance(keys, dict):
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(sorted(defaults))})")
        for key, value in keys.items():
            if key not in defaults[section]:
                raise ConfigError(f"{path}: unknown key {key!r} in [{section}]")
            merged[section][key] = value
    return merged
