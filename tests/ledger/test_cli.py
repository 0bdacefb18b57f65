"""`python -m ledger`: the commands work, and every bad input gets one line and a non-zero exit."""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ledger import audit
from ledger.cli import main
from ledger.keys import Identity, parse_node_id
from tests.ledger.test_audit import USERS, Built, built, copy_ledger, tamper  # noqa: F401  (fixture)


def run_main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(list(argv), out=out, err=err)
    except SystemExit as exc:  # argparse's own exits (usage errors, --help)
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger", *argv], capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "error" in lines[0]


# -- audit


def test_audit_passes_a_valid_file(built: Built) -> None:
    code, out, _ = run_main("audit", str(built.path), "--workers", "1")
    assert code == 0
    assert f"rows     {len(built.entries)} from " in out
    assert out.rstrip().splitlines()[-1].startswith(f"OK: {len(built.entries)} rows, every check holds")
    assert "refused by the credit rules" in out


def test_audit_strict_fails_on_refused_entries(built: Built) -> None:
    code, out, _ = run_main("audit", str(built.path), "--workers", "1", "--strict", "--quiet")
    assert code == 1
    assert out.startswith("FAILED: row ") and "credit rules" in out
    assert len(out.splitlines()) == 1  # --quiet: the verdict alone


def test_audit_names_the_first_bad_row(built: Built, tmp_path: Path) -> None:
    path = copy_ledger(built.path, tmp_path / "t.sqlite")
    tamper(path, "UPDATE entries SET seq = seq + 100 WHERE row = 7")
    result = run_cli("audit", str(path), "--workers", "1")
    assert result.returncode == 1
    assert result.stdout.rstrip().splitlines()[-1].startswith("FAILED: row 7: seq column says ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("case", ["missing", "empty", "directory", "junk", "other-sqlite", "workers"])
def test_audit_bad_input_is_one_line_never_a_traceback(tmp_path: Path, case: str) -> None:
    path = tmp_path / "x.sqlite"
    extra: list[str] = []
    if case == "empty":
        path.write_bytes(b"")
    elif case == "directory":
        path.mkdir()
    elif case == "junk":
        path.write_bytes(os.urandom(4096))
    elif case == "other-sqlite":
        subprocess.run(["sqlite3", str(path), "CREATE TABLE t(x); INSERT INTO t VALUES (1);"], check=True)
    elif case == "workers":
        extra = ["--workers", "0"]
    assert_one_line_error(run_cli("audit", str(path), *extra))


@pytest.mark.parametrize("argv", [[], ["audit"], ["frobnicate"], ["audit", "a", "--workers", "many"], ["show"]])
def test_usage_errors_are_one_line(argv: list[str]) -> None:
    assert_one_line_error(run_cli(*argv))


# -- show, stats, spec


def test_show_prints_entries_as_json_lines(built: Built) -> None:
    code, out, _ = run_main("show", str(built.path))
    assert code == 0
    views = [json.loads(line) for line in out.splitlines()]
    assert [v["row"] for v in views] == list(range(1, len(built.entries) + 1))
    first, entry = views[0], built.entries[0]
    assert first["id"] == entry.id.hex() and first["kind"] == entry.kind and first["seq"] == 1
    assert parse_node_id(first["author"]) == entry.author
    assert first["prev"] is None and first["time_ms"] == entry.time_ms
    assert first["body"]["commit"] == entry.body.commit.hex()  # type: ignore[attr-defined]
    transfers = [v for v in views if v["kind"] == "transfer"]
    assert transfers and all(parse_node_id(v["body"]["to"]) for v in transfers)  # keys as node ids


def test_show_filters_by_author_kind_and_limit(built: Built) -> None:
    author = USERS[0].node_id
    code, out, _ = run_main("show", str(built.path), "--author", author, "--kind", "claim", "--limit", "1")
    assert code == 0
    (line,) = out.splitlines()
    view = json.loads(line)
    assert view["author"] == author and view["kind"] == "claim"
    code, out, _ = run_main("show", str(built.path), "--kind", "fraud")
    assert code == 0 and len(out.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--kind", "bogus"], "unknown kind"),
        (["--author", "asnotanodeid"], "not a node id"),
        (["--author", "a" * 54], "not a node id"),
        (["--limit", "-1"], "--limit"),
    ],
)
def test_show_bad_filters_are_one_line(built: Built, argv: list[str], says: str) -> None:
    result = run_cli("show", str(built.path), *argv)
    assert_one_line_error(result)
    assert says in result.stderr


def test_stats(built: Built) -> None:
    code, out, _ = run_main("stats", str(built.path))
    assert code == 0
    assert f"rows     {len(built.entries)}" in out
    assert "claim 6" in out and "fraud 1" in out
    assert "records  cpu-tiny" in out
    assert "credits  " in out and "bytes" in out


