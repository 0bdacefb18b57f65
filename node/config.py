"""The node's configuration: one frozen dataclass built from the command line, the environment
and `HOME/config.toml`, in that order of precedence.

The config file (node/configfile.py) is written on first run from DEFAULT_TOML (every key present
and commented), so a person reads what can be changed where it is changed. Reading is strict: an
unknown section or key, a wrong type or a value out of range is a ConfigError naming the file,
the key and the rule, which the CLI prints as one line. Nothing here touches the ledger, the trainer or a GPU.
"""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ledger.bodies import MAX_ROUND_INDEX
from ledger.errors import LedgerError
from ledger.keys import parse_node_id
from ledger.spec import SwarmSpec
from swarm.errors import SwarmError
from swarm.protocol import check_addr

from node.configfile import CONFIG_FILE, ensure_config_file, read_config_file
from node.errors import ConfigError
from node.home import default_home

MAX_BUDGET_S = 24 * 3600  # the swarm spec's own bound on time_budget_s
MAX_AGENT_COMMAND_CHARS = 8192
MAX_FIXED_STEPS = 1_000_000    # [research] steps: far above what any budget trains
PROPOSERS = ("bandit", "tpe")   # [research] proposer: node/research/proposers.py NAMES (a test keeps them equal)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    command: str                 # "run" | "status"
    home: Path
    profile: str                 # "auto" | "cpu" | "gpu"
    gpu_budget_s: int
    cpu_budget_s: int
    max_experiments: int | None  # own experiments this process runs, then it stops; None: forever
    seed: int
    frozen_constants: tuple[str, ...]
    machine_lock: Path | None
    machine_slots: int              # trainers the nodes sharing machine_lock run at once
    calibration_runs: int
    swarm_name: str
    noise_bpb_cpu: float
    noise_bpb_gpu: float
    record_ucr_per_bpb: int
    verify_ucr: int
    verifiers: tuple[str, ...]   # node ids trusted from genesis besides our own verifier key
    quorum: int
    admit: str                   # "earned" | "none"
    listen: str
    advertise: str
    bootstrap: tuple[str, ...]
    api_listen: str
    refresh_s: float
    waves: bool = False
    reference_class: str = ""
    screening_classes: tuple[str, ...] = ()
    proposer: str = "bandit"     # [research] proposer: one of PROPOSERS
    experiments: bool = True     # [research] experiments: false runs no experiments of our own proposer
    fixed_steps: int | None = None  # [research] steps: each timed run trains exactly this many; None: the budget
    market_offer: bool = True
    market_price_ucr_per_gpu_s: int = 100
    market_spot_check_rate: float = 0.1
    market_accept_window_s: float = 0.3
    market_quorum: int = 2
    admit_keys: tuple[str, ...] = ()  # node ids the creator admits by hand
    agent_command: str = ""      # [agent] command: a coding agent per worker (node/research/agentdriver.py)
    agent_timeout_s: int = 1800
    agent_name: str = "agent"
    max_rounds: int = 6          # [swarm] max_rounds, record_fdr, noise_dof: the spec's paired test
    record_fdr: float = 0.01
    noise_dof: int = 16
    stranger_quota_bytes: int = 512 << 20  # strangers' entries stored (swarm PeerConfig.stranger_quota_bytes)

    def budget_s(self, device: str) -> int:
        return self.gpu_budget_s if device == "cuda" else self.cpu_budget_s

    def noise_bpb(self, device: str) -> float:
        return self.noise_bpb_gpu if device == "cuda" else self.noise_bpb_cpu

    def admitted_keys(self) -> frozenset[bytes]:
        """The public keys of `admit_keys` (checked when the config was read)."""
        return frozenset(parse_node_id(text) for text in self.admit_keys)

    def spec_trust_fields(self) -> dict[str, int | float]:
        """What `admit` and the paired test's settings put in the spec of a swarm this node creates:
        with "none", no key earns trust. Only values other than the spec's defaults, so a swarm made
        with the defaults keeps its name (node/home.py's slug hashes these fields)."""
        fields: dict[str, int | float] = {"trust_replays": 0} if self.admit == "none" else {}
        defaults = SwarmSpec.__dataclass_fields__
        for name in ("max_rounds", "record_fdr", "noise_dof"):
            if getattr(self, name) != defaults[name].default:
                fields[name] = getattr(self, name)
        return fields

    def max_steps(self, device: str, budget_s: int) -> int:
        """The max_steps of this device's class in the spec of a swarm this node creates."""
        return max_steps_for(device, budget_s)


