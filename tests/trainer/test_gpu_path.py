"""The GPU path, checked without a GPU: the sandbox's device nodes, environment and limits for CUDA,
the refusal without bubblewrap, and the training budget's safety stop with a slow cold compile."""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import sandbox
from trainer.constants import PROFILES
from trainer.data_format import PreparedData, synthetic

ROOT = Path(__file__).resolve().parents[2]
GENESIS = ROOT / "trainer" / "train.py"
RUN_TIMEOUT_S = 300


@pytest.fixture
def fake_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A /dev with a GPU's control nodes but no nvidia-uvm yet, as on a host that never ran CUDA;
    "initializing CUDA" creates the node, as the driver does."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidiactl", "nvidia0"):
        (dev / name).touch()
    monkeypatch.setattr(sandbox, "DEV_DIR", dev)
    monkeypatch.setattr(sandbox, "_cuda_initialized", [])
    monkeypatch.setattr(sandbox, "CUDA_INIT_COMMANDS", (("/nonexistent/nvidia-modprobe", "-u"),
                                                         ("touch", str(dev / "nvidia-uvm"))))
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: "/usr/bin/bwrap")
    return dev


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_cuda_is_initialized_on_the_host_before_the_device_nodes_are_bound(fake_gpu: Path, tmp_path: Path) -> None:
    spec = sandbox.SandboxSpec(work_dir=tmp_path, work_writable=True, cuda=True)
    argv = sandbox.build_argv(spec, ["python"])
    bound = _pairs(argv, "--dev-bind")
    assert bound == [str(fake_gpu / n) for n in ("nvidia-uvm", "nvidia0", "nvidiactl")]
    assert "/sys" in _pairs(argv, "--ro-bind")
    cpu = sandbox.build_argv(sandbox.SandboxSpec(work_dir=tmp_path, work_writable=True), ["python"])
    assert _pairs(cpu, "--dev-bind") == []  # the CPU profile sees no GPU


def test_a_failed_cuda_init_says_why(fake_gpu: Path) -> None:
    problem = sandbox.init_cuda_on_host(fake_gpu, commands=(("/nonexistent/nvidia-modprobe",),))
    assert "nvidia-modprobe" in problem and not (fake_gpu / "nvidia-uvm").exists()
    assert sandbox.init_cuda_on_host(fake_gpu.parent) == ""  # no GPU at all: nothing to do


def test_a_cuda_sandbox_inherits_the_gpu_environment_and_nothing_else(
        fake_gpu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = {"CUDA_VISIBLE_DEVICES": "0", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
            "TRITON_PTXAS_PATH": "/usr/local/cuda/bin/ptxas", "TORCH_CUDA_ARCH_LIST": "9.0",
            "TORCHINDUCTOR_MAX_AUTOTUNE": "0", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
            "LD_LIBRARY_PATH": "/usr/local/nvidia/lib64", "CUDNN_LOGLEVEL_DBG": "0",
            # never inherited: secrets, the host's home, and the compile caches (a poisoned cache)
            "AWS_SECRET_ACCESS_KEY": "x", "HOME": "/root", "AUTOSWARM_HOME": "/root/.autoswarm",
            "TORCHINDUCTOR_CACHE_DIR": "/shared/poisoned", "TRITON_CACHE_DIR": "/shared/poisoned-triton"}
    for key, value in host.items():
        monkeypatch.setenv(key, value)
    passed = sandbox.passed_env(host)
    assert set(passed) == {"CUDA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "TRITON_PTXAS_PATH",
                           "TORCH_CUDA_ARCH_LIST", "TORCHINDUCTOR_MAX_AUTOTUNE", "PYTORCH_CUDA_ALLOC_CONF",
                           "LD_LIBRARY_PATH", "CUDNN_LOGLEVEL_DBG"}
    argv = sandbox.build_argv(sandbox.SandboxSpec(work_dir=tmp_path, work_writable=True, cuda=True), ["python"])
    env = dict(zip(_pairs(argv, "--setenv"), [argv[i + 2] for i, a in enumerate(argv[:-2]) if a == "--setenv"]))
    assert {k: env[k] for k in passed} == passed
    assert env["TORCHINDUCTOR_CACHE_DIR"] == "/autoswarm/work/.cache/inductor"
    assert env["TRITON_CACHE_DIR"] == "/autoswarm/work/.cache/triton"
    assert env["HOME"] == "/autoswarm/work" and "AWS_SECRET_ACCESS_KEY" not in env and "AUTOSWARM_HOME" not in env
    assert "--clearenv" in argv
    cpu = sandbox.sandbox_env(sandbox.SandboxSpec(work_dir=tmp_path, work_writable=True))
    assert "TRITON_PTXAS_PATH" not in cpu and "CUDA_VISIBLE_DEVICES" not in cpu


def test_memory_limits_fit_cuda_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = sandbox.SandboxSpec(work_dir=tmp_path, work_writable=True, cuda=True, memory_limit_mb=64 << 10)
    cpu = sandbox.SandboxSpec(work_dir=tmp_path, work_writable=True, memory_limit_mb=4096)
    assert resource.RLIMIT_AS not in sandbox.rlimits(gpu) and sandbox.needs_watchdog(gpu)
    monkeypatch.setattr(sandbox, "torch_is_cuda_build", lambda: False)
    assert sandbox.rlimits(cpu)[resource.RLIMIT_AS] == (4096 << 20, 4096 << 20) and not sandbox.needs_watchdog(cpu)
    monkeypatch.setattr(sandbox, "torch_is_cuda_build", lambda: True)  # a CUDA build maps GBs of libraries
    widened = (4096 + sandbox.CUDA_TORCH_ADDRESS_SPACE_MB) << 20
    assert sandbox.rlimits(cpu)[resource.RLIMIT_AS] == (widened, widened) and sandbox.needs_watchdog(cpu)
    for spec in (gpu, cpu):
        assert sandbox.rlimits(spec)[resource.RLIMIT_CORE] == (0, 0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    return synthetic(tmp_path_factory.mktemp("data"), n_train=60_000, n_val=20_000, seed=5)


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "trainer", "run", "trainer/train.py", "--profile", "cpu"],
    [sys.executable, "scripts/bench_trainer.py", "--profile", "cpu", "--synthetic"],
])
def test_no_bubblewrap_is_a_one_line_refusal_naming_the_opt_out(
        command: list[str], data: PreparedData, tmp_path: Path) -> None:
    if command[1] == "-m":
        command = command + ["--data", str(data.root)]
    env = {k: v for k, v in os.environ.items() if k != sandbox.ENV_NO_SANDBOX}
    env["PATH"] = str(tmp_path)  # an image without bwrap on its PATH
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bubblewrap (bwrap) is not installed" in lines[0]
    assert "--no-sandbox" in lines[0] and "AUTOSWARM_NO_SANDBOX=1" in lines[0]


