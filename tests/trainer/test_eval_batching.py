"""The chunked evaluation: the same val_bpb as one batch per round trip, in fewer round trips."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trainer import sandbox
from trainer.constants import get_profile
from trainer.data_format import PreparedData, synthetic
from trainer.evaluate import EvalReport, chunk_batches, evaluate
from trainer.outputs import NATS_QUANTUM
from trainer.outputs import digest as outputs_digest

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


def _evaluate(work: Path, data: PreparedData, chunk: int | None = None) -> EvalReport:
    return evaluate(work, data, get_profile("cpu"), eval_seed=4, sandboxed=sandbox.find_bwrap() is not None,
                    hidden=(data.val_tokens,), chunk=chunk)


@pytest.fixture(scope="module")
def many(work: Path, data: PreparedData) -> EvalReport:
    """The genesis model evaluated with the default chunking."""
    return _evaluate(work, data)


@pytest.mark.slow
def test_chunked_evaluation_gives_the_same_val_bpb_in_fewer_round_trips(work: Path, data: PreparedData,
                                                                        many: EvalReport) -> None:
    profile = get_profile("cpu")
    one = _evaluate(work, data, chunk=1)
    assert one.batches == many.batches >= 20
    assert one.round_trips == 2 * one.batches  # before: a batch, then its rows, for every batch
    assert many.round_trips == 2 * -(-many.batches // chunk_batches(profile, data.vocab_size)) < one.round_trips / 8
    assert many.val_bpb == pytest.approx(one.val_bpb, rel=1e-9, abs=1e-9)
    assert (many.nats, many.target_bytes, many.target_tokens) == pytest.approx((one.nats, one.target_bytes,
                                                                               one.target_tokens))
    assert many.probed_rows == one.probed_rows > 0 and many.probe_max_diff <= profile.probe_atol
    # The committed outputs: one leaf per batch, in order, summing to the reported totals; chunking
    # may move a batch's float sum by an ulp, so the leaves agree to within a quantum, not bit for bit.
    assert len(many.batch_outputs) == len(one.batch_outputs) == many.batches
    assert sum(o.target_bytes for o in many.batch_outputs) == many.target_bytes
    assert sum(o.target_tokens for o in many.batch_outputs) == many.target_tokens
    assert sum(o.nats for o in many.batch_outputs) == pytest.approx(many.nats, abs=many.batches * NATS_QUANTUM)
    assert [o.target_bytes for o in one.batch_outputs] == [o.target_bytes for o in many.batch_outputs]
    assert all(abs(a.nats_q - b.nats_q) <= 1 for a, b in zip(one.batch_outputs, many.batch_outputs))
    assert many.outputs == outputs_digest(4, many.batch_outputs) and len(many.outputs) == 32


@pytest.mark.slow
def test_another_model_commits_to_other_outputs(work: Path, data: PreparedData, many: EvalReport,
                                                tmp_path: Path) -> None:
    import safetensors.torch

    other = tmp_path / "other"
    shutil.copytree(work, other)
    weights = safetensors.torch.load_file(str(other / "model.safetensors"))
    weights["lm_head.weight"] = weights["lm_head.weight"] * 1.01  # a slightly different model
    safetensors.torch.save_file(weights, str(other / "model.safetensors"))
    changed = _evaluate(other, data)
    assert changed.val_bpb != many.val_bpb and changed.outputs != many.outputs
    assert [o.target_bytes for o in changed.batch_outputs] == [o.target_bytes for o in many.batch_outputs]
