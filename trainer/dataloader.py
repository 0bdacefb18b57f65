"""Training batches from a token file, as a pure function of (seed, step).

    TokenBatches(path, *, batch_size: int, seq_len: int, seed: int, device="cpu")
        .batch(step: int) -> (x, y)          int64 tensors [batch_size, seq_len] on `device`;
                                             y[:, t] == x[:, t + 1] shifted, i.e. y = next tokens
        .batches(start_step: int = 0)       endless iterator of .batch(start_step), .batch(start_step+1), ...
        .windows(step) -> np.ndarray         the batch's start offsets into the token file
        .num_tokens, .num_windows

    eval_batches(path, *, batch_size, seq_len, max_tokens=None, device="cpu")
        -> iterator of (x, y): consecutive non-overlapping windows from the start of the file,
           for a deterministic evaluation pass (the last partial batch is dropped).

Theory of operation: row r of step s reads the window tokens[o : o + seq_len + 1], where the
offset o is drawn from a PCG64 stream seeded by SeedSequence([seed, step]). NumPy promises that
bit generators and SeedSequence produce the same raw bits in every version (unlike Generator
methods such as `integers`), so we take raw 64-bit words and reduce them ourselves: any machine
computes the same batch for the same (file, seed, step). That is what lets a verifier replay a run
exactly, and lets a run resume at any step with no loader state to save. Windows may cross
document boundaries; every document starts with BOS, so the model sees where one begins.

Cost per batch: one fancy-indexing gather from the memory-mapped file (the OS page cache does the
caching), one int64 conversion, and on CUDA a copy from pinned memory with non_blocking=True.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from trainer.data_format import read_tokens
from trainer.errors import TrainerError


class BadBatchShape(TrainerError, ValueError):
    """The token file is too short for the requested window, or a size argument is not positive."""


class TokenBatches:
    def __init__(self, path: Path | str, *, batch_size: int, seq_len: int, seed: int,
                 device: torch.device | str = "cpu") -> None:
        if batch_size < 1 or seq_len < 1:
            raise BadBatchShape("batch_size and seq_len must be positive")
        if not 0 <= seed < 2**63:
            raise BadBatchShape("seed must be in 0..2**63-1")
        self.path = Path(path)
        self.tokens = read_tokens(self.path)
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.device = torch.device(device)
        self.num_tokens = len(self.tokens)
        # Windows hold seq_len + 1 tokens (inputs plus the one shifted target).
        self.num_windows = self.num_tokens - seq_len
        if self.num_windows < 1:
            raise BadBatchShape(f"{self.path}: {self.num_tokens} tokens, need more than seq_len={seq_len}")
        self._span = np.arange(seq_len + 1, dtype=np.int64)
        self._pin = self.device.type == "cuda"

    def windows(self, step: int) -> np.ndarray:
        if step < 0:
            raise BadBatchShape("step must be non-negative")
        bits = np.random.PCG64(np.random.SeedSequence([self.seed, step])).random_raw(self.batch_size)
        # Modulo bias is below num_windows / 2**64: immeasurable for any file that fits on a disk.
        return (np.asarray(bits, dtype=np.uint64) % np.uint64(self.num_windows)).astype(np.int64)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.asarray(self.tokens[self.windows(step)[:, None] + self._span], dtype=np.int64)
        return _to_device(rows, self.device, self._pin)

    def batches(self, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = start_step
        while True:
            yield self.batch(step)
            step += 1

    def __repr__(self) -> str:
        return (f"TokenBatches({str(self.path)!r}, batch_size={self.batch_size}, seq_len={self.seq_len}, "
                f"seed={self.seed}, device={str(self.device)!r})")


def eval_batches(path: Path | str, *, batch_size: int, seq_len: int, max_tokens: int | None = None,
                 device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if batch_size < 1 or seq_len < 1:
        raise BadBatchShape("batch_size and seq_len must be positive")
    tokens = read_tokens(Path(path))
    usable = len(tokens) if max_tokens is None else min(len(tokens), max_tokens)
    n_rows = (usable - 1) // seq_len
    device = torch.device(device)
    span = np.arange(seq_len + 1, dtype=np.int64)
    for first in range(0, n_rows - batch_size + 1, batch_size):
        starts = (first + np.arange(batch_size, dtype=np.int64)) * seq_len
        rows = np.asarray(tokens[starts[:, None] + span], dtype=np.int64)
        yield _to_device(rows, device, device.type == "cuda")


def _to_device(rows: np.ndarray, device: torch.device, pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # x and y stacked in one contiguous [2, B, T] buffer: one host-to-device copy, and both halves
    # stay contiguous so callers may .view() them.
    both = torch.from_numpy(np.stack((rows[:, :-1], rows[:, 1:])))
    if pin:
        both = both.pin_memory()
    both = both.to(device, non_blocking=pin)
    return both[0], both[1]