def _train_module():  # type: ignore[no-untyped-def]
    import importlib

    return importlib.import_module("trainer.train")


def test_the_safety_stop_counts_from_the_first_timed_step() -> None:
    train = _train_module()
    slack = train.STOP_SLACK_S
    # Before the first timed step (compiling) only the runner's hard limit applies.
    assert not train.past_budget(0.0, now_s=10_000.0, timed_from_s=None, budget_s=300.0)
    # A cold compile of 200 s: the timed steps began at t=200; at t=200+300 the budget's steps ran.
    assert not train.past_budget(299.0, now_s=200.0 + 300.0, timed_from_s=200.0, budget_s=300.0)
    assert train.past_budget(300.0, now_s=200.0 + 300.0, timed_from_s=200.0, budget_s=300.0)
    # Slowed steps (a shared machine): stopped once the wall since the first timed step passes the slack.
    assert not train.past_budget(100.0, now_s=200.0 + 300.0 + slack, timed_from_s=200.0, budget_s=300.0)
    assert train.past_budget(100.0, now_s=200.0 + 300.0 + slack + 1, timed_from_s=200.0, budget_s=300.0)
    # The backstop before the runner's hard kill (budget + allowance after the start) keeps a reserve.
    backstop = 300.0 + train.PROFILE.startup_allowance_s - train.SAVE_RESERVE_S
    assert not train.past_budget(100.0, now_s=backstop, timed_from_s=backstop - 10, budget_s=300.0, started_s=0.0)
    assert train.past_budget(100.0, now_s=backstop + 1, timed_from_s=backstop - 10, budget_s=300.0, started_s=0.0)
    # A compile may take longer than under the old rule (cut at budget + allowance / 2 from the start).
    assert backstop - 300.0 > train.PROFILE.startup_allowance_s / 2


@pytest.mark.slow
def test_a_slow_cold_start_is_not_cut_short(tmp_path: Path, data: PreparedData) -> None:
    # The genesis train.py with its first (untimed) step slowed like a slow cold compile: longer than
    # half the startup allowance, after which the old rule (wall time since the start > budget +
    # allowance / 2) stopped the run before its first timed step. The allowance is raised to 60 s
    # (as on a GPU profile, 240 s) so that the gap between the old rule and the backstop before the
    # runner's hard kill holds a loaded machine's imports and steps.
    slow_s, budget_s, allowance_s = 32.0, 4.0, 60.0
    source = GENESIS.read_text()
    marker, profile_line = "        t0 = time.time()\n", "PROFILE = profile_from_env()\n"
    assert source.count(marker) == 1 and source.count(profile_line) == 1
    source = source.replace(marker, marker + f"        time.sleep({slow_s} if step == 0 else 0)\n")
    source = source.replace(profile_line, "import dataclasses\nPROFILE = dataclasses.replace(profile_from_env(), "
                                          f"startup_allowance_s={allowance_s})\n")
    (tmp_path / "train.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOSWARM_PROFILE": "cpu", "AUTOSWARM_BUDGET_S": str(budget_s),
           "AUTOSWARM_SEED": "1", "AUTOSWARM_DATA": str(data.root),
           **PROFILES["cpu"].thread_env()}  # the harness's thread count for the profile, as its sandbox sets
    proc = subprocess.run([sys.executable, "-P", "train.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    values = dict(re.findall(r"^(\w+): (\S+)$", proc.stdout, re.M))
    assert float(values["warmup_seconds"]) >= slow_s
    # The slow start cut nothing: the run trained timed steps until the horizon it planned from its
    # first ones, or until its own budget was spent. (Which of the two ends it depends on how steady
    # those first steps were, which a shared CI machine does not promise: once a step measured at
    # 36 ms ran at 27 ms after the plan, 3.03 s of a 4 s budget; once, beside another test, the plan
    # said 11 steps and 11 steps took 4.65 s.)
    steps, training_s = int(values["num_steps"]), float(values["training_seconds"])
    assert steps > _train_module().UNTIMED_STEPS and training_s > 0, proc.stdout[-2000:]
    assert steps == int(values["planned_steps"]) or training_s >= budget_s, proc.stdout[-2000:]
