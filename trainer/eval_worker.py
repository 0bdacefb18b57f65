"""The evaluation worker: runs INSIDE the sandbox, next to the candidate's model code.

    python -P -m trainer.eval_worker        (stdin/stdout carry eval_protocol frames)

It imports the candidate's train.py as a module (its `main` does not run), builds the model with
`build_model(config)` from model_config.json, loads model.safetensors (never pickle) and answers
the harness: for each batch of tokens, the log-probability of every target; then, on request,
full logits rows. It never sees val.bin, only the batches the harness streams to it.

Nothing it says is trusted. The checks here (plain tensor, shape, finite) turn honest mistakes and
naive cheats into clear reasons; the security boundary is the harness (trainer/evaluate.py), which
re-derives sampled log-probs from raw logits rows and probes causality with a second worker.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path

from trainer import eval_protocol as proto
from trainer.constants import ENTRY_FILE, MODEL_CONFIG_FILE, WEIGHTS_FILE
from trainer.errors import TrainerError


class Rejected(TrainerError):
    """The candidate's model broke a rule of the evaluation (reported as 'reject: ...')."""


class Broken(TrainerError):
    """The candidate's model failed to evaluate (reported as 'crash: ...')."""


def _load_model(work: Path, device: str):  # type: ignore[no-untyped-def]
    import safetensors.torch
    import torch

    spec = importlib.util.spec_from_file_location("candidate_train", work / ENTRY_FILE)
    if spec is None or spec.loader is None:
        raise Broken(f"cannot import {ENTRY_FILE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["candidate_train"] = module
    spec.loader.exec_module(module)
    build = getattr(module, "build_model", None)
    if not callable(build):
        raise Rejected(f"{ENTRY_FILE} defines no build_model(config) function")
    try:
        config = json.loads((work / MODEL_CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise Broken(f"no readable {MODEL_CONFIG_FILE}: {exc}") from None
    if not (work / WEIGHTS_FILE).is_file():
        raise Broken(f"train.py saved no {WEIGHTS_FILE}")
    model = build(config)
    if not isinstance(model, torch.nn.Module):
        raise Rejected(f"build_model returned {type(model).__name__}, not a torch.nn.Module")
    state = safetensors.torch.load_file(str(work / WEIGHTS_FILE), device="cpu")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _score(model, tokens, shape, device):  # type: ignore[no-untyped-def]
    import numpy as np
    import torch

    batch, seq_len, vocab = shape
    x = torch.from_numpy(tokens.astype(np.int64)).to(device)
    inputs, targets = x[:, :-1], x[:, 1:]
    with torch.no_grad():
        if device == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(inputs)
        else:
            logits = model(inputs)
    if type(logits) is not torch.Tensor:  # subclasses can override any operation we apply
        raise Rejected(f"the model returned {type(logits).__module__}.{type(logits).__qualname__}, "
                       "not a plain torch.Tensor")
    if tuple(logits.shape) != (batch, seq_len, vocab):
        raise Rejected(f"logits have shape {tuple(logits.shape)}, expected {(batch, seq_len, vocab)}")
    if not logits.is_floating_point():
        raise Rejected(f"logits have dtype {logits.dtype}, expected a floating type")
    logits = logits.detach().float()
    if not bool(torch.isfinite(logits).all()):
        raise Broken("the model's logits are not finite (NaN or inf): training diverged")
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logits, logprobs.cpu().numpy().astype("<f4")


def serve(fd_in: int, fd_out: int, work: Path) -> None:
    import numpy as np

    header = json.loads(proto.expect(fd_in, proto.HEADER_FRAME, None, deadline=None))
    batch, seq_len, vocab, device = header["batch_size"], header["seq_len"], header["vocab_size"], header["device"]
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise Broken("CUDA is not available inside the eval sandbox")
    torch.manual_seed(0)
    model = _load_model(work, device)
    info = {"device": device, "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if device == "cuda" else None}
    proto.send(fd_out, proto.READY, json.dumps(info).encode())
    max_batches = int(header.get("max_chunk_batches", 1))
    kept: list = []  # the logits of every eval batch of the last chunk, until its rows are opened
    while True:
        kind, payload = proto.receive(fd_in)
        if kind == proto.QUIT:
            return
        if kind == proto.BATCH:
            # A chunk of whole eval batches; each is scored alone, as in a chunk of one.
            rows_in = len(payload) // (2 * (seq_len + 1))
            if rows_in % batch or not 0 < rows_in // batch <= max_batches or len(payload) % (2 * (seq_len + 1)):
                raise Broken(f"a chunk of {len(payload)} bytes is not 1..{max_batches} batches")
            tokens = np.frombuffer(payload, dtype="<u2").reshape(-1, batch, seq_len + 1)
            kept = []
            parts = []
            for chunk in tokens:
                logits, logprobs = _score(model, chunk, (batch, seq_len, vocab), device)
                kept.append(logits)
                parts.append(logprobs)
            proto.send(fd_out, proto.LOGPROBS, np.concatenate(parts).tobytes())
        elif kind == proto.ROWS_REQUEST and kept:
            where = np.frombuffer(payload, dtype="<i4").reshape(-1, 2).astype(np.int64)
            if len(where) and not (0 <= where.min() and where[:, 0].max() < batch * len(kept)
                                   and where[:, 1].max() < seq_len):
                raise Broken("a rows request outside the chunk")
            rows = np.empty((len(where), vocab), dtype="<f4")
            for j, logits in enumerate(kept):  # one gather per eval batch, not per row
                sel = np.flatnonzero(where[:, 0] // batch == j)
                if len(sel):
                    r = torch.from_numpy(where[sel, 0] % batch).to(logits.device)
                    t = torch.from_numpy(where[sel, 1]).to(logits.device)
                    rows[sel] = logits[r, t].cpu().numpy()
            proto.send(fd_out, proto.ROWS, rows.tobytes())
        else:
            raise Broken(f"unexpected frame {kind!r}")


def main() -> int:
    # Keep the protocol pipes private, then point fd 0 at /dev/null and fd 1 at stderr, so that a
    # print() in the candidate's code lands in the log instead of corrupting the frames.
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    try:
        serve(fd_in, fd_out, Path.cwd())
        return 0
    except Rejected as exc:
        proto.send(fd_out, proto.ERROR, f"reject: {exc}".encode()[: proto.MAX_ERROR_BYTES])
    except Exception as exc:  # anything the candidate's code raises is reported, then we exit
        traceback.print_exc()
        text = f"crash: {exc}" if isinstance(exc, Broken) else f"crash: {type(exc).__name__}: {exc}"
        try:
            proto.send(fd_out, proto.ERROR, text.encode()[: proto.MAX_ERROR_BYTES])
        except proto.ProtocolError:
            pass
    return 1


if __name__ == "__main__":
    sys.exit(main())