def test_spec_prints_the_swarm_spec(built: Built) -> None:
    code, out, _ = run_main("spec", str(built.path))
    assert code == 0
    view = json.loads(out)
    assert view["swarm_id"] == built.signed.swarm_id.hex()
    assert parse_node_id(view["creator"]) == built.signed.spec.creator
    assert view["platform_classes"] == built.signed.spec.platform_classes


@pytest.mark.parametrize("command", ["show", "stats", "spec"])
def test_reading_commands_refuse_what_is_not_a_ledger(tmp_path: Path, command: str) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert_one_line_error(run_cli(command, str(tmp_path / "empty")))
    assert_one_line_error(run_cli(command, str(tmp_path / "missing")))


# -- keygen and new-swarm


def test_keygen_creates_a_private_key_file(tmp_path: Path) -> None:
    path = tmp_path / "me.pem"
    code, out, _ = run_main("keygen", str(path))
    assert code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load(path).node_id == out.strip()
    result = run_cli("keygen", str(path))  # never overwrites
    assert_one_line_error(result)
    assert "already exists" in result.stderr


def test_new_swarm_creates_a_ledger_that_audits(tmp_path: Path) -> None:
    key = tmp_path / "me.pem"
    run_main("keygen", str(key))
    out_path = tmp_path / "swarm.sqlite"
    code, out, err = run_main("new-swarm", "--key", str(key), "--out", str(out_path), "--name", "t",
                              "--platform-class", "cpu-tiny", "--platform-class", "h100", "--noise-bpb", "0.02",
                              "--baseline-commit", "ab" * 20, "--verify-credits", "2")
    assert code == 0
    assert "using zeros" in err and "harness_hash" in err and "baseline_commit" not in err
    swarm_id = out.strip()
    assert len(bytes.fromhex(swarm_id)) == 32
    spec_code, spec_out, _ = run_main("spec", str(out_path))
    view = json.loads(spec_out)
    me = Identity.load(key).node_id
    assert spec_code == 0 and view["swarm_id"] == swarm_id
    assert view["verifiers"] == [me] and view["creator"] == me and view["quorum"] == 1
    assert view["noise_bpb"] == {"cpu-tiny": 0.02, "h100": 0.02}
    assert view["baseline_commit"] == "ab" * 20 and view["harness_hash"] == "00" * 32
    assert view["verify_ucr"] == 2_000_000
    report = audit.audit_file(out_path, workers=1)
    assert report.ok and report.rows == 0 and report.swarm_id == bytes.fromhex(swarm_id)


def test_new_swarm_with_named_verifiers(tmp_path: Path) -> None:
    key = tmp_path / "me.pem"
    run_main("keygen", str(key))
    others = [Identity.generate().node_id for _ in range(3)]
    argv = ["new-swarm", "--key", str(key), "--out", str(tmp_path / "s.sqlite"), "--quorum", "2"]
    for node in others:
        argv += ["--verifier", node]
    code, _, _ = run_main(*argv)
    assert code == 0
    view = json.loads(run_main("spec", str(tmp_path / "s.sqlite"))[1])
    assert view["verifiers"] == others and view["quorum"] == 2


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--harness-hash", "xyz"], "not hex"),
        (["--dataset-hash", "ab" * 31], "expected 32 bytes"),
        (["--baseline-commit", "ab" * 32], "expected 20 bytes"),
        (["--verifier", "asbogus"], "not a node id"),
        (["--quorum", "3"], "quorum"),
        (["--platform-class", "Not A Name"], "platform class"),
        (["--time-budget-s", "0"], "time_budget_s"),
    ],
)
def test_new_swarm_bad_arguments_are_one_line(tmp_path: Path, extra: list[str], says: str) -> None:
    key = tmp_path / "me.pem"
    Identity.generate().save(key)
    out_path = tmp_path / "s.sqlite"
    result = run_cli("new-swarm", "--key", str(key), "--out", str(out_path), *extra)
    assert_one_line_error(result)
    assert says in result.stderr
    assert not out_path.exists()


def test_new_swarm_refuses_an_unreadable_key_and_an_existing_output(tmp_path: Path) -> None:
    key = tmp_path / "me.pem"
    Identity.generate().save(key)
    os.chmod(key, 0o644)
    result = run_cli("new-swarm", "--key", str(key), "--out", str(tmp_path / "s.sqlite"))
    assert_one_line_error(result)
    assert "chmod 600" in result.stderr
    assert_one_line_error(run_cli("new-swarm", "--key", str(tmp_path / "absent.pem"), "--out", str(tmp_path / "s")))
    os.chmod(key, 0o600)
    (tmp_path / "taken").write_bytes(b"x")
    result = run_cli("new-swarm", "--key", str(key), "--out", str(tmp_path / "taken"))
    assert_one_line_error(result)
    assert "already exists" in result.stderr