# Steps per second no program of a class comes near, times the spec's budget: the spec's max_steps
# (ledger/plausible.py refuses claims of more). An agent edits the batch and the model, so this
# bounds a training step's floor, not the genesis program's rate. On the 2-core VM's CPU the
# genesis train.py ran 41.6 steps/s at best (synthetic data, docs/benchmarks.md) and a minimal edit
# (depth 1, width 16, 128 tokens a step) planned 66 steps/s from its first timed steps (docs/node.md):
# 1000 is 15x that. On a GPU a step is at least a few kernel launches and a sync per optimizer
# (about 1 ms; not measured here: no GPU was lent), against autoresearch's ~3 steps/s of 2^19 tokens.
MAX_STEPS_PER_S = {"cpu": 1000, "cuda": 1000}


def max_steps_for(device: str, budget_s: int) -> int:
    """The spec's max_steps for a class of this device under this budget."""
    return MAX_STEPS_PER_S.get(device, MAX_STEPS_PER_S["cuda"]) * budget_s


@dataclass(frozen=True, slots=True)
class Args:
    command: str
    home: Path
    profile: str | None
    budget_s: int | None
    max_experiments: int | None
    bootstrap: tuple[str, ...] = ()
    listen: str | None = None
    api_listen: str | None = None
    advertise: str | None = None
    agent: str | None = None     # --agent: overrides [agent] command


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one readable line instead of usage and exit
        raise ConfigError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_BUDGET_S:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and {MAX_BUDGET_S}")
    return value


# dests of the options `add_run_options` adds: node/cli.py refuses them on other commands
RUN_OPTIONS = ("profile", "budget_s", "max_experiments", "bootstrap", "listen", "advertise", "api_listen", "agent")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of `python -m node [run]`. Their defaults are left out of the namespace
    (SUPPRESS), so the same option on the top parser and on `run` never overwrite each other."""
    no = argparse.SUPPRESS
    p.add_argument("--profile", choices=("auto", "cpu", "gpu"), default=no, help="overrides [research] profile")
    p.add_argument("--budget-s", type=_positive_int, default=no,
                   help="training seconds per experiment (overrides the config's budget for every device)")
    p.add_argument("--max-experiments", type=_positive_int, default=no,
                   help="stop after this many own experiments (and the verifications they need)")
    p.add_argument("--bootstrap", action="append", default=no, metavar="HOST:PORT",
                   help="join the swarm of the node at this address (repeatable; overrides [network] bootstrap)")
    p.add_argument("--listen", default=no, metavar="HOST:PORT",
                   help="the peer port, exactly (overrides [network] listen, whose port moves to the next free one)")
    p.add_argument("--advertise", default=no, metavar="HOST:PORT",
                   help="where other machines reach this node (overrides [network] advertise)")
    p.add_argument("--api", dest="api_listen", default=no, metavar="HOST:PORT", help="overrides [network] api_listen")
    p.add_argument("--agent", default=no, metavar="CMD",
                   help="a coding agent's command to run per worker (overrides [agent] command; docs/agents.md)")


def run_args(a: argparse.Namespace, command: str, home: Path) -> Args:
    """Args from a namespace `add_run_options` filled; a malformed address is a ConfigError."""
    bootstrap = tuple(getattr(a, "bootstrap", ()))
    listen, api_listen, advertise = (getattr(a, k, None) for k in ("listen", "api_listen", "advertise"))
    flags = [("--bootstrap", v, _is_addr) for v in bootstrap] + [
        ("--listen", listen, _is_listen), ("--api", api_listen, _is_listen), ("--advertise", advertise, _is_addr)]
    for flag, value, rule in flags:
        if value is not None and not rule(value):
            raise ConfigError(f"python -m node: {flag} {value!r} is not HOST:PORT (for example 10.0.0.5:7400)")
    return Args(command=command, home=home, profile=getattr(a, "profile", None), budget_s=getattr(a, "budget_s", None),
                max_experiments=getattr(a, "max_experiments", None), bootstrap=bootstrap, listen=listen,
                api_listen=api_listen, advertise=advertise, agent=getattr(a, "agent", None))


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> Args:
    """The run options alone (`python -m node [run] ...`), for tools that build a NodeConfig
    without the whole command line; node/cli.py parses every command."""
    p = _Parser(prog="python -m node")
    p.add_argument("command", nargs="?", default="run", choices=("run", "status"))
    p.add_argument("--home", type=Path, default=None)
    add_run_options(p)
    a = p.parse_args(list(argv))
    return run_args(a, a.command, default_home(env) if a.home is None else a.home.expanduser().absolute())


def _is_addr(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        check_addr(value)
    except SwarmError:
        return False
    return True


def _is_listen(value: Any) -> bool:
    """HOST:PORT to bind; unlike a peer's address, port 0 (any free port) is fine."""
    if not isinstance(value, str) or len(value) > 255:
        return False
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and 0 <= int(port) <= 65535 and _is_addr(f"{host}:1")


