"""Fixed constants of the harness: what every experiment in a swarm shares.

These values enter the harness hash (trainer/harness.py), so changing one makes a different swarm.
train.py may read them (as autoresearch's train.py reads prepare.py) but cannot change them: the
harness folder is mounted read-only in the sandbox.

Knows nothing of how a model is trained or run; it is plain data.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from trainer.errors import TrainerError

TIME_BUDGET_S = 300.0  # seconds of training per experiment (autoresearch's TIME_BUDGET)

# Files train.py leaves in its work folder for the evaluation.
WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "model_config.json"
ENTRY_FILE = "train.py"

# Environment the runner sets inside the sandbox; train.py reads these instead of being edited.
ENV_PROFILE = "AUTOSWARM_PROFILE"  # "cpu" or "gpu"
ENV_BUDGET_S = "AUTOSWARM_BUDGET_S"  # training time budget in seconds
ENV_STEPS = "AUTOSWARM_STEPS"  # if set: train exactly this many steps, no time budget (replay)
ENV_HORIZON = "AUTOSWARM_HORIZON"  # with STEPS: the schedule's horizon, when the run being replayed stopped early
ENV_SEED = "AUTOSWARM_SEED"
ENV_PARENT_PID = "AUTOSWARM_PARENT_PID"  # set by a node for `python -m trainer`: the run dies with that process
ENV_DATA = "AUTOSWARM_DATA"  # folder with train.bin, token_bytes.bin, meta.json (no val.bin)

# Bounds on what the harness accepts from a candidate.
# A train.py could carry memorized validation text (the data is public); the cap bounds that to a
# sliver of the evaluated tokens. autoresearch's train.py is ~25 KiB.
MAX_ENTRY_BYTES = 256 << 10
MAX_TREE_FILES = 10_000  # files compared by the allowed-files rule
MAX_LOG_TAIL_BYTES = 8 << 10  # log kept in a result
MAX_STDOUT_TAIL_BYTES = 64 << 10  # stdout kept for the contract parser


class UnknownProfile(TrainerError, ValueError):
    """A profile name that the harness does not define."""


@dataclass(frozen=True, slots=True)
class Profile:
    """Sizes the harness fixes per hardware class; the eval depends on them, so train.py cannot."""

    name: str
    device: str  # "cpu" or "cuda"
    seq_len: int  # tokens per evaluated sequence; train.py trains at this length too
    eval_batch_size: int  # sequences per evaluation batch
    eval_tokens: int  # target tokens scored (rounded down to whole batches)
    startup_allowance_s: float  # wall seconds beyond the budget for imports, compile, saving
    memory_limit_mb: int  # host memory bound for one sandboxed process tree
    eval_timeout_s: float  # wall bound for one evaluation worker, start to finish
    # Evaluation batches replayed with spliced futures (causality probe). Each probed row checks one
    # cut, so a model that looks ahead on a fraction f of positions escapes with (1-f)^rows: 32
    # batches x 32 rows on gpu (10 % more eval compute) leaves such a cheat a gain below the noise.
    probe_batches: int
    spot_rows: int  # full logits rows checked per batch against the reported log-probs
    probe_atol: float  # max |difference| of log-probs tolerated between main and probe workers
    spot_atol: float  # max |difference| between a reported log-prob and our recomputation
    # torch's intra-op threads in the training and evaluation sandboxes; 0: torch's default (one per
    # core). A fixed count makes CPU results the same on every machine (a reduction's order follows
    # its threads: 1 and 2 threads trained genesis to 1.808 and 1.827 in 20 steps) and keeps a step
    # fast on a shared machine (2 threads on 2 cores beside one busy process: 2.6 s a step, against
    # 0.47 s for 1 thread; docs/benchmarks.md, "Trainer: one CPU thread").
    threads: int

    def thread_env(self) -> dict[str, str]:
        """The sandbox's variables that fix its thread count (none where torch picks)."""
        return {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)} if self.threads else {}

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise UnknownProfile(f"profile {self.name}: device must be cpu or cuda, got {self.device}")
        for field in ("seq_len", "eval_batch_size", "eval_tokens", "memory_limit_mb", "probe_batches", "spot_rows"):
            if getattr(self, field) <= 0:
                raise UnknownProfile(f"profile {self.name}: {field} must be positive")
        if self.threads < 0:
            raise UnknownProfile(f"profile {self.name}: threads must not be negative")
        if self.eval_tokens < self.seq_len * self.eval_batch_size:
            raise UnknownProfile(f"profile {self.name}: eval_tokens below one batch")


PROFILES: dict[str, Profile] = {
    # The autoresearch reference: sequence 2048, ~21M evaluation tokens (40 x 2^19 there; 20 x 2^20 here).
    # No RLIMIT_AS on CUDA (the driver reserves terabytes of address space); the runner watches RSS.
    "gpu": Profile(
        name="gpu", device="cuda", seq_len=2048, eval_batch_size=32, eval_tokens=20 * (1 << 20),
        startup_allowance_s=240.0, memory_limit_mb=64 << 10, eval_timeout_s=900.0,
        probe_batches=32, spot_rows=64, probe_atol=5e-2, spot_atol=1e-3, threads=0,
    ),
    # Tiny: one thread trains ~60 steps in 30 s (about 0.5 s a step on the 2-core VM, idle or beside other
    # work; two threads took 0.3 s idle and 1.8-3 s beside busy processes). The eval asks for more tokens than the offline
    # default validation set holds (89,693: 694 rows of 129), so every eval seed scores 688 of those rows
    # (43 batches): eval-seed noise ~0.001 bpb (std) instead of 0.027 with 8,192 tokens, for ~14 s of
    # evaluation on 2 idle cores, a thread for each of its two workers (docs/benchmarks.md, "Trainer: CPU
    # evaluation noise", measured at 10.5 s with two threads each); 4 of 43 batches probed.
    # It took 118 s on 2 cores shared at load 8-9, hence a 300 s deadline.
    "cpu": Profile(
        name="cpu", device="cpu", seq_len=128, eval_batch_size=16, eval_tokens=16 * 128 * 48,
        startup_allowance_s=30.0, memory_limit_mb=6 << 10, eval_timeout_s=300.0,
        probe_batches=4, spot_rows=32, probe_atol=1e-4, spot_atol=1e-3, threads=1,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownProfile(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}") from None


def profile_from_env(default: str = "gpu") -> Profile:
    """The profile the runner chose for this process (train.py calls this)."""
    return get_profile(os.environ.get(ENV_PROFILE, default))
