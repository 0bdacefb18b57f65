"""`python -m trainer run|prepare`: the thin command line over trainer.runner and trainer.prepare.

    python -m trainer run PATH/train.py [--profile cpu|gpu|auto] [--budget-s N] [--steps N] [--horizon N]
                                        [--seed N] [--eval-seed N] [--data DIR] [--parent PATH] [--no-sandbox]
                                        [--keep-work DIR] [--home DIR] [--hide PATH]...
                                        [--compile-cache DIR|none]
    python -m trainer prepare ...            (see trainer/prepare.py)

No sandbox sees the user's home folder, --home (the node home: its key; default $AUTOSWARM_HOME,
else ~/.autoswarm, where the default dataset is prepared too) or any --hide PATH (repeatable).

`run` prints progress on stderr and the result as one JSON object on the last stdout line; it
exits 0 for status ok, 1 for any other status, 2 for bad input (one line on stderr, no traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NoReturn

from trainer.errors import TrainerError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
PR_SET_PDEATHSIG = 1                     # linux/prctl.h


def die_with_parent(env: Mapping[str, str]) -> None:
    """Where the node set AUTOSWARM_PARENT_PID, asks Linux to SIGKILL this process when its parent
    dies (prctl PR_SET_PDEATHSIG), so a node that is SIGKILLed leaves no trainer running; the
    sandboxes die with this process (bubblewrap's --die-with-parent). If the parent is already
    gone, exits at once."""
    from trainer.constants import ENV_PARENT_PID

    want = env.get(ENV_PARENT_PID)
    if not want or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if str(os.getppid()) != want:
        os._exit(EXIT_FAILED)


class BadArguments(TrainerError):
    """The command line cannot be understood."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one readable line instead of usage + exit
        raise BadArguments(message)


@dataclass(frozen=True, slots=True)
class RunConfig:
    candidate: Path
    parent: Path | None
    data: Path | None  # None: the prepared default dataset under the node home
    profile: str
    budget_s: float
    steps: int | None
    horizon: int | None
    seed: int
    eval_seed: int | None
    sandboxed: bool
    home: Path
    keep_work: Path | None
    hidden_paths: tuple[Path, ...] = ()  # --hide, beyond the home and the user's home folder
    compile_cache: Path | None = None  # the root of the base compile caches; None: none

    def __post_init__(self) -> None:
        if not self.budget_s > 0:
            raise BadArguments("--budget-s must be positive")
        if self.steps is not None and self.steps < 1:
            raise BadArguments("--steps must be positive")
        if self.horizon is not None and (self.steps is None or self.horizon < self.steps):
            raise BadArguments("--horizon needs --steps and must be at least --steps")
        if not 0 <= self.seed < 2**63 or not 0 <= (self.eval_seed or 0) < 2**63:
            raise BadArguments("--seed and --eval-seed must be in 0..2**63-1")
        if self.profile not in ("cpu", "gpu", "auto"):
            raise BadArguments("--profile must be cpu, gpu or auto")


def parse_run(argv: list[str], env: Mapping[str, str]) -> RunConfig:
    from trainer.constants import TIME_BUDGET_S

    p = _Parser(prog="python -m trainer run", add_help=True)
    p.add_argument("candidate", type=Path, help="train.py (or a folder holding one)")
    p.add_argument("--profile", default="auto", help="cpu | gpu | auto (default)")
    p.add_argument("--budget-s", type=float, default=TIME_BUDGET_S, help="training seconds")
    p.add_argument("--steps", type=int, default=None, help="replay exactly N steps, no time budget")
    p.add_argument("--horizon", type=int, default=None, help="with --steps: the replayed run's planned_steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-seed", type=int, default=None, help="validation rows (default: fresh, secret)")
    p.add_argument("--data", type=Path, default=None, help="a prepared dataset folder")
    p.add_argument("--parent", type=Path, default=None, help="the parent's train.py or folder")
    p.add_argument("--no-sandbox", action="store_true", help="run WITHOUT bubblewrap isolation")
    p.add_argument("--keep-work", type=Path, default=None, help="keep the work folder under DIR")
    p.add_argument("--home", type=Path, default=None, help="the node home (default $AUTOSWARM_HOME or ~/.autoswarm)")
    p.add_argument("--hide", type=Path, action="append", default=[], metavar="PATH",
                   help="a file or folder no sandbox may see (repeatable)")
    p.add_argument("--compile-cache", type=Path, default=None, metavar="DIR",
                   help="base compile caches (default HOME/compile-cache; 'none': always compile cold)")
    a = p.parse_args(argv)
    home = (a.home or Path(env.get("AUTOSWARM_HOME") or Path.home() / ".autoswarm")).expanduser()
    return RunConfig(candidate=a.candidate, parent=a.parent, data=a.data, profile=a.profile, budget_s=a.budget_s,
                     steps=a.steps, horizon=a.horizon, seed=a.seed, eval_seed=a.eval_seed,
                     sandboxed=not (a.no_sandbox or env.get("AUTOSWARM_NO_SANDBOX") == "1"),
                     home=home, keep_work=a.keep_work,
                     hidden_paths=tuple(p.expanduser() for p in a.hide),
                     compile_cache=(None if str(a.compile_cache) == "none"
                                    else (a.compile_cache or home / "compile-cache").expanduser()))


def _progress(line: str) -> None:
    print(f"[train] {line}", file=sys.stderr, flush=True)


def run(config: RunConfig) -> int:
    from trainer.data_format import load_prepared
    from trainer import compile_cache
    from trainer.runner import resolve_profile, run_experiment

    if not config.candidate.exists():
        raise BadArguments(f"{config.candidate}: no such file or folder")
    if config.parent is not None and not config.parent.exists():
        raise BadArguments(f"{config.parent}: no such file or folder")
    if config.data is not None:
        data = load_prepared(config.data)
    else:
        from trainer.prepare import prepare

        print(f"[trainer] preparing the default dataset under {config.home}", file=sys.stderr, flush=True)
        data = prepare("default", home=config.home)
    if not config.sandboxed:
        print("[trainer] WARNING: --no-sandbox: the candidate runs with your privileges", file=sys.stderr)
    if config.keep_work is not None:
        config.keep_work.mkdir(parents=True, exist_ok=True)
    cache = (None if config.compile_cache is None
             else compile_cache.base_dir(config.compile_cache, resolve_profile(config.profile).name))
    result = run_experiment(config.candidate, config.parent, data, profile=config.profile, budget_s=config.budget_s,
                            steps=config.steps, horizon=config.horizon, seed=config.seed, eval_seed=config.eval_seed,
                            sandboxed=config.sandboxed, on_line=_progress,
                            hidden_paths=(config.home, *config.hidden_paths),
                            compile_cache=cache,
                            work_root=config.keep_work, keep_work=config.keep_work is not None)
    print(f"[trainer] {result.status}: val_bpb {result.val_bpb} {result.reason}", file=sys.stderr, flush=True)
    print(result.to_json(), flush=True)
    return EXIT_OK if result.status == "ok" else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    die_with_parent(os.environ)
    if argv and argv[0] == "prepare":
        from trainer.prepare import main as prepare_main

        return prepare_main(argv[1:])
    usage = ("usage: python -m trainer {run,prepare} ...\n\n"
             "  run PATH/train.py [options]   one sandboxed experiment; its result as JSON on the last line\n"
             "  prepare [options]             build the offline corpus and its tokenizer\n\n"
             "`python -m trainer run --help` and `python -m trainer prepare --help` list their options.")
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        return 0
    if not argv or argv[0] != "run":  # bad input: one line, as every refusal of this CLI
        print("usage: python -m trainer run PATH/train.py [options] | python -m trainer prepare [options]",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    # Errors a user can cause and fix; anything else is a bug and keeps its traceback.
    try:
        return run(parse_run(argv[1:], os.environ))
    except (TrainerError, OSError) as exc:
        print(f"trainer: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
