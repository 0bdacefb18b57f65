"""The deployment files (deploy/): they parse, say what matters, and the start script builds the
node's command and config as the engines' run steps expect. No engine runs here: SkyPilot and
Kubernetes are not installed in CI, so these are structural checks (docs/deploy.md)."""
from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PORT = 7400


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_skypilot_task_runs_one_node_per_machine_joining_the_head() -> None:
    task = _load(DEPLOY / "skypilot" / "autoswarm.yaml")
    assert set(task) >= {"name", "num_nodes", "resources", "workdir", "setup", "run", "envs"}
    assert task["num_nodes"] >= 2 and task["workdir"] == "."
    accel = task["resources"]["accelerators"]
    assert isinstance(accel, str) and accel.split(":")[0] and int(accel.split(":")[1]) >= 1
    assert task["resources"]["ports"] == PORT and task["envs"]["AUTOSWARM_PORT"] == PORT
    assert "scripts/setup.sh" in task["setup"]
    run = task["run"]
    # rank 0 creates the swarm; every other rank bootstraps from the first node IP
    assert 'HEAD_IP=$(echo "$SKYPILOT_NODE_IPS" | head -n1)' in run
    assert '"$SKYPILOT_NODE_RANK" = 0' in run and 'BOOTSTRAP=""' in run
    assert 'BOOTSTRAP="$HEAD_IP:$AUTOSWARM_PORT"' in run
    assert 'ADVERTISE="$MY_IP:$AUTOSWARM_PORT"' in run and "deploy/start-node.sh" in run


def test_skypilot_run_step_picks_head_and_own_address() -> None:
    task = _load(DEPLOY / "skypilot" / "autoswarm.yaml")
    probe = task["run"].replace("exec bash deploy/start-node.sh", 'echo "$ADVERTISE|$BOOTSTRAP"')
    for rank, expect in ((0, "10.0.0.4:7400|"), (2, "10.0.0.6:7400|10.0.0.4:7400")):
        env = dict(os.environ, SKYPILOT_NODE_IPS="10.0.0.4\n10.0.0.5\n10.0.0.6", SKYPILOT_NODE_RANK=str(rank),
                   AUTOSWARM_PORT="7400", AUTOSWARM_HOME="~/.autoswarm")
        out = subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True, timeout=10, check=True)
        assert out.stdout.strip() == expect


def _k8s() -> tuple[dict[str, Any], dict[str, Any]]:
    service = _load(DEPLOY / "k8s" / "service.yaml")
    sts = _load(DEPLOY / "k8s" / "statefulset.yaml")
    return service, sts


def test_k8s_headless_service_and_statefulset_agree() -> None:
    service, sts = _k8s()
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert [p["port"] for p in service["spec"]["ports"]] == [PORT]
    assert sts["apiVersion"] == "apps/v1" and sts["kind"] == "StatefulSet"
    spec = sts["spec"]
    assert spec["serviceName"] == service["metadata"]["name"] == "autoswarm"
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"] == labels and service["spec"]["selector"].items() <= labels.items()
    assert spec["podManagementPolicy"] == "OrderedReady"


def test_k8s_pod_asks_for_gpus_keeps_its_home_and_exposes_the_peer_port() -> None:
    _, sts = _k8s()
    pod = sts["spec"]["template"]["spec"]
    (node,) = pod["containers"]
    gpus = node["resources"]["limits"]["nvidia.com/gpu"]
    assert gpus >= 1 and node["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert [p["containerPort"] for p in node["ports"]] == [PORT]
    env = {e["name"]: e for e in node["env"]}
    home = env["AUTOSWARM_HOME"]["value"]
    (mount,) = node["volumeMounts"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert mount["mountPath"] == home and mount["name"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["resources"]["requests"]["storage"]
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert node["readinessProbe"]["tcpSocket"]["port"] == "peer"


def test_k8s_pod_zero_creates_the_swarm_and_the_rest_dial_it_by_dns() -> None:
    _, sts = _k8s()
    (node,) = sts["spec"]["template"]["spec"]["containers"]
    script = node["args"][0].replace("exec bash deploy/start-node.sh", 'echo "$ADVERTISE|$BOOTSTRAP"')
    for pod, expect in (("autoswarm-0", "autoswarm-0.autoswarm.lab.svc.cluster.local:7400|"),
                        ("autoswarm-3", ("autoswarm-3.autoswarm.lab.svc.cluster.local:7400|"
                                         "autoswarm-0.autoswarm.lab.svc.cluster.local:7400"))):
        env = dict(os.environ, POD_NAME=pod, POD_NAMESPACE="lab")
        out = subprocess.run([*node["command"], script], env=env, capture_output=True, text=True, timeout=10,
                             check=True)
        assert out.stdout.strip() == expect


def _start(tmp: Path, **env: str) -> list[str]:
    stand_in = tmp / "python"
    stand_in.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    stand_in.chmod(0o755)
    full = dict(os.environ, AUTOSWARM_PYTHON=str(stand_in), AUTOSWARM_HOME=str(tmp / "home"), **env)
    out = subprocess.run(["bash", str(DEPLOY / "start-node.sh")], env=full, capture_output=True, text=True,
                         timeout=10, check=True)
    return out.stdout.split()


def test_start_script_writes_advertise_and_builds_the_command(tmp_path: Path) -> None:
    home = tmp_path / "home"
    args = _start(tmp_path, ADVERTISE="10.1.2.3:7400", BOOTSTRAP="10.1.2.2:7400")
    assert args == ["-m", "node", "--home", str(home), "--listen", "0.0.0.0:7400", "--bootstrap", "10.1.2.2:7400"]
    assert tomllib.loads((home / "config.toml").read_text()) == {"network": {"advertise": "10.1.2.3:7400"}}
    # the head: no bootstrap; a second start with a new address replaces only that line
    (home / "config.toml").write_text('[swarm]\nname = "lab"\n\n[network]\nadvertise = "old:1"\n')
    assert "--bootstrap" not in _start(tmp_path, ADVERTISE="10.9.9.9:7400", BOOTSTRAP="")
    config = tomllib.loads((home / "config.toml").read_text())
    assert config == {"swarm": {"name": "lab"}, "network": {"advertise": "10.9.9.9:7400"}}


def test_the_written_config_is_one_the_node_accepts(tmp_path: Path) -> None:
    from node.config import build_config, parse_args
    from node.configfile import read_config_file

    _start(tmp_path, ADVERTISE="autoswarm-1.autoswarm.lab.svc.cluster.local:7400", BOOTSTRAP="")
    home = tmp_path / "home"
    args = parse_args(["--home", str(home), "--listen", "0.0.0.0:7400"], {})
    config = build_config(args, read_config_file(home / "config.toml"), home / "config.toml")
    assert config.advertise == "autoswarm-1.autoswarm.lab.svc.cluster.local:7400"
    assert config.listen == "0.0.0.0:7400" and config.bootstrap == ()


# -- the Kubernetes schema checker (kubernetes-validate, in the test extras). SkyPilot's own parser is not
#    run: skypilot pulls in every cloud's SDK, far too much for a test extra; the structural checks above
#    read the task as its run step does.


def test_kubernetes_schema_accepts_the_manifests() -> None:
    import kubernetes_validate as kv

    for name in ("service.yaml", "statefulset.yaml"):
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()):
            kv.validate(doc, kv.latest_version(), strict=True)  # raises ValidationError
