"""Compile-cache isolation: candidates start from a private copy of a base only genesis fills."""
from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from trainer import compile_cache, sandbox
from trainer.data_format import PreparedData, synthetic
from trainer.runner import run_experiment

ROOT = Path(__file__).resolve().parents[2]
GENESIS = ROOT / "trainer" / "train.py"
needs_bwrap = pytest.mark.skipif(sandbox.find_bwrap() is None, reason="bubblewrap is not installed")

# A candidate that reports what its compile cache holds, then tries to poison it: it overwrites a
# copied entry and adds its own, in the folder the compilers would read (TORCHINDUCTOR_CACHE_DIR).
POISONER = '''
import os, pathlib, sys
root = pathlib.Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).parent
print("SAW", sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()), flush=True)
(root / "inductor").mkdir(parents=True, exist_ok=True)
for p in root.rglob("*"):
    if p.is_file():
        p.write_text("poison")
(root / "inductor" / "evil.py").write_text("import os; os.system('steal')")
sys.exit(3)
'''


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    return synthetic(tmp_path_factory.mktemp("data"), n_train=60_000, n_val=20_000, seed=5)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_publish_once_read_only_and_seed_a_private_copy(tmp_path: Path) -> None:
    work, base = tmp_path / "work", tmp_path / "caches" / "base"
    (work / ".cache" / "inductor").mkdir(parents=True)
    (work / ".cache" / "inductor" / "kernel.py").write_text("fast")
    assert compile_cache.publish(work, base) and _tree(base) == _tree(work / ".cache")
    mode = (base / "inductor" / "kernel.py").stat().st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    (work / ".cache" / "inductor" / "kernel.py").write_text("changed")
    assert not compile_cache.publish(work, base)  # never overwritten
    assert (base / "inductor" / "kernel.py").read_text() == "fast"
    run = tmp_path / "run"
    run.mkdir()
    assert compile_cache.seed(run, base)
    (run / ".cache" / "inductor" / "kernel.py").write_text("mine")  # the copy is the run's own
    assert (base / "inductor" / "kernel.py").read_text() == "fast"
    assert not compile_cache.seed(tmp_path / "other", tmp_path / "missing")
    assert [p.name for p in base.parent.iterdir()] == ["base"]  # no staging folder left behind


def test_the_base_is_keyed_by_harness_profile_and_torch(tmp_path: Path) -> None:
    gpu, cpu = compile_cache.base_dir(tmp_path, "gpu"), compile_cache.base_dir(tmp_path, "cpu")
    assert gpu != cpu and gpu.parent == tmp_path and "torch" in gpu.name


@needs_bwrap
@pytest.mark.slow
def test_candidates_cannot_poison_each_others_compile_cache(tmp_path: Path, data: PreparedData) -> None:
    base = compile_cache.base_dir(tmp_path / "caches", "cpu")
    poisoner = tmp_path / "poisoner.py"
    poisoner.write_text(POISONER)
    # A candidate cannot fill the base: only the genesis program does.
    first = run_experiment(poisoner, None, data, profile="cpu", budget_s=2.0, compile_cache=base)
    assert first.status == "crash" and "SAW []" in first.log_tail and not base.exists()
    genesis = run_experiment(GENESIS, None, data, profile="cpu", budget_s=2.0, compile_cache=base)
    assert genesis.status == "ok", genesis.reason + genesis.log_tail
    if not base.exists():  # the CPU profile compiles nothing: stand in for a GPU genesis run's cache
        staging = tmp_path / "staged"
        (staging / ".cache" / "inductor").mkdir(parents=True)
        (staging / ".cache" / "inductor" / "graph.py").write_text("compiled by genesis")
        assert compile_cache.publish(staging, base)
    before = _tree(base)
    for _ in range(2):  # each sees the base's entries, not the previous poisoner's
        r = run_experiment(poisoner, None, data, profile="cpu", budget_s=2.0, compile_cache=base)
        assert r.status == "crash" and "train.py exited with code 3" in r.reason
        saw = r.log_tail.split("SAW ", 1)[1].splitlines()[0]
        assert "evil.py" not in saw and all(f"'{name}'" in saw for name in before)
    assert _tree(base) == before
