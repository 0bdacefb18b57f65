"""Every cheating train.py under tests/trainer/cheats/ must be caught, with a reason that says why.

Each run uses the real sandbox (bubblewrap) and the tiny CPU profile on synthetic data; budgets are
2 s, with wall limits that leave several times the headroom a slow CI machine needs.
"""
from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from trainer.data_format import PreparedData, synthetic
from trainer.harness import harness_hash
from trainer.runner import ExperimentResult, run_experiment
from trainer.sandbox import find_bwrap

CHEATS = Path(__file__).parent / "cheats"
GENESIS = Path(__file__).parents[2] / "trainer" / "train.py"
BUDGET_S = 2.0

pytestmark = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    return synthetic(tmp_path_factory.mktemp("data"), n_train=60_000, n_val=20_000, seed=3)


@pytest.fixture()
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / ".autoswarm").mkdir(parents=True)
    (home / ".autoswarm" / "node.key").write_bytes(b"\x01" * 32)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AUTOSWARM_HOME", str(home / ".autoswarm"))
    return home


def cheat(name: str, tmp_path: Path, **fills: str) -> Path:
    text = (CHEATS / name).read_text()
    for key, value in fills.items():
        text = text.replace(f"__{key}__", value)
    path = tmp_path / "cand" / "train.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run(path: Path, data: PreparedData, **kw: object) -> ExperimentResult:
    kw.setdefault("budget_s", BUDGET_S)
    result = run_experiment(path, None, data, profile="cpu", seed=0, **kw)  # type: ignore[arg-type]
    assert result.val_bpb is None or result.status == "ok"
    return result


@pytest.mark.slow
def test_fake_printed_val_bpb_is_ignored(tmp_path: Path, data: PreparedData, fake_home: Path) -> None:
    result = run(cheat("fake_bpb.py", tmp_path), data)
    assert result.status == "ok", result.reason + result.log_tail
    assert result.val_bpb is not None and result.val_bpb > 1.0  # the harness's measurement
    assert "ignored the val_bpb train.py printed (0.001)" in result.reason


@pytest.mark.slow
def test_reading_the_validation_shard_fails(tmp_path: Path, data: PreparedData, fake_home: Path) -> None:
    result = run(cheat("read_val.py", tmp_path, VAL_PATH=str(data.val_tokens)), data)
    assert result.status == "crash"
    assert "cannot read val.bin" in result.reason and "No such file" in result.reason
    assert "CHEAT SUCCEEDED" not in result.log_tail


@pytest.mark.slow
def test_looking_ahead_is_rejected(tmp_path: Path, data: PreparedData, fake_home: Path) -> None:
    result = run(cheat("look_ahead.py", tmp_path), data)
    assert result.status == "rejected", result.reason + result.log_tail
    assert result.reason.startswith("looks ahead:")


@pytest.mark.slow
def test_patched_loss_functions_are_caught(tmp_path: Path, data: PreparedData, fake_home: Path) -> None:
    result = run(cheat("patch_loss.py", tmp_path), data)
    assert result.status == "rejected", result.reason + result.log_tail
    assert "reported log-probs do not match the model's own logits" in result.reason


@pytest.mark.slow
def test_tensor_subclass_is_rejected(tmp_path: Path, data: PreparedData, fake_home: Path) -> None:
    result = run(cheat("tensor_subclass.py", tmp_path), data)
    assert result.status == "rejected", result.reason + result.log_tail
    assert "not a plain torch.Tensor" in result.reason and "Logits" in result.reason


def test_second_changed_file_is_rejected_before_running(tmp_path: Path, data: PreparedData) -> None:
    parent, child = tmp_path / "parent", tmp_path / "child"
    for root in (parent, child):
        (root / "trainer").mkdir(parents=True)
        shutil.copy(GENESIS, root / "train.py")
        shutil.copy(GENESIS.parent / "evaluate.py", root / "trainer" / "evaluate.py")
    with open(child / "trainer" / "evaluate.py", "a") as f:
        f.write("\n# a friendlier loss\n")
    (child / "notes.txt").write_text("added")
    started = time.monotonic()
    result = run_experiment(child, parent, data, profile="cpu", budget_s=BUDGET_S)
    assert result.status == "rejected"
    assert "changes files outside ['train.py']: notes.txt, trainer/evaluate.py" in result.reason
    assert time.monotonic() - started < 5.0  # rejected without training


