"""Data fit for a profile: the offline corpus is refused on a GPU, a synthetic set is sized to serve it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.constants import PROFILES, get_profile
from trainer.data_fit import MIN_EVAL_BATCHES, data_problem, fit_problem, min_val_tokens, synthetic_sizes
from trainer.data_format import synthetic
from trainer.runner import RunnerError, run_experiment

ROOT = Path(__file__).resolve().parents[2]
OFFLINE_TRAIN_TOKENS, OFFLINE_VAL_TOKENS = 840_000, 89_693  # the offline default corpus (issue 15)


def test_synthetic_sets_hold_several_eval_batches_of_each_profile() -> None:
    gpu = get_profile("gpu")
    n_train, n_val, vocab = synthetic_sizes(gpu)
    assert n_val >= 4 * 32 * 2048 and n_val >= min_val_tokens(gpu)
    assert n_train >= 64 << 20 and vocab == 8192  # 128 reference steps of 2^19 tokens
    for profile in PROFILES.values():
        assert fit_problem(*synthetic_sizes(profile)[:2], profile) is None


def test_the_offline_corpus_is_refused_on_a_gpu_with_what_to_do() -> None:
    problem = fit_problem(OFFLINE_TRAIN_TOKENS, OFFLINE_VAL_TOKENS, get_profile("gpu"), "offline:kjv")
    assert problem is not None
    assert "(offline:kjv) holds 840,000 training and 89,693 validation tokens" in problem
    assert f"{MIN_EVAL_BATCHES} eval batches of 32 x 2048" in problem
    assert "--source climbmix" in problem and "--synthetic" in problem
    assert fit_problem(OFFLINE_TRAIN_TOKENS, OFFLINE_VAL_TOKENS, get_profile("cpu")) is None


def test_fit_is_monotone_in_both_sizes() -> None:
    # hypothesis is a dev dependency; a GPU image may lack it, and this module must still run there.
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(n_train=st.integers(0, 1 << 30), n_val=st.integers(0, 1 << 26),
                      name=st.sampled_from(sorted(PROFILES)))
    def monotone(n_train: int, n_val: int, name: str) -> None:
        profile = get_profile(name)
        if fit_problem(n_train, n_val, profile) is None:
            assert fit_problem(n_train * 2, n_val + 1, profile) is None
        else:
            assert fit_problem(n_train // 2, max(0, n_val - 1), profile) is not None

    monotone()


def test_a_synthetic_gpu_set_is_written_at_its_size(tmp_path: Path) -> None:
    gpu = get_profile("gpu")
    n_train, n_val, vocab = synthetic_sizes(gpu)
    n_train //= 64  # the full 64M tokens take ~30 s on a loaded 2-core machine; the sizing is what matters
    data = synthetic(tmp_path / "d", n_train=n_train, n_val=n_val, vocab_size=vocab)
    val = np.fromfile(data.val_tokens, dtype="<u2")
    assert len(val) == n_val and data.vocab_size == vocab and int(val.max()) < vocab
    assert len(np.unique(val)) > vocab // 2  # the whole vocabulary is in use, not 256 ids
    assert data_problem(data, get_profile("cpu")) is None
    assert "validation tokens" in (data_problem(data, gpu) or "")  # too few training tokens now


def test_small_synthetic_sets_are_one_chain_as_before(tmp_path: Path) -> None:
    # Up to 65,536 tokens the generator is the old single chain: tests' data did not change.
    a = np.fromfile(synthetic(tmp_path / "a", n_train=50_000, n_val=1000, seed=5).train_tokens, dtype="<u2")
    rng = np.random.default_rng(5)
    table = rng.integers(1, 256, size=(256, 256))
    noise, rand = rng.random(50_000) < 0.1, rng.integers(1, 256, size=50_000)
    x, y, ref = 1, 2, []
    for i in range(50_000):
        c = int(rand[i]) if noise[i] else int(table[x, y])
        ref.append(c)
        x, y = y, c
    expected = np.array(ref)
    expected[::512] = 0
    assert np.array_equal(a, expected)


def test_the_runner_refuses_a_dataset_too_small_for_the_gpu_before_running(tmp_path: Path) -> None:
    data = synthetic(tmp_path / "d", n_train=60_000, n_val=20_000)
    with pytest.raises(RunnerError, match="the gpu profile needs at least"):
        run_experiment(ROOT / "trainer" / "train.py", None, data, profile="gpu", budget_s=1.0, sandboxed=False)
