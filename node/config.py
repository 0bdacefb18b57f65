"""The node's configuration: one frozen dataclass built from the command line, the environment
and `HOME/config.toml`, in that order of precedence.

The config file is written on first run from DEFAULT_TOML (every key present and commented), so
a person reads what can be changed where it is changed. Reading is strict: an unknown section or
key, a wrong type or a value out of range is a ConfigError naming the file, the key and the
rule, which the CLI prints as one line. Nothing here touches the ledger, the trainer or a GPU.
"""
from __future__ import annotations

import argparse
import math
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from node.errors import ConfigError

CONFIG_FILE = "config.toml"
MAX_BUDGET_S = 24 * 3600  # the swarm spec's own bound on time_budget_s

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
# data-order seed of this node's own experiments; one seed keeps its results comparable
seed = 0
# train.py constants the proposer never edits: they change how the budget is measured, not the model
frozen_constants = ["UNTIMED_STEPS", "PLAN_AFTER_STEPS"]

[swarm]
# name written into the solo swarm's spec
name = "solo"
# per platform class: the tolerance between verifiers and the margin a record must beat the best by
noise_bpb_cpu = 0.005
noise_bpb_gpu = 0.002
# credits minted for a record, in micro-credits per 1.0 of val_bpb gained (1 credit = 1_000_000)
record_ucr_per_bpb = 1_000_000_000
# micro-credits a verifier mints for one verification run
verify_ucr = 100_000

[display]
# seconds between refreshes of the status line on a terminal
refresh_s = 2.0
"""


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
    swarm_name: str
    noise_bpb_cpu: float
    noise_bpb_gpu: float
    record_ucr_per_bpb: int
    verify_ucr: int
    refresh_s: float

    def budget_s(self, device: str) -> int:
        return self.gpu_budget_s if device == "cuda" else self.cpu_budget_s

    def noise_bpb(self, device: str) -> float:
        return self.noise_bpb_gpu if device == "cuda" else self.noise_bpb_cpu


@dataclass(frozen=True, slots=True)
class Args:
    command: str
    home: Path
    profile: str | None
    budget_s: int | None
    max_experiments: int | None


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


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> Args:
    p = _Parser(prog="python -m node", description="Run an autoswarm node (default) or show its state.")
    p.add_argument("command", nargs="?", default="run", choices=("run", "status"),
                   help="run (default): research forever; status: the ledger's state as JSON")
    p.add_argument("--home", type=Path, default=None, help="state folder (default $AUTOSWARM_HOME or ~/.autoswarm)")
    p.add_argument("--profile", choices=("auto", "cpu", "gpu"), default=None, help="overrides [research] profile")
    p.add_argument("--budget-s", type=_positive_int, default=None,
                   help="training seconds per experiment (overrides the config's budget for every device)")
    p.add_argument("--max-experiments", type=_positive_int, default=None,
                   help="stop after this many own experiments (and the verifications they need)")
    a = p.parse_args(list(argv))
    home = a.home if a.home is not None else Path(env.get("AUTOSWARM_HOME") or Path.home() / ".autoswarm")
    return Args(command=a.command, home=home.expanduser().absolute(), profile=a.profile, budget_s=a.budget_s,
                max_experiments=a.max_experiments)


# -- the file


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


def _constant_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.isidentifier() for v in value)


def build_config(args: Args, file: Mapping[str, Mapping[str, Any]], path: Path) -> NodeConfig:
    r, s, d = file["research"], file["swarm"], file["display"]

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
    return NodeConfig(
        command=args.command,
        home=args.home,
        profile=profile,
        gpu_budget_s=args.budget_s or budget("gpu_budget_s"),
        cpu_budget_s=args.budget_s or budget("cpu_budget_s"),
        max_experiments=args.max_experiments,
        seed=_check(path, "research", "seed", r["seed"], int, lambda v: 0 <= v < 2**63, "must be 0 to 2**63-1"),
        frozen_constants=tuple(frozen),
        swarm_name=_check(path, "swarm", "name", s["name"], str, lambda v: 0 < len(v) <= 64,
                          "must be 1 to 64 characters"),
        noise_bpb_cpu=noise("noise_bpb_cpu"),
        noise_bpb_gpu=noise("noise_bpb_gpu"),
        record_ucr_per_bpb=_check(path, "swarm", "record_ucr_per_bpb", s["record_ucr_per_bpb"], int,
                                  lambda v: 0 <= v <= 10**15, "must be 0 to 10**15"),
        verify_ucr=_check(path, "swarm", "verify_ucr", s["verify_ucr"], int, lambda v: 0 <= v <= 10**12,
                          "must be 0 to 10**12"),
        refresh_s=_check(path, "display", "refresh_s", d["refresh_s"], float, lambda v: 0.2 <= v <= 60,
                         "must be 0.2 to 60 seconds"),
    )


def load_config(argv: Sequence[str], env: Mapping[str, str] = os.environ) -> NodeConfig:
    """Arguments, then the config file (created with defaults for `run`), as one NodeConfig."""
    args = parse_args(argv, env)
    path = args.home / CONFIG_FILE
    if args.command == "run":
        ensure_config_file(args.home)
    elif not path.exists():
        raise ConfigError(f"{args.home}: no node here yet (no {CONFIG_FILE}); start one with `python -m node`")
    return build_config(args, read_config_file(path), path)