def test_symlinked_file_is_rejected(tmp_path: Path, data: PreparedData) -> None:
    parent, child = tmp_path / "parent", tmp_path / "child"
    for root in (parent, child):
        root.mkdir()
        shutil.copy(GENESIS, root / "train.py")
    (child / "link").symlink_to(data.val_tokens)
    result = run_experiment(child, parent, data, profile="cpu", budget_s=BUDGET_S)
    assert result.status == "rejected" and "only regular files" in result.reason


@pytest.mark.slow
def test_writing_the_harness_fails(tmp_path: Path, data: PreparedData, fake_home: Path) -> None:
    before = harness_hash()
    target = GENESIS.parent / "evaluate.py"
    result = run(cheat("write_harness.py", tmp_path, HARNESS_EVALUATE=str(target)), data)
    assert result.status == "crash"
    assert result.reason.startswith("tried to write outside its work folder")
    assert harness_hash() == before and "# pwned" not in target.read_text()


@pytest.mark.slow
def test_network_is_unreachable(tmp_path: Path, data: PreparedData, fake_home: Path) -> None:
    received: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                received.append(conn.recv(1024))

    thread = threading.Thread(target=accept, name="test-server", daemon=True)
    thread.start()
    try:
        port = server.getsockname()[1]
        result = run(cheat("network.py", tmp_path, PORT=str(port)), data)
    finally:
        stop.set()
        thread.join(timeout=5.0)
        server.close()
    assert result.status == "crash"
    assert "ConnectionRefusedError" in result.reason or "unreachable" in result.reason
    assert received == []


@pytest.mark.slow
def test_writing_outside_the_work_folder_fails(tmp_path: Path, data: PreparedData, fake_home: Path) -> None:
    outside = tmp_path / "outside.txt"
    result = run(cheat("write_outside.py", tmp_path, OUTSIDE_PATH=str(outside)), data)
    assert result.status == "crash"
    assert "outside.txt" in result.reason
    assert not outside.exists()


@pytest.mark.slow
def test_node_key_is_invisible(tmp_path: Path, data: PreparedData, fake_home: Path) -> None:
    key = fake_home / ".autoswarm" / "node.key"
    result = run(cheat("read_key.py", tmp_path, KEY_PATH=str(key)), data)
    assert result.status == "crash"
    assert "node key not readable" in result.reason
    assert "CHEAT SUCCEEDED" not in result.log_tail and "0101010101" not in result.log_tail


@pytest.mark.slow
def test_running_past_the_limit_is_killed_with_its_children(tmp_path: Path, data: PreparedData,
                                                            fake_home: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    started = time.monotonic()
    result = run(cheat("run_forever.py", tmp_path), data, wall_limit_s=8.0, work_root=keep, keep_work=True)
    assert result.status == "timeout"
    assert "wall-clock limit of 8 s" in result.reason
    assert time.monotonic() - started < 30.0
    (beat,) = keep.glob("*/work/heartbeat")
    size = beat.stat().st_size
    time.sleep(1.0)
    assert beat.stat().st_size == size  # the detached child died with the sandbox


@pytest.mark.slow
def test_exhausting_memory_crashes_cleanly(tmp_path: Path, data: PreparedData, fake_home: Path) -> None:
    result = run(cheat("exhaust_memory.py", tmp_path), data, memory_limit_mb=1536)
    assert result.status == "crash"
    assert result.reason.startswith("out of memory (limit 1536 MB)")


@pytest.mark.slow
def test_nan_loss_is_a_crash(tmp_path: Path, data: PreparedData, fake_home: Path) -> None:
    result = run(cheat("nan_loss.py", tmp_path), data)
    assert result.status == "crash"
    assert "FAIL: loss is nan" in result.reason


@pytest.mark.slow
def test_nan_weights_fail_evaluation(tmp_path: Path, data: PreparedData, fake_home: Path) -> None:
    result = run(cheat("nan_weights.py", tmp_path), data)
    assert result.status == "crash", result.reason + result.log_tail
    assert "not finite" in result.reason
