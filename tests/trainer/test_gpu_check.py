"""scripts/gpu_check.sh passes its CPU fallback: the one-command GPU check runs end to end here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK_TIMEOUT_S = 900  # the script bounds itself at 480 s; a loaded CI machine gets headroom here


@pytest.mark.slow
def test_gpu_check_cpu_fallback_writes_its_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "check.jsonl"
    env = {**os.environ, "PYTHON": sys.executable, "PATH": f"{tmp_path}:{os.environ.get('PATH', '')}"}
    # A PATH entry that shadows nvidia-smi with a failing one: this test is the CPU fallback anywhere.
    (tmp_path / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")
    (tmp_path / "nvidia-smi").chmod(0o755)
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", str(out), "--budget-s", "1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "running the CPU fallback" in proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")] == lines
    kinds = [line["bench"] for line in lines]
    assert kinds[kinds.index("check_machine"):] == ["check_machine", "check_data"] + ["check_run"] * (
        len(kinds) - kinds.index("check_machine") - 3) + ["check_done"]
    runs = [line for line in lines if line["bench"] == "check_run"]
    assert [r["compile"] for r in runs][:2] == ["cold", "warm"] and all(r["status"] == "ok" for r in runs)
    for r in runs:
        for key in ("tokens_per_s", "compile_s", "eval_s", "overhead_s", "flops_per_token_ours",
                    "flops_per_token_anchor", "val_bpb"):
            assert isinstance(r[key], (int, float)) and r[key] >= 0, (key, r)
        # Our model attends to the whole sequence: both formulas agree to the per-layer scalars.
        assert abs(r["flops_per_token_ours"] - r["flops_per_token_anchor"]) < 1e-3 * r["flops_per_token_ours"]
    assert lines[-1] == {"bench": "check_done", "runs": len(runs), "failed": 0,
                         "compile_cache_filled": lines[-1]["compile_cache_filled"]}
