"""Config and command line: defaults written once, strict reading, one readable line for every mistake."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ledger.keys import Identity
from node.config import MAX_STEPS_PER_S, load_config, max_steps_for
from node.configfile import CONFIG_FILE, DEFAULT_TOML
from node.errors import ConfigError
from node.research.experiment import parse_result
from node.errors import TrainerFailed


def test_first_run_writes_commented_defaults_and_reads_them(tmp_path: Path) -> None:
    config = load_config(["--home", str(tmp_path / "h")], {})
    text = (tmp_path / "h" / CONFIG_FILE).read_text()
    assert text == DEFAULT_TOML and text.count("\n# ") >= 8
    assert config.command == "run" and config.profile == "auto" and config.cpu_budget_s == 30
    assert config.gpu_budget_s == 300 and config.max_experiments is None and config.frozen_constants
    (tmp_path / "h" / CONFIG_FILE).write_text("[research]\ncpu_budget_s = 7\n")
    again = load_config(["--home", str(tmp_path / "h"), "--max-experiments", "3"], {})
    assert again.cpu_budget_s == 7 and again.gpu_budget_s == 300 and again.max_experiments == 3
    assert (tmp_path / "h" / CONFIG_FILE).read_text() == "[research]\ncpu_budget_s = 7\n"  # never rewritten
    assert not config.waves and config.screening_classes == () and config.reference_class == ""
    (tmp_path / "h" / CONFIG_FILE).write_text('[research]\nwaves = true\nreference_class = "h100"\n'
                                              'screening_classes = ["rtx-4090"]\n')
    tiers = load_config(["--home", str(tmp_path / "h")], {})
    assert tiers.waves and tiers.reference_class == "h100" and tiers.screening_classes == ("rtx-4090",)
    assert config.proposer == "bandit"
    (tmp_path / "h" / CONFIG_FILE).write_text('[research]\nproposer = "tpe"\n')
    assert load_config(["--home", str(tmp_path / "h")], {}).proposer == "tpe"
    assert config.experiments
    (tmp_path / "h" / CONFIG_FILE).write_text('[research]\nexperiments = false\n')
    assert not load_config(["--home", str(tmp_path / "h")], {}).experiments
    assert config.fixed_steps is None and config.machine_slots == 1   # the budget decides; one run at a time
    (tmp_path / "h" / CONFIG_FILE).write_text('[research]\nsteps = 18\nmachine_slots = 2\n')
    fixed = load_config(["--home", str(tmp_path / "h")], {})
    assert fixed.fixed_steps == 18 and fixed.machine_slots == 2


def test_home_comes_from_args_then_env(tmp_path: Path) -> None:
    assert load_config([], {"AUTOSWARM_HOME": str(tmp_path / "e")}).home == tmp_path / "e"
    assert load_config(["--home", str(tmp_path / "a")], {"AUTOSWARM_HOME": str(tmp_path / "e")}).home == tmp_path / "a"
    assert load_config(["--budget-s", "4"], {"AUTOSWARM_HOME": str(tmp_path / "e")}).budget_s("cuda") == 4


@pytest.mark.parametrize("text, says", [
    ("[research\n", "not valid TOML"),
    ("[research]\nprofile = \"tpu\"\n", "must be auto, cpu or gpu"),
    ("[research]\ncpu_budget_s = \"30\"\n", "must be int"),
    ("[research]\ncpu_budget_s = 0\n", "must be 1 to"),
    ("[research]\nbudget = 3\n", "unknown key 'budget'"),
    ("[nope]\n", "unknown section [nope]"),
    ("[swarm]\nnoise_bpb_cpu = -0.1\n", "at least 0"),
    ("[research]\nfrozen_constants = [1]\n", "list of Python names"),
    ("[research]\nseed = true\n", "must be int"),
    ("[network]\nbootstrap = [\"nohost\"]\n", "list of HOST:PORT"),
    ("[network]\nlisten = \"127.0.0.1:99999\"\n", "must be HOST:PORT"),
    ("[swarm]\nverifiers = [\"asNOTANID\"]\n", "list of node ids"),
    ("[swarm]\nquorum = 0\n", "must be 1 to 64"),
    ("[swarm]\nadmit = \"everyone\"\n", "must be earned or none"),
    ("[swarm]\nadmit = \"auto\"\n", 'Write admit = "earned"'),
    ("[swarm]\nadmit_keys = [\"asNOTANID\"]\n", "admit_keys must be a list of node ids"),
    ("[swarm]\nadmit_keys = \"one\"\n", "admit_keys must be a list of node ids"),
    ("[research]\nwaves = 1\n", "must be bool"),
    ("[research]\nexperiments = \"no\"\n", "[research] experiments must be bool, got str 'no'"),
    ("[research]\nproposer = \"optuna\"\n", "[research] proposer = 'optuna': must be one of bandit, tpe"),
    ("[research]\nproposer = 1\n", "must be str"),
    ("[research]\nsteps = -1\n", "[research] steps = -1: must be 0 to 1000000"),
    ("[research]\nsteps = 2.5\n", "must be int"),
    ("[research]\nmachine_slots = 0\n", "[research] machine_slots = 0: must be 1 to 64"),
    ("[research]\nreference_class = \"a b\"\n", "platform class name"),
    ("[research]\nscreening_classes = [\"rtx-4090\"]\n", "needs a reference_class"),
])
def test_bad_config_values_name_the_key(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(ConfigError, match="config.toml") as info:
        load_config(["--home", str(tmp_path)], {})
    assert says in str(info.value) and "\n" not in str(info.value)


def test_trainer_garbage_is_a_typed_error() -> None:
    with pytest.raises(TrainerFailed):
        parse_result("not json", 1.0)
    with pytest.raises(TrainerFailed):
        parse_result('{"status": "maybe"}', 1.0)
    ok = parse_result('{"status": "ok", "val_bpb": 1.5, "seed": 3, "num_steps": 9, "loss_curve": [[0, 2.0]]}', 1.0)
    assert ok.val_bpb == 1.5 and ok.num_steps == 9 and ok.loss_curve == (2.0,)
    assert parse_result('{"status": "ok", "val_bpb": null}', 1.0).status == "crash"


def _node(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOSWARM_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=60, env=env)


def _one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("args, says", [
    (("--max-experiments", "0"), "is not between 1"),
    (("--budget-s", "abc"), "not a whole number"),
    (("--profile", "tpu"), "invalid choice"),
    (("frobnicate",), "invalid choice"),
    (("--no-such-flag",), "unrecognized arguments"),
    (("--bootstrap", "localhost"), "is not HOST:PORT"),
    (("--listen", "1.2.3.4:70000"), "is not HOST:PORT"),
    (("--advertise", "10.0.0.6"), "is not HOST:PORT"),
    (("--budget-s", "3", "status"), "is an option of `python -m node run`"),
    (("status", "--budget-s", "3"), "unrecognized arguments"),
])
def test_bad_arguments_are_one_line(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    assert says in _one_line(_node(*args, home=tmp_path), 2)


def test_corrupt_config_and_missing_home_are_one_line(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_bytes(b"\xff\xfe[[[")
    assert "config.toml" in _one_line(_node("--max-experiments", "1", home=tmp_path), 2)
    assert "no node here yet" in _one_line(_node("status", home=tmp_path / "empty"), 2)
    tomllib.loads(DEFAULT_TOML)  # the template itself stays valid TOML


def test_advertise_and_listen_from_args_then_file(tmp_path: Path) -> None:
    home = tmp_path / "h"
    config = load_config(["--home", str(home)], {})
    assert config.listen == "127.0.0.1:7400" and config.advertise == ""  # the documented default port
    (home / CONFIG_FILE).write_text('[network]\nadvertise = "10.0.0.9:7400"\nlisten = "0.0.0.0:7500"\n')
    from_file = load_config(["--home", str(home)], {})
    assert from_file.advertise == "10.0.0.9:7400" and from_file.listen == "0.0.0.0:7500"
    flags = load_config(["--home", str(home), "--advertise", "10.0.0.6:7400", "--listen", "0.0.0.0:7400"], {})
    assert flags.advertise == "10.0.0.6:7400" and flags.listen == "0.0.0.0:7400"
    with pytest.raises(ConfigError, match="--advertise 'nohost' is not HOST:PORT"):
        load_config(["--home", str(home), "--advertise", "nohost"], {})


def test_nobody_is_admitted_for_asking_by_default(tmp_path: Path) -> None:
    """Issue 12: the default trusts no key that merely asks; trust is earned, or given by hand."""
    home = tmp_path / "h"
    config = load_config(["--home", str(home)], {})
    assert config.admit == "earned" and config.admit_keys == () and config.admitted_keys() == frozenset()
    assert config.spec_trust_fields() == {}  # the spec's own earned-trust default: the solo swarm is unchanged
    assert 'admit = "auto"' not in (home / CONFIG_FILE).read_text()


def test_hand_admission_and_a_private_swarm_from_the_file(tmp_path: Path) -> None:
    keys = [Identity.generate() for _ in range(2)]
    (tmp_path / CONFIG_FILE).write_text('[swarm]\nadmit = "none"\nadmit_keys = [%s]\n'
                                        % ", ".join(f'"{k.node_id}"' for k in keys))
    config = load_config(["--home", str(tmp_path)], {})
    assert config.admit == "none" and config.admit_keys == tuple(k.node_id for k in keys)
    assert config.admitted_keys() == {k.public_key for k in keys}
    assert config.spec_trust_fields() == {"trust_replays": 0}  # nobody earns trust in a private swarm


def test_an_old_auto_config_says_what_to_write_instead(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text('[swarm]\nadmit = "auto"\n')
    line = _one_line(_node("--max-experiments", "1", home=tmp_path), 2)
    assert "config.toml" in line and 'admit = "earned"' in line and 'admit = "none"' in line
    assert "admit_keys" in line


def test_max_steps_scale_with_the_budget() -> None:
    assert max_steps_for("cpu", 30) == 30 * MAX_STEPS_PER_S["cpu"]
    assert max_steps_for("cuda", 300) == 300 * MAX_STEPS_PER_S["cuda"]
    assert max_steps_for("cpu", 30) < 10**6  # the absurd claim: a million steps on a CPU class
    assert max_steps_for("cpu", 5) > 10 * 66 * 5  # ten times the fastest CPU program measured (docs/node.md)
