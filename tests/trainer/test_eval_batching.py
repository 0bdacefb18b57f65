"""The chunked evaluation: the same val_bpb as one batch per round trip, in fewer round trips."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trainer import sandbox
from trainer.constants import get_profile
from trainer.data_format import PreparedData, synthetic
from trainer.evaluate import chunk_batches, evaluate

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"sequence_len": 128, "vocab_size": 256, "n_layer": 2, "n_head": 2, "n_embd": 64}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    return synthetic(tmp_path_factory.mktemp("data"), n_train=10_000, n_val=60_000, seed=2)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder as train.py leaves it: the genesis model, freshly initialized, saved."""
    import safetensors.torch
    import torch

    from trainer.train import build_model

    work = tmp_path_factory.mktemp("work")
    shutil.copy(ROOT / "trainer" / "train.py", work / "train.py")
    torch.manual_seed(0)
    model = build_model(CONFIG)
    model.init_weights()
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.3)  # not near-uniform: distinct log-probs per token
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                str(work / "model.safetensors"))
    (work / "model_config.json").write_text(json.dumps(CONFIG))
    return work


def test_chunks_fit_the_memory_bound() -> None:
    gpu, cpu = get_profile("gpu"), get_profile("cpu")
    assert chunk_batches(gpu, 8192) == 8  # 2 GiB of float32 logits a batch, 16 GiB kept
    assert chunk_batches(cpu, 8192) == 8 and chunk_batches(cpu, 256) == 16
    assert chunk_batches(gpu, 1 << 16) == 1  # a huge vocabulary: one batch at a time, never zero


@pytest.mark.slow
def test_chunked_evaluation_gives_the_same_val_bpb_in_fewer_round_trips(work: Path, data: PreparedData) -> None:
    profile = get_profile("cpu")
    sandboxed = sandbox.find_bwrap() is not None
    one = evaluate(work, data, profile, eval_seed=4, sandboxed=sandboxed, hidden=(data.val_tokens,), chunk=1)
    many = evaluate(work, data, profile, eval_seed=4, sandboxed=sandboxed, hidden=(data.val_tokens,))
    assert one.batches == many.batches >= 20
    assert one.round_trips == 2 * one.batches  # before: a batch, then its rows, for every batch
    assert many.round_trips == 2 * -(-many.batches // chunk_batches(profile, data.vocab_size)) < one.round_trips / 8
    assert many.val_bpb == pytest.approx(one.val_bpb, rel=1e-9, abs=1e-9)
    assert (many.nats, many.target_bytes, many.target_tokens) == pytest.approx((one.nats, one.target_bytes,
                                                                               one.target_tokens))
    assert many.probed_rows == one.probed_rows > 0 and many.probe_max_diff <= profile.probe_atol
