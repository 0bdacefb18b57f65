"""Harness side of the evaluation: val_bpb computed by our code from the candidate's model outputs.

Theory of operation. The candidate's model runs only inside sandboxed eval workers
(trainer/eval_worker.py); this process never imports candidate code and only does numpy on bytes.
 1. Rows of seq_len+1 validation tokens, drawn by a secret eval seed from the whole of val.bin,
    are streamed to a MAIN worker batch by batch over a pipe; val.bin is on no sandbox's filesystem.
 2. For each batch the worker commits to the log-prob of every target (batches travel in chunks
    of chunk_batches a frame: a whole evaluation is a few dozen round trips). Only then do we pick, with
    a secret random generator, rows to open: the worker sends full logits rows, we recompute their
    log-softmax and reject on mismatch. A worker that reports numbers other than its logits (a
    patched loss, a zeroed log_softmax) is caught with probability 1-(1-f)^k for a fraction f of
    faked positions and k opened rows.
 3. Causality: a PROBE worker, a second fresh process that shares nothing with the main one, gets
    some of the same batches with every row's future replaced after a secret random cut t by a
    real validation continuation that starts with the same token (so the junction looks natural).
    A causal model gives the same logits at positions <= t in both workers; we compare the opened
    rows at t and the log-probs before t. A model that peeks at later tokens differs at t.
 4. The loss: sum of -log p over targets with a non-zero byte length, divided by ln 2 times the
    UTF-8 bytes of those targets (token_bytes.bin) = bits per byte.

Knows nothing of training; the runner calls evaluate() after train.py saved its weights.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from trainer import eval_protocol as proto
from trainer import outputs as outputs_mod
from trainer import sandbox
from trainer.constants import Profile
from trainer.data_format import PreparedData, read_token_bytes
from trainer.errors import TrainerError

_T = TypeVar("_T")

SPLICE_SEARCH_TOKENS = 1 << 20  # window of val tokens searched for a natural-looking continuation
WORKER_EXIT_S = 10.0
# Logits a worker keeps while a chunk of eval batches awaits its row checks; on CUDA they stay in
# GPU memory, free once training has exited. Fewer, larger frames keep the GPU busy.
EVAL_CHUNK_BYTES = {"cuda": 16 << 30, "cpu": 512 << 20}
MAX_CHUNK_BATCHES = 16


class EvalError(TrainerError):
    """The evaluation did not produce a trustworthy val_bpb; `status` says how the runner reports it."""

    status = "crash"

    def __init__(self, reason: str, log_tail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail


class EvalRejected(EvalError):
    """The model or its worker broke a rule: looks ahead, misreports log-probs, wrong tensor type."""

    status = "rejected"


class EvalCrashed(EvalError):
    """The model could not be evaluated: import error, missing weights, NaN logits, worker died."""


class EvalTimeout(EvalError):
    status = "timeout"


@dataclass(frozen=True, slots=True)
class EvalReport:
    val_bpb: float
    eval_seed: int  # which rows were scored (val_rows)
    nats: float
    target_bytes: int
    target_tokens: int
    batches: int
    probed_rows: int
    probe_max_diff: float  # largest |log-prob difference| seen between main and probe at <= cut
    spot_max_diff: float  # largest |reported - recomputed| log-prob over opened rows
    seconds: float
    round_trips: int = 0  # request-answer exchanges with the workers (main and probe in parallel)
    # Per-batch outputs in batch order and the digest over them and the eval seed (trainer/outputs.py):
    # what a verify entry commits to, so that two replays can be compared batch by batch later.
    batch_outputs: tuple[outputs_mod.BatchOutput, ...] = ()
    outputs: bytes = b""

    def __post_init__(self) -> None:
        if not math.isfinite(self.val_bpb) or self.target_bytes <= 0:
            raise EvalCrashed(f"evaluation produced no finite val_bpb ({self.val_bpb}, {self.target_bytes} bytes)")


def val_rows(val: np.ndarray, profile: Profile, eval_seed: int) -> np.ndarray:
    """The evaluation rows [n_batches, B, T+1], drawn by `eval_seed` from the whole validation set.

    Rows sit on a grid of stride T+1 with a seeded shift, in seeded order: they never overlap, so no
    row reveals another, and a table of public validation rows cannot recognize them (a candidate
    that could tell real rows from the probe's spliced ones could look ahead only on real ones).
    """
    t, b = profile.seq_len, profile.eval_batch_size
    rng = np.random.default_rng(eval_seed)
    shift = int(rng.integers(0, t + 1))
    n_slots = max(0, (len(val) - shift) // (t + 1))
    n_batches = min(n_slots, profile.eval_tokens // t) // b
    if n_batches < 1:
        raise EvalCrashed(f"the validation set ({len(val)} tokens) is smaller than one batch of {b}x{t}")
    starts = shift + rng.permutation(n_slots)[: n_batches * b] * (t + 1)
    idx = starts[:, None] + np.arange(t + 1)[None, :]
    return np.asarray(val[idx], dtype=np.uint16).reshape(n_batches, b, t + 1)


def splice(rows: np.ndarray, val: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Replaces each row's tokens after a random cut t with another real continuation of row[t]."""
    out = rows.copy()
    n, width = rows.shape
    cuts = rng.integers(0, width - 2, size=n)  # t in [0, T-2]: at least one input token changes
    # One window of validation tokens per batch: scanning all of val.bin per row would cost seconds.
    lo = int(rng.integers(0, max(1, len(val) - width - SPLICE_SEARCH_TOKENS)))
    window = np.asarray(val[lo: lo + SPLICE_SEARCH_TOKENS + width])
    for r, t in enumerate(cuts):
        need = width - t  # the shared token t, then the T-t replacement tokens
        natural = np.flatnonzero(window[: len(window) - need] == rows[r, t])
        natural = natural[window[natural + 1] != rows[r, t + 1]]
        if len(natural):
            q = int(rng.choice(natural))
        else:  # a rare token: any continuation whose first token differs
            q = next((int(c) for c in rng.integers(0, len(window) - need, 64) if window[c + 1] != rows[r, t + 1]), -1)
        if q >= 0:
            out[r, t + 1:] = window[q + 1: q + need]
        else:  # a degenerate validation set: random tokens, surely different
            out[r, t + 1:] = (rows[r, t + 1:].astype(np.int64) + 1 + rng.integers(0, 2**15, need - 1)) % 65536
    return out, cuts


def log_softmax(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    top = rows.max(axis=-1, keepdims=True)
    out: np.ndarray = rows - top - np.log(np.exp(rows - top).sum(axis=-1, keepdims=True))
    return out


class _Worker:
    """One sandboxed eval worker process and its protocol pipes."""

    def __init__(self, name: str, spec: sandbox.SandboxSpec) -> None:
        self.name = name
        self.proc = sandbox.spawn(spec, [sys.executable, "-P", "-m", "trainer.eval_worker"], stdin=subprocess.PIPE)
        self.log = sandbox.Tail(8 << 10)
        if self.proc.stderr is None or self.proc.stdin is None or self.proc.stdout is None:
            raise EvalCrashed(f"eval ({name}): worker started without pipes")
        self._drain = sandbox.drain(self.proc.stderr, self.log, name=f"eval-{name}-stderr")
        self.fd_in, self.fd_out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self.fd_in, False)
        os.set_blocking(self.fd_out, False)
        watch = sandbox.needs_watchdog(spec)
        self.watchdog = sandbox.Watchdog(self.proc, spec.memory_limit_mb).start() if watch else None

    def send(self, kind: bytes, payload: bytes, deadline: float) -> None:
        self._guard(lambda: proto.send(self.fd_in, kind, payload, deadline))

    def expect(self, kind: bytes, size: int | None, deadline: float) -> bytes:
        return self._guard(lambda: proto.expect(self.fd_out, kind, size, deadline))

    def _guard(self, call: Callable[[], _T]) -> _T:
        """Translates protocol failures into the evaluation's typed errors, with the worker's log."""
        try:
            return call()
        except proto.WorkerError as exc:
            tail = self._tail()
            kind, _, text = exc.text.partition(": ")
            cls = EvalRejected if kind == "reject" else EvalCrashed
            raise cls(f"eval ({self.name}): {text or exc.text}", tail) from None
        except proto.ProtocolTimeout:
            raise EvalTimeout(f"eval ({self.name}) did not answer in time", self._tail()) from None
        except proto.PeerClosed:
            sandbox.wait_bounded(self.proc, time.monotonic() + WORKER_EXIT_S)
            rc = self.proc.returncode
            if self.watchdog is not None and self.watchdog.tripped:
                raise EvalCrashed(f"eval ({self.name}) exceeded its memory limit", self._tail()) from None
            raise EvalCrashed(f"eval ({self.name}) worker exited with code {rc}", self._tail()) from None
        except proto.ProtocolError as exc:
            raise EvalRejected(f"eval ({self.name}) broke the protocol: {exc}", self._tail()) from None

    def _tail(self) -> str:
        if self.proc.poll() is None:
            time.sleep(0.2)  # let the last stderr lines arrive
        self._drain.join(timeout=1.0)
        return self.log.text()

    def close(self) -> None:
        try:
            proto.send(self.fd_in, proto.QUIT, b"", time.monotonic() + 1.0)
        except proto.ProtocolError:
            pass
        sandbox.wait_bounded(self.proc, time.monotonic() + WORKER_EXIT_S)
        if self.watchdog is not None:
            self.watchdog.stop()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def new_eval_seed() -> int:
    return secrets.randbits(63)


def chunk_batches(profile: Profile, vocab_size: int) -> int:
    """Eval batches sent to a worker in one frame: as many as keep its retained logits (float32
    [B, T, V] per batch, until their rows are opened) within EVAL_CHUNK_BYTES."""
    per_batch = profile.eval_batch_size * profile.seq_len * vocab_size * 4
    return max(1, min(MAX_CHUNK_BATCHES, EVAL_CHUNK_BYTES[profile.device] // per_batch))


def evaluate(work_dir: Path, data: PreparedData, profile: Profile, *, eval_seed: int, sandboxed: bool = True,
             hidden: tuple[Path, ...] = (), chunk: int | None = None) -> EvalReport:
    """Scores the weights train.py left in `work_dir`; raises an EvalError subclass on failure.

    `eval_seed` picks the rows: a verifier draws a fresh one (new_eval_seed) and reveals it only in
    its result; the same seed gives the same rows, so a replay can be compared bit for bit.
    `chunk`: eval batches per round trip (default chunk_batches); the val_bpb does not depend on it.
    """
    started = time.monotonic()
    deadline = started + profile.eval_timeout_s
    # Secret randomness, never revealed: which rows are opened and where the probe cuts fall.
    rng = np.random.default_rng(secrets.randbits(128))
    val = np.memmap(data.val_tokens, dtype="<u2", mode="r")
    batches = val_rows(val, profile, eval_seed)
    token_bytes = read_token_bytes(data).astype(np.int64)
    n, b, t, v = batches.shape[0], profile.eval_batch_size, profile.seq_len, data.vocab_size
    k = chunk_batches(profile, v) if chunk is None else chunk
    if k < 1:
        raise EvalCrashed(f"chunk must be positive, got {k}")
    others = rng.choice(np.arange(1, n), min(profile.probe_batches - 1, n - 1), replace=False)
    probed = {0} | {int(i) for i in others}  # batch 0 always: both workers start at the same moment
    spec = sandbox.SandboxSpec(work_dir=work_dir, work_writable=False, cuda=profile.device == "cuda",
                               env=tuple(profile.thread_env().items()),
                               memory_limit_mb=profile.memory_limit_mb, hidden=hidden, sandboxed=sandboxed,
                               cpu_limit_s=int(profile.eval_timeout_s * (os.cpu_count() or 1)) + 10)
    header = json.dumps({"batch_size": b, "seq_len": t, "vocab_size": v, "device": profile.device,
                         "max_chunk_batches": k}).encode()
    main: _Worker | None = None
    probe: _Worker | None = None
    try:
        main = _Worker("main", spec)
        probe = _Worker("probe", spec)
        for w in (main, probe):
            w.send(proto.HEADER_FRAME, header, deadline)
        for w in (main, probe):
            w.expect(proto.READY, None, deadline)
        nats, nbytes, ntok, probe_diff, spot_diff, probed_rows, trips = 0.0, 0, 0, 0.0, 0.0, 0, 0
        committed: list[outputs_mod.BatchOutput] = []
        for first in range(0, n, k):
            ids = list(range(first, min(n, first + k)))
            spliced = {i: splice(batches[i], val, rng) for i in ids if i in probed}
            pids = list(spliced)
            main.send(proto.BATCH, batches[first: first + len(ids)].astype("<u2").tobytes(), deadline)
            if pids:
                probe.send(proto.BATCH, np.stack([spliced[i][0] for i in pids]).astype("<u2").tobytes(), deadline)
            lp_all = _logprobs(main, len(ids) * b, t, deadline).reshape(len(ids), b, t)
            lpp_all = _logprobs(probe, len(pids) * b, t, deadline).reshape(len(pids), b, t) if pids else None
            # Opened only now, after the worker committed to its log-probs; one request per worker per chunk.
            wheres = []
            for i in ids:
                where = np.stack([rng.integers(0, b, profile.spot_rows), rng.integers(0, t, profile.spot_rows)], 1)
                if i in spliced:
                    where = np.concatenate([np.stack([np.arange(b), spliced[i][1]], 1), where])
                wheres.append(where)
            offsets = np.cumsum([0] + [len(w) for w in wheres])
            main_logits = _open_rows(main, np.concatenate([w + [j * b, 0] for j, w in enumerate(wheres)]), v,
                                     deadline)
            probe_logits = (_open_rows(probe, np.concatenate([wheres[ids.index(i)][:b] + [q * b, 0]
                                                               for q, i in enumerate(pids)]), v, deadline)
                            if pids else None)
            trips += 2
            for j, i in enumerate(ids):
                rows, lp, where = batches[i], lp_all[j], wheres[j]
                logits = main_logits[offsets[j]: offsets[j + 1]]
                spot_diff = max(spot_diff, _check_rows(main.name, logits, where, rows, lp, profile))
                if i in spliced and lpp_all is not None and probe_logits is not None:
                    q = pids.index(i)
                    spliced_rows, cuts = spliced[i]
                    lp_probe, plogits = lpp_all[q], probe_logits[q * b: (q + 1) * b]
                    spot_diff = max(spot_diff, _check_rows(probe.name, plogits, where[:b], spliced_rows, lp_probe,
                                                           profile))
                    probe_diff = max(probe_diff, _compare(log_softmax(logits[:b]), log_softmax(plogits),
                                                          lp, lp_probe, cuts, profile, i))
                    probed_rows += b
                targets = rows[:, 1:].astype(np.int64)
                weight = token_bytes[targets]
                mask = weight > 0
                batch_nats, batch_bytes, batch_tokens = (float(-(lp.astype(np.float64)[mask]).sum()),
                                                         int(weight[mask].sum()), int(mask.sum()))
                nats += batch_nats
                nbytes += batch_bytes
                ntok += batch_tokens
                try:
                    committed.append(outputs_mod.BatchOutput.of(batch_nats, batch_bytes, batch_tokens))
                except outputs_mod.OutputsError as exc:  # a loss past 2^53 nats: finite log-probs, absurd ones
                    raise EvalCrashed(f"eval: batch {i}'s loss cannot be committed to ({exc})") from None
        commitment = outputs_mod.digest(eval_seed, committed)  # inside the timed part: its cost is eval time
        seconds = time.monotonic() - started
        return EvalReport(val_bpb=nats / (math.log(2) * nbytes) if nbytes else float("nan"), eval_seed=eval_seed,
                          nats=nats, target_bytes=nbytes, target_tokens=ntok, batches=n, probed_rows=probed_rows,
                          probe_max_diff=probe_diff, spot_max_diff=spot_diff, seconds=seconds, round_trips=trips,
                          batch_outputs=tuple(committed), outputs=commitment)
    finally:
        for worker in (main, probe):
            if worker is not None:
                worker.close()


def _logprobs(worker: _Worker, b: int, t: int, deadline: float) -> np.ndarray:
    lp = np.frombuffer(worker.expect(proto.LOGPROBS, b * t * 4, deadline), dtype="<f4").reshape(b, t)
    if not np.isfinite(lp).all():
        raise EvalCrashed(f"eval ({worker.name}): non-finite log-probs (the model diverged?)")
    if float(lp.max()) > 1e-4:
        raise EvalRejected(f"eval ({worker.name}): reported a log-probability above 0 ({float(lp.max()):.4g})")
    return lp


def _open_rows(worker: _Worker, where: np.ndarray, v: int, deadline: float) -> np.ndarray:
    """Asks the worker for full logits rows at (row, position) pairs `where`."""
    worker.send(proto.ROWS_REQUEST, where.astype("<i4").tobytes(), deadline)
    raw = worker.expect(proto.ROWS, len(where) * v * 4, deadline)
    logits = np.frombuffer(raw, dtype="<f4").reshape(len(where), v)
    if not np.isfinite(logits).all():
        raise EvalCrashed(f"eval ({worker.name}): non-finite logits")
    return logits


def _check_rows(name: str, logits: np.ndarray, where: np.ndarray, rows: np.ndarray, lp: np.ndarray,
                profile: Profile) -> float:
    """The committed log-probs must be the log-softmax of the opened logits rows at the targets."""
    recomputed = log_softmax(logits)[np.arange(len(where)), rows[where[:, 0], where[:, 1] + 1].astype(np.int64)]
    reported = lp[where[:, 0], where[:, 1]].astype(np.float64)
    diff = np.abs(recomputed - reported)
    worst = int(diff.argmax())
    if diff[worst] > profile.spot_atol:
        raise EvalRejected(
            f"eval ({name}): reported log-probs do not match the model's own logits (row {where[worst, 0]}, "
            f"position {where[worst, 1]}: reported {reported[worst]:.5f}, logits give {recomputed[worst]:.5f})")
    return float(diff.max())


def _compare(main_ls: np.ndarray, probe_ls: np.ndarray, lp: np.ndarray, lp_probe: np.ndarray,
             cuts: np.ndarray, profile: Profile, batch: int) -> float:
    """Causality: outputs at positions <= cut must not depend on the tokens after the cut."""
    worst = 0.0
    for r, t in enumerate(cuts):
        at_cut = float(np.abs(main_ls[r] - probe_ls[r]).max())
        before = float(np.abs(lp[r, :t].astype(np.float64) - lp_probe[r, :t]).max()) if t > 0 else 0.0
        worst = max(worst, at_cut, before)
        if max(at_cut, before) > profile.probe_atol:
            raise EvalRejected(
                f"looks ahead: changing the tokens after position {t} changed the model's outputs at "
                f"positions <= {t} (batch {batch}, row {r}, max log-prob difference {max(at_cut, before):.4g})")
    return worst
