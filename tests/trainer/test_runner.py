"""The runner end to end on the tiny CPU profile: train -> evaluate, replay, rules, CLI, sandbox."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer import evaluate, sandbox
from trainer.constants import PROFILES, get_profile
from trainer.contract import Contract
from trainer.data_format import PreparedData, synthetic
from trainer.harness import harness_files, harness_hash
from trainer.runner import ExperimentResult, RunnerError, _check_contract, _Rejected, check_allowed, run_experiment

ROOT = Path(__file__).resolve().parents[2]
GENESIS = ROOT / "trainer" / "train.py"
BUDGET_S = 2.0
CLI_TIMEOUT_S = 180
needs_bwrap = pytest.mark.skipif(sandbox.find_bwrap() is None, reason="bubblewrap is not installed")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    return synthetic(tmp_path_factory.mktemp("data"), n_train=60_000, n_val=20_000, seed=5)


@pytest.fixture(scope="module")
def timed(data: PreparedData) -> ExperimentResult:
    return run_experiment(GENESIS, None, data, profile="cpu", budget_s=BUDGET_S, seed=11)


@needs_bwrap
@pytest.mark.slow
def test_genesis_trains_and_is_evaluated(timed: ExperimentResult) -> None:
    r = timed
    assert r.status == "ok", r.reason + r.log_tail
    assert r.val_bpb is not None and 0.5 < r.val_bpb < 8.0  # 8 bits/byte = uniform over 256 ids
    assert r.num_steps is not None and r.planned_steps is not None and 1 <= r.num_steps <= r.planned_steps
    assert r.seed == 11 and r.device == "cpu" and r.profile == "cpu" and r.steps is None
    assert r.loss_curve and r.loss_curve[0][0] == 0 and r.loss_curve[-1][1] < r.loss_curve[0][1]
    assert r.harness_hash == harness_hash() and len(r.candidate_sha256) == 64
    assert r.probe_max_diff is not None and r.probe_max_diff <= PROFILES["cpu"].probe_atol
    assert r.train_wall_seconds is not None and r.eval_seconds is not None
    assert r.outputs is not None and len(bytes.fromhex(r.outputs)) == 32
    assert ExperimentResult.from_dict(json.loads(r.to_json())) == r


@needs_bwrap
@pytest.mark.slow
def test_replays_are_bit_identical_and_reproduce_the_timed_run(timed: ExperimentResult, data: PreparedData) -> None:
    # The timed run fixed its horizon after its first steps; the schedule is a function of
    # (step, horizon) and the data of (seed, step), so replaying that many steps is the same run.
    assert timed.status == "ok" and timed.planned_steps is not None
    # A loaded machine may cut the timed run short of its horizon (its budget guard): the
    # replay then gets both numbers.
    replays = [run_experiment(GENESIS, None, data, profile="cpu", budget_s=BUDGET_S, seed=11,
                              steps=timed.num_steps, horizon=timed.planned_steps, eval_seed=timed.eval_seed)
               for _ in range(2)]
    for replay in replays:
        assert replay.status == "ok", replay.reason + replay.log_tail
        assert replay.steps == replay.num_steps == timed.num_steps
        assert replay.planned_steps == timed.planned_steps
    assert replays[0].val_bpb == replays[1].val_bpb == timed.val_bpb  # exact equality, not approximate
    # and so is the commitment to the evaluation's per-batch outputs that a verify entry carries
    assert timed.outputs is not None and replays[0].outputs == replays[1].outputs == timed.outputs
    assert replays[0].loss_curve == replays[1].loss_curve
    assert [loss for _, loss in replays[0].loss_curve] == [loss for _, loss in timed.loss_curve]


def test_only_allowed_files_may_change(tmp_path: Path) -> None:
    parent, child = tmp_path / "parent", tmp_path / "child"
    for root in (parent, child):
        (root / "trainer").mkdir(parents=True)
        shutil.copy(GENESIS, root / "train.py")
        (root / "trainer" / "constants.py").write_text("TIME_BUDGET_S = 300\n")
        (root / ".git").mkdir()
    (child / ".git" / "HEAD").write_text("ignored")
    with open(child / "train.py", "a") as f:
        f.write("\n# a new idea\n")
    assert check_allowed(child, parent, ("train.py",)) == child / "train.py"
    (child / "trainer" / "constants.py").unlink()
    with pytest.raises(_Rejected, match=r"outside \['train.py'\]: trainer/constants.py"):
        check_allowed(child, parent, ("train.py",))
    assert check_allowed(child, parent, ("train.py", "trainer/constants.py")) == child / "train.py"


def test_candidate_without_train_py_is_rejected(tmp_path: Path, data: PreparedData) -> None:
    (tmp_path / "empty").mkdir()
    result = run_experiment(tmp_path / "empty", None, data, profile="cpu", budget_s=BUDGET_S, sandboxed=False)
    assert result.status == "rejected" and "has no train.py" in result.reason and result.val_bpb is None


def test_missing_bwrap_is_a_refusal(monkeypatch: pytest.MonkeyPatch, data: PreparedData) -> None:
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    monkeypatch.delenv(sandbox.ENV_NO_SANDBOX, raising=False)
    with pytest.raises(sandbox.SandboxUnavailable, match="opt out explicitly with --no-sandbox"):
        run_experiment(GENESIS, None, data, profile="cpu", budget_s=BUDGET_S)


def test_bwrap_without_namespaces_is_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: "/usr/bin/bwrap")
    monkeypatch.setattr(sandbox, "_preflight", lambda: "setting up uid map: Permission denied")
    with pytest.raises(sandbox.SandboxUnavailable, match="cannot create its namespaces here"):
        sandbox.check_available(True)
    sandbox.check_available(False)  # the explicit opt-out needs no bwrap


def test_silent_cpu_fallback_and_step_mismatch_are_caught() -> None:
    gpu, cpu = get_profile("gpu"), get_profile("cpu")
    fallback = Contract(num_steps=10, device="cpu", peak_vram_mb=0.0)
    assert _check_contract(fallback, gpu, 0, None) == (
        "crash", "silent CPU fallback: the gpu profile ran on device 'cpu' with peak_vram_mb 0.0")
    assert _check_contract(Contract(num_steps=10, device="cuda", peak_vram_mb=0.0), gpu, 0, None) == (
        "crash", "silent CPU fallback: the gpu profile ran on device 'cuda' with peak_vram_mb 0.0")
    assert _check_contract(Contract(num_steps=10, device="cuda:0", peak_vram_mb=900.0), gpu, 0, None) is None
    assert _check_contract(Contract(num_steps=9, device="cpu"), cpu, 0, 10) == (
        "rejected", "replay asked for exactly 10 steps, train.py reports 9")
    assert _check_contract(Contract(num_steps=10, device="cpu", seed=3), cpu, 4, None) == (
        "rejected", "train.py reports seed 3, the runner gave 4")
    assert _check_contract(Contract(num_steps=10, device="cpu", planned_steps=12), cpu, 0, 10) == (
        "rejected", "replay asked for horizon 10, train.py reports 12")
    assert _check_contract(Contract(num_steps=0, device="cpu"), cpu, 0, None) == (
        "crash", "train.py ran no training step")


def test_result_validates_itself() -> None:
    base = dict(reason="", seed=0, steps=None, horizon=None, num_steps=1, planned_steps=1, profile="cpu", device="cpu",
                budget_s=1.0, total_seconds=1.0, train_wall_seconds=1.0, eval_seconds=1.0, training_seconds=1.0)
    with pytest.raises(RunnerError):
        ExperimentResult(status="great", val_bpb=1.0, **base)  # type: ignore[arg-type]
    with pytest.raises(RunnerError):
        ExperimentResult(status="ok", val_bpb=float("nan"), **base)  # type: ignore[arg-type]
    with pytest.raises(RunnerError):
        ExperimentResult(status="crash", val_bpb=1.0, **base)  # type: ignore[arg-type]
    long = ExperimentResult(status="crash", val_bpb=None, log_tail="x" * 100_000, **base)  # type: ignore[arg-type]
    assert len(long.log_tail) < 20_000
    base["reason"] = "y" * 10_000
    diverged = ExperimentResult(status="crash", val_bpb=None, loss_curve=((0, 5.0), (1, float("nan"))),
                                **base)  # type: ignore[arg-type]
    assert len(diverged.reason) < 1000
    back = ExperimentResult.from_dict(json.loads(diverged.to_json()))  # NaN travels as null
    assert back.loss_curve[0] == (0, 5.0) and np.isnan(back.loss_curve[1][1])


def test_outputs_travel_as_hex_and_older_results_parse() -> None:
    base = dict(reason="", seed=0, steps=None, horizon=None, num_steps=1, planned_steps=1, profile="cpu", device="cpu",
                budget_s=1.0, total_seconds=1.0, train_wall_seconds=1.0, eval_seconds=1.0, training_seconds=1.0)
    digest = "ab" * 32
    ok = ExperimentResult(status="ok", val_bpb=1.5, outputs=digest, **base)  # type: ignore[arg-type]
    raw = json.loads(ok.to_json())
    assert raw["outputs"] == digest and ExperimentResult.from_dict(raw) == ok
    del raw["outputs"]  # a result printed by a trainer from before the commitment
    assert ExperimentResult.from_dict(raw).outputs is None
    for bad in ("AB" * 32, "ab" * 31, "zz" * 32, 7):
        with pytest.raises(RunnerError, match="outputs must be 64 lowercase hex digits"):
            ExperimentResult(status="ok", val_bpb=1.5, outputs=bad, **base)  # type: ignore[arg-type]
    with pytest.raises(RunnerError, match="on an ok result"):
        ExperimentResult(status="crash", val_bpb=None, outputs=digest, **base)  # type: ignore[arg-type]


def test_val_rows_and_splice() -> None:
    profile = get_profile("cpu")
    val = np.random.default_rng(0).integers(1, 50, 200_000).astype(np.uint16)
    rows = evaluate.val_rows(val, profile, eval_seed=7)
    t, b = profile.seq_len, profile.eval_batch_size
    assert rows.shape == (profile.eval_tokens // (t * b), b, t + 1)
    assert np.array_equal(rows, evaluate.val_rows(val, profile, eval_seed=7))
    assert not np.array_equal(rows, evaluate.val_rows(val, profile, eval_seed=8))
    flat = rows.reshape(-1, t + 1)
    starts = [int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(val, t + 1) == r, axis=1))[0])
              for r in flat[:8]]
    assert all(abs(a - c) >= t + 1 for i, a in enumerate(starts) for c in starts[i + 1:])  # no overlaps
    spliced, cuts = evaluate.splice(rows[0], val, np.random.default_rng(1))
    for r, cut in enumerate(cuts):
        assert np.array_equal(spliced[r, : cut + 1], rows[0, r, : cut + 1])
        assert spliced[r, cut + 1] != rows[0, r, cut + 1]
    with pytest.raises(evaluate.EvalCrashed, match="smaller than one batch"):
        evaluate.val_rows(val[:100], profile, eval_seed=0)


def test_log_softmax_is_stable() -> None:
    rows = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    out = evaluate.log_softmax(rows)
    assert np.isfinite(out).all() and abs(out[0, 0]) < 1e-12
    assert np.allclose(out[1], -np.log(3))


def test_harness_hash_covers_everything_but_train_py(tmp_path: Path) -> None:
    copy = tmp_path / "trainer"
    shutil.copytree(ROOT / "trainer", copy, ignore=shutil.ignore_patterns("__pycache__"))
    names = [p.name for p in harness_files(copy)]
    assert "train.py" not in names and "evaluate.py" in names and "constants.py" in names
    before = harness_hash(copy)
    assert before == harness_hash(ROOT / "trainer")
    (copy / "train.py").write_text("# anything\n")
    assert harness_hash(copy) == before
    with open(copy / "evaluate.py", "a") as f:
        f.write("\n")
    assert harness_hash(copy) != before


def test_sandbox_binds_no_home_and_refuses_exposed_secrets(tmp_path: Path) -> None:
    spec = sandbox.SandboxSpec(work_dir=tmp_path, work_writable=True, hidden=(Path.home(),))
    argv = sandbox.build_argv(spec, ["python"]) if sandbox.find_bwrap() else []
    assert str(Path.home()) not in [argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")]
    secret = Path(sys.prefix) / "node.key"
    with pytest.raises(sandbox.PathExposed):
        sandbox.build_argv(sandbox.SandboxSpec(work_dir=tmp_path, work_writable=True, hidden=(secret,)), ["python"])
    with pytest.raises(sandbox.PathExposed):
        sandbox.SandboxSpec(work_dir=tmp_path, work_writable=False, data_files=(tmp_path / "val.bin",))


def test_tail_keeps_only_the_end() -> None:
    tail = sandbox.Tail(100)
    for i in range(1000):
        tail.append(f"line {i}\n".encode())
    text = tail.text()
    assert len(text) <= 100 and text.endswith("line 999\n") and tail.total_bytes > 5000


def test_drain_survives_a_failing_progress_callback() -> None:
    read_fd, write_fd = os.pipe()
    seen: list[str] = []

    def explode(line: str) -> None:
        seen.append(line)
        raise BrokenPipeError("stderr went away")

    tail = sandbox.Tail(1 << 16)
    with open(read_fd, "rb") as reader:
        thread = sandbox.drain(reader, tail, name="test-drain", on_line=explode)
        with open(write_fd, "wb") as writer:
            writer.write(b"".join(f"line {i}\n".encode() for i in range(1000)))
        thread.join(timeout=10.0)
    assert not thread.is_alive() and seen == ["line 0"] and tail.text().endswith("line 999\n")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, message", [
    (["run"], "the following arguments are required: candidate"),
    (["run", "train.py", "--budget-s", "soon"], "invalid float value"),
    (["run", "train.py", "--profile", "tpu"], "--profile must be cpu, gpu or auto"),
    (["run", "train.py", "--steps", "0"], "--steps must be positive"),
    (["run", "train.py", "--horizon", "9"], "--horizon needs --steps"),
    (["run", "trainer/train.py", "--data", "/nonexistent"], "not a prepared dataset"),
    (["fly"], "usage: python -m trainer run"),
    (["run", "/nonexistent/train.py", "--data", "/tmp"], "no such file or folder"),
])
def test_cli_bad_input_is_one_line(args: list[str], message: str) -> None:
    proc = _cli(*args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_bwrap
@pytest.mark.slow
def test_cli_prepares_the_default_dataset_and_runs(tmp_path: Path) -> None:
    # prepare -> train -> eval, through the real command line, on the offline default corpus
    proc = _cli("run", "trainer/train.py", "--profile", "cpu", "--budget-s", str(BUDGET_S), "--seed", "2",
                env={"AUTOSWARM_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok" and result["seed"] == 2 and 0 < result["val_bpb"] < 10
    assert "[train] step" in proc.stderr and "evaluating" in proc.stderr


def _has_cuda() -> bool:
    if not Path("/dev/nvidiactl").exists():
        return False
    import torch

    return torch.cuda.is_available()


needs_cuda = pytest.mark.skipif(not _has_cuda(), reason="needs an NVIDIA GPU that torch can use")


@pytest.mark.slow
@needs_cuda
def test_gpu_run_in_the_sandbox_really_uses_the_gpu(tmp_path: Path) -> None:
    from trainer.data_fit import synthetic_sizes

    n_train, n_val, vocab = synthetic_sizes(get_profile("gpu"))  # the offline corpus is too small for a GPU
    data = synthetic(tmp_path / "data", n_train=n_train, n_val=n_val, vocab_size=vocab)
    sandboxed = sandbox.find_bwrap() is not None  # a GPU image without bwrap still checks the GPU path
    first = run_experiment(GENESIS, None, data, profile="gpu", budget_s=30.0, seed=1, sandboxed=sandboxed)
    assert first.status == "ok", first.reason + first.log_tail
    assert first.device is not None and first.device.startswith("cuda")
    assert first.peak_vram_mb is not None and first.peak_vram_mb > 1000
    assert first.mfu_percent is not None and first.mfu_percent > 1
    # Whether GPU replays are bit-identical is a measurement, recorded in docs/trainer.md.
    replay = run_experiment(GENESIS, None, data, profile="gpu", budget_s=30.0, seed=1, steps=first.num_steps,
                            horizon=first.planned_steps, eval_seed=first.eval_seed, sandboxed=sandboxed)
    assert replay.status == "ok" and replay.num_steps == first.num_steps
    print(f"gpu replay: timed {first.val_bpb!r} replay {replay.val_bpb!r} identical={first.val_bpb == replay.val_bpb} "
          f"outputs_identical={first.outputs == replay.outputs}")
    assert first.outputs is not None and replay.outputs is not None


THREADS_PROBE = "import os, sys, torch\nprint('threads', torch.get_num_threads(), flush=True)\nsys.exit(3)\n"


@needs_bwrap
@pytest.mark.parametrize("threads", [None, 2])  # torch caps a count at the cores (2 in CI)
def test_the_sandbox_trains_on_the_profiles_threads(tmp_path: Path, data: PreparedData, threads: int | None) -> None:
    """One thread on the CPU profile, whatever the machine: a reduction's order follows its threads,
    and two threads on two shared cores took 5x longer a step than one (docs/benchmarks.md)."""
    path = tmp_path / "train.py"
    path.write_text(THREADS_PROBE)
    cpu = PROFILES["cpu"]
    profile = cpu if threads is None else dataclasses.replace(cpu, threads=threads)
    result = run_experiment(path, None, data, profile=profile, budget_s=BUDGET_S)
    want = 1 if threads is None else min(threads, os.cpu_count() or 1)
    assert result.status == "crash" and f"threads {want}\n" in result.log_tail, result.log_tail


@needs_bwrap
@pytest.mark.parametrize("source, reason", [
    ("print('---')\nprint('num_steps: 3')\nprint('device: cpu')\n",
     "train.py left no model.safetensors and model_config.json in its work folder"),
    ("print('training...')\n", "train.py printed no valid contract: no contract: the output has no '---' line"),
    ("print('---')\nprint('num_steps: 3')\nprint('num_steps: 4')\n", "duplicate key 'num_steps'"),
    ("import sys\nprint('---', flush=True)\nsys.exit(3)\n", "train.py exited with code 3"),
])
def test_missing_output_is_a_typed_crash(tmp_path: Path, data: PreparedData, source: str, reason: str) -> None:
    path = tmp_path / "train.py"
    path.write_text(source)  # no torch import: these fail in well under a second of training
    result = run_experiment(path, None, data, profile="cpu", budget_s=BUDGET_S)
    assert result.status == "crash" and reason in result.reason and result.val_bpb is None


def test_cli_takes_the_paths_to_hide_as_options() -> None:
    from trainer.__main__ import parse_run

    config = parse_run(["train.py", "--home", "/srv/node", "--hide", "/keys", "--hide", "/etc/secret"],
                       {"AUTOSWARM_HOME": "/elsewhere"})
    assert config.home == Path("/srv/node") and config.hidden_paths == (Path("/keys"), Path("/etc/secret"))
    assert parse_run(["train.py"], {"AUTOSWARM_HOME": "/h"}).home == Path("/h")  # the default, when no --home


def test_runner_hides_default_paths_without_reading_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.runner import default_hidden

    monkeypatch.setenv("AUTOSWARM_HOME", "/somewhere/else")
    assert default_hidden() == (Path.home() / ".autoswarm", Path.home())


@needs_bwrap
def test_an_explicit_hidden_path_is_enforced(tmp_path: Path, data: PreparedData) -> None:
    # A key inside a folder the sandbox binds (the interpreter's prefix): refused before running.
    secret = Path(sys.prefix) / "node.key"
    with pytest.raises(sandbox.PathExposed, match="node.key would be visible in the sandbox"):
        run_experiment(GENESIS, None, data, profile="cpu", budget_s=BUDGET_S, hidden_paths=(secret,),
                       work_root=tmp_path)
    assert list(tmp_path.iterdir()) == []  # and its work folder was removed