def _is_node_id(value: Any) -> bool:
    try:
        parse_node_id(value)
    except (LedgerError, TypeError, ValueError):
        return False
    return True


# -- the file


def _check(path: Path, section: str, key: str, value: Any, kind: type, rule: Callable[[Any], bool], says: str) -> Any:
    where = f"{path}: [{section}] {key}"
    # bool is an int in Python; a TOML `true` is never a number here
    if kind is float and type(value) is int:
        value = float(value)
    if type(value) is not kind:
        raise ConfigError(f"{where} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    if not rule(value):
        raise ConfigError(f"{where} = {value!r}: {says}")
    return value


def _check_list(path: Path, section: str, key: str, value: Any, rule: Callable[[Any], bool], what: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > 256 or not all(rule(v) for v in value):
        raise ConfigError(f"{path}: [{section}] {key} must be a list of {what}, got {value!r}"[:300])
    return value


def _is_class(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum()


def _constant_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.isidentifier() for v in value)


def _admit(path: Path, value: Any) -> str:
    if value == "auto":  # removed: any fresh key that asked became a trusted verifier (issue 12)
        raise ConfigError(f'{path}: [swarm] admit = "auto" is no longer supported: it made any key that asked a '
                          'trusted verifier. Write admit = "earned" (keys earn trust by agreeing replays) or '
                          'admit = "none", and list the node ids to trust by hand in [swarm] admit_keys')
    return str(_check(path, "swarm", "admit", value, str, lambda v: v in ("earned", "none"), "must be earned or none"))


def _agent_command(flag: str | None, path: Path, value: Any) -> str:
    """--agent or [agent] command: one line of shell, without NUL (empty: no agent)."""
    if flag is not None:
        if not 0 < len(flag) <= MAX_AGENT_COMMAND_CHARS or "\0" in flag:
            raise ConfigError(f"python -m node: --agent must be a command line of 1 to {MAX_AGENT_COMMAND_CHARS} "
                              "characters")
        return flag
    return str(_check(path, "agent", "command", value, str,
                      lambda v: len(v) <= MAX_AGENT_COMMAND_CHARS and "\0" not in v,
                      f"must be a command line of at most {MAX_AGENT_COMMAND_CHARS} characters, or empty"))


def build_config(args: Args, file: Mapping[str, Mapping[str, Any]], path: Path) -> NodeConfig:
    r, s, n, d, m = file["research"], file["swarm"], file["network"], file["display"], file["market"]
    ag = file["agent"]

    def budget(key: str) -> int:
        return int(_check(path, "research", key, r[key], int, lambda v: 1 <= v <= MAX_BUDGET_S,
                          f"must be 1 to {MAX_BUDGET_S} seconds"))

    def noise(key: str) -> float:
        return float(_check(path, "swarm", key, s[key], float, lambda v: math.isfinite(v) and 0 <= v < 1,
                            "must be at least 0 and below 1"))

    profile = args.profile or _check(path, "research", "profile", r["profile"], str,
                                     lambda v: v in ("auto", "cpu", "gpu"), "must be auto, cpu or gpu")
    frozen = r["frozen_constants"]
    if not _constant_names(frozen):
        raise ConfigError(f"{path}: [research] frozen_constants must be a list of Python names")
    if r["screening_classes"] and not r["reference_class"]:
        raise ConfigError(f"{path}: [research] screening_classes needs a reference_class to confirm their winners on")
    return NodeConfig(
        command=args.command,
        home=args.home,
        profile=profile,
        gpu_budget_s=args.budget_s or budget("gpu_budget_s"),
        cpu_budget_s=args.budget_s or budget("cpu_budget_s"),
        max_experiments=args.max_experiments,
        seed=_check(path, "research", "seed", r["seed"], int, lambda v: 0 <= v < 2**63, "must be 0 to 2**63-1"),
        frozen_constants=tuple(frozen),
        calibration_runs=_check(path, "research", "calibration_runs", r["calibration_runs"], int,
                                lambda v: 0 <= v <= 16, "must be 0 to 16"),
        machine_lock=Path(lock) if (lock := _check(path, "research", "machine_lock", r["machine_lock"], str,
                                                  lambda v: len(v) < 4096 and "\0" not in v,
                                                  "must be a file path or empty")) else None,
        machine_slots=_check(path, "research", "machine_slots", r["machine_slots"], int, lambda v: 1 <= v <= 64,
                             "must be 1 to 64"),
        waves=_check(path, "research", "waves", r["waves"], bool, lambda v: True, "must be true or false"),
        reference_class=_check(path, "research", "reference_class", r["reference_class"], str,
                               lambda v: v == "" or _is_class(v), "must be a platform class name or empty"),
        screening_classes=tuple(_check_list(path, "research", "screening_classes", r["screening_classes"], _is_class,
                                            "platform class names")),
        proposer=_check(path, "research", "proposer", r["proposer"], str, lambda v: v in PROPOSERS,
                        f"must be one of {', '.join(PROPOSERS)}"),
        experiments=_check(path, "research", "experiments", r["experiments"], bool, lambda v: True,
                           "must be true or false"),
        fixed_steps=_check(path, "research", "steps", r["steps"], int, lambda v: 0 <= v <= MAX_FIXED_STEPS,
                           f"must be 0 to {MAX_FIXED_STEPS}") or None,
        swarm_name=_check(path, "swarm", "name", s["name"], str, lambda v: 0 < len(v) <= 64,
                          "must be 1 to 64 characters"),
        noise_bpb_cpu=noise("noise_bpb_cpu"),
        noise_bpb_gpu=noise("noise_bpb_gpu"),
        record_ucr_per_bpb=_check(path, "swarm", "record_ucr_per_bpb", s["record_ucr_per_bpb"], int,
                                  lambda v: 0 <= v <= 10**15, "must be 0 to 10**15"),
        verify_ucr=_check(path, "swarm", "verify_ucr", s["verify_ucr"], int, lambda v: 0 <= v <= 10**12,
                          "must be 0 to 10**12"),
        verifiers=tuple(_check_list(path, "swarm", "verifiers", s["verifiers"], _is_node_id, "node ids")),
        quorum=_check(path, "swarm", "quorum", s["quorum"], int, lambda v: 1 <= v <= 64, "must be 1 to 64"),
        admit=_admit(path, s["admit"]),
        max_rounds=_check(path, "swarm", "max_rounds", s["max_rounds"], int, lambda v: 1 <= v <= MAX_ROUND_INDEX + 1,
                          f"must be 1 to {MAX_ROUND_INDEX + 1}"),
        record_fdr=float(_check(path, "swarm", "record_fdr", s["record_fdr"], float, lambda v: 0 < v < 1,
                                "must be above 0 and below 1")),
        noise_dof=_check(path, "swarm", "noise_dof", s["noise_dof"], int, lambda v: 0 <= v <= 10**6,
                         "must be 0 to 1000000"),
        admit_keys=tuple(_check_list(path, "swarm", "admit_keys", s["admit_keys"], _is_node_id, "node ids")),
        listen=args.listen or _check(path, "network", "listen", n["listen"], str, _is_listen, "must be HOST:PORT"),
        advertise=args.advertise or _check(path, "network", "advertise", n["advertise"], str, lambda v: v == "" or _is_addr(v),
                         "must be empty or HOST:PORT"),
        bootstrap=args.bootstrap or tuple(_check_list(path, "network", "bootstrap", n["bootstrap"], _is_addr,
                                                      "HOST:PORT addresses")),
        api_listen=args.api_listen or _check(path, "network", "api_listen", n["api_listen"], str, _is_listen,
                                             "must be HOST:PORT"),
        stranger_quota_bytes=_check(path, "network", "stranger_quota_mib", n["stranger_quota_mib"], int,
                                    lambda v: 16 <= v <= 1 << 24, "must be 16 to 2**24 MiB") << 20,
        refresh_s=_check(path, "display", "refresh_s", d["refresh_s"], float, lambda v: 0.2 <= v <= 60,
                         "must be 0.2 to 60 seconds"),
        market_offer=_check(path, "market", "offer", m["offer"], bool, lambda v: True, "must be true or false"),
        market_price_ucr_per_gpu_s=_check(path, "market", "price_ucr_per_gpu_s", m["price_ucr_per_gpu_s"], int,
                                          lambda v: 1 <= v <= 10**12, "must be 1 to 10**12"),
        market_spot_check_rate=_check(path, "market", "spot_check_rate", m["spot_check_rate"], float,
                                      lambda v: 0 <= v <= 1, "must be 0 to 1"),
        market_accept_window_s=_check(path, "market", "accept_window_s", m["accept_window_s"], float,
                                      lambda v: 0 <= v <= 600, "must be 0 to 600 seconds"),
        market_quorum=_check(path, "market", "quorum", m["quorum"], int, lambda v: 1 <= v <= 64, "must be 1 to 64"),
        agent_command=_agent_command(args.agent, path, ag["command"]),
        agent_timeout_s=_check(path, "agent", "timeout_s", ag["timeout_s"], int, lambda v: 1 <= v <= MAX_BUDGET_S,
                               f"must be 1 to {MAX_BUDGET_S} seconds"),
        agent_name=_check(path, "agent", "name", ag["name"], str,
                          lambda v: 0 < len(v) <= 32 and v.replace("-", "").replace("_", "").isalnum(),
                          "must be 1 to 32 of A-Za-z0-9_-"),
    )


def configure(args: Args) -> NodeConfig:
    """Arguments, then the config file (created with defaults for `run`), as one NodeConfig."""
    path = args.home / CONFIG_FILE
    if args.command == "run":
        ensure_config_file(args.home)
    elif not path.exists():
        raise ConfigError(f"{args.home}: no node here yet (no {CONFIG_FILE}); start one with "
                          f"`python -m node --home {args.home}`")
    return build_config(args, read_config_file(path), path)


def load_config(argv: Sequence[str], env: Mapping[str, str] = os.environ) -> NodeConfig:
    return configure(parse_args(argv, env))
