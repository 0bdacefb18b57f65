"""Whether a prepared dataset can serve a profile, and the sizes of a synthetic set that can.

A GPU run at the reference size reads 2^19 tokens a step and ~1.5M tokens a second, and its
evaluation scores batches of 32 x 2048 tokens: the offline default corpus (0.84M training, 89,693
validation tokens: one eval batch) cannot serve it. The runner refuses such a pairing with a
message that says what to prepare instead, rather than training for minutes and scoring noise.

Knows nothing of training: token counts and profile sizes in, a sentence or sizes out.
"""
from __future__ import annotations

from trainer.constants import Profile
from trainer.data_format import TOKEN_DTYPE, PreparedData

MIN_EVAL_BATCHES = 4  # fewer validation rows than this many eval batches: val_bpb is mostly noise
SYNTHETIC_EVAL_BATCHES = 16  # a synthetic set holds this many eval batches of validation tokens
# Training tokens a GPU dataset must hold: 128 optimizer steps of 2^19 tokens (a 300 s run at
# the reference size then repeats it a few times, not hundreds).
MIN_TRAIN_TOKENS_CUDA = 128 << 19
SYNTHETIC_TRAIN_TOKENS = {"cpu": 200_000, "cuda": MIN_TRAIN_TOKENS_CUDA}
SYNTHETIC_VOCAB_SIZE = {"cpu": 256, "cuda": 8192}  # on CUDA the default corpus's: comparable MFU


def eval_batch_tokens(profile: Profile) -> int:
    """Validation tokens one eval batch consumes (rows of seq_len + 1)."""
    return profile.eval_batch_size * (profile.seq_len + 1)


def min_val_tokens(profile: Profile) -> int:
    return MIN_EVAL_BATCHES * eval_batch_tokens(profile)


def min_train_tokens(profile: Profile) -> int:
    return MIN_TRAIN_TOKENS_CUDA if profile.device == "cuda" else profile.seq_len + 1


def synthetic_sizes(profile: Profile) -> tuple[int, int, int]:
    """(training tokens, validation tokens, vocabulary) of a synthetic set that serves `profile`."""
    n_val = SYNTHETIC_EVAL_BATCHES * eval_batch_tokens(profile)
    return SYNTHETIC_TRAIN_TOKENS[profile.device], n_val, SYNTHETIC_VOCAB_SIZE[profile.device]


def fit_problem(n_train: int, n_val: int, profile: Profile, source: str = "") -> str | None:
    """None when the token counts serve `profile`, else one sentence saying what to do."""
    need_val, need_train = min_val_tokens(profile), min_train_tokens(profile)
    if n_val >= need_val and n_train >= need_train:
        return None
    what = f"the dataset{f' ({source})' if source else ''} holds {n_train:,} training and {n_val:,} validation tokens"
    need = (f"the {profile.name} profile needs at least {need_train:,} and {need_val:,} "
            f"({MIN_EVAL_BATCHES} eval batches of {profile.eval_batch_size} x {profile.seq_len})")
    hint = ("prepare a larger one (python -m trainer prepare --source climbmix, where the network allows) "
            "or benchmark on synthetic data (scripts/bench_trainer.py --synthetic)")
    return f"{what}; {need}: {hint}"


def data_problem(data: PreparedData, profile: Profile) -> str | None:
    """fit_problem for a prepared dataset on disk (sizes from the files, nothing read)."""
    size = TOKEN_DTYPE.itemsize
    return fit_problem(data.train_tokens.stat().st_size // size, data.val_tokens.stat().st_size // size, profile,
                       data.source)
