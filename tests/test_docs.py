"""Every command README.md, program.md and docs/*.md print works as printed.

tests/docskit.py extracts the commands; tests/doccases.py says, for each one, how it is checked
(run for real against a real node, parsed against the real `--help`, or skipped with a reason).
A command the docs print that `CASES` does not name fails `test_every_documented_command_is_classified`,
so a new command in the docs comes with its check.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.keys import Identity
from tests.doccases import CASES, FAMILIES, IN_FLUX, Case, Parse, Run, case_of
from tests.docskit import ROOT, DocCommand, DocsNode, Helps, check_synopsis, docs_node, extract_all, normalise

COMMAND_TIMEOUT_S = 120.0    # an agent command takes 1-3 s at load 3; `submit --wait` polls every 5 s
SLOW_TIMEOUT_S = 540.0       # a 10 s CPU run: about 75 s at load 3 (sandboxed training and evaluation)
PARALLEL = 4                 # subprocesses at once: they mostly wait on the node


DOCS = extract_all()


def test_the_docs_have_commands() -> None:
    """The extraction sees the docs (a regex that stopped matching would make every check vacuous)."""
    assert len(DOCS) >= 100
    texts = {c.text for c in DOCS}
    assert {"python -m node frontier", "python -m node status", "python -m ledger audit FILE"} <= texts


def test_every_documented_command_is_classified() -> None:
    missing = [f"{c.where()}: {c.text!r}" for c in DOCS if case_of(c.text) is None]
    assert not missing, "commands in the docs that tests/doccases.py's CASES does not name:\n" + "\n".join(missing)


def test_every_case_is_still_documented() -> None:
    texts = {c.text for c in DOCS}
    stale = [k for k in CASES if k not in texts and k not in IN_FLUX]
    assert not stale, "CASES rows no doc prints any more (remove them):\n" + "\n".join(stale)
    unused = [p for p, _ in FAMILIES if not any(re.fullmatch(p, t, re.S) for t in texts)]
    assert not unused, f"FAMILIES no doc uses: {unused}"


def test_paths_the_commands_name_exist() -> None:
    """scripts/..., tests/..., deploy/... named in a command are files of the repository."""
    missing = []
    for c in DOCS:
        for word in re.findall(r"(?<![\w/.~-])((?:scripts|tests|deploy|trainer|docs)/[\w./-]*\w)", c.text):
            if not (ROOT / word).exists():
                missing.append(f"{c.where()}: {word}")
    assert not missing, "\n".join(missing)


# -- checked against the real --help


def _env(home: Path, user_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOSWARM_", "HUB"))}
    env.update(AUTOSWARM_HOME=str(home), HOME=str(user_home), PYTHONUNBUFFERED="1")
    return env


def _located(cases: Callable[[Case], bool]) -> dict[str, list[DocCommand]]:
    found: dict[str, list[DocCommand]] = {}
    for c in DOCS:
        case = case_of(c.text)
        if case is not None and cases(case):
            found.setdefault(c.text, []).append(c)
    return found


@pytest.mark.slow
async def test_synopses_and_unrun_commands_match_the_help(tmp_path: Path) -> None:
    """Every `Parse` command: its command words are commands, its options are in their help."""
    helps = Helps(_env(tmp_path / "no-node", tmp_path))
    parsed = _located(lambda case: isinstance(case, Parse))
    results = await asyncio.gather(*(check_synopsis(helps, text) for text in parsed))
    failures = [f"{parsed[text][0].where()} {text!r}: {p}" for text, problems in zip(parsed, results)
                for p in problems]
    assert not failures, "documented forms the CLI does not accept:\n" + "\n".join(failures)


NODE_COMMANDS = ("run", "status", "frontier", "leaderboard", "show", "diff", "checkout", "log", "submit", "post",
                 "read", "hypothesis", "insight", "credits", "job", "demo", "agent-key")
OTHER_HELPS = [("ledger", c) for c in ("keygen", "new-swarm", "audit", "show", "stats", "spec", "checkpoint", "prove",
                                       "verify")] + [("trainer", "run"), ("trainer", "prepare")] + \
              [("node", "job", c) for c in ("submit", "list", "show", "cancel")]


@pytest.mark.slow
async def test_one_help_lists_every_command_and_each_has_its_own(tmp_path: Path) -> None:
    helps = Helps(_env(tmp_path / "no-node", tmp_path))
    top = await helps.get(("-m", "node"))
    assert top.code == 0, top.text
    unlisted = [c for c in NODE_COMMANDS if not re.search(r"(?<![\w-])" + re.escape(c) + r"(?![\w-])", top.text)]
    problems = [f"`python -m node --help` does not list {unlisted}"] if unlisted else []
    paths = [("node", c) for c in NODE_COMMANDS] + OTHER_HELPS
    answers = await asyncio.gather(*(helps.get(("-m", *path)) for path in paths))
    for path, help_ in zip(paths, answers):
        expected = "python -m " + " ".join(path)
        if help_.code != 0 or help_.prog() != expected:
            problems.append(f"`{expected} --help`: exit {help_.code}, usage of {help_.prog()!r}")
    assert not problems, "\n".join(problems)


# -- run for real


@dataclass
class Outcome:
    code: int | None
    out: str
    err: str


class Values:
    """What a placeholder stands for, from the running docs node and fresh files; `fresh_*` and
    `new_path` are new at each use, `fresh_dir` once per group (so `HOME` means one folder)."""

    def __init__(self, node: DocsNode, tmp: Path) -> None:
        self.node, self.tmp = node, tmp
        self._n = itertools.count()
        self.job = ""
        self.spare_key = tmp / "spare.key"
        Identity.generate().save(self.spare_key)

    async def get(self, name: str, group: dict[str, str]) -> str:
        n = self.node
        fixed = {"better": n.better, "baseline": n.baseline, "record_claim": n.record_claim, "ledger": str(n.ledger_path),
                 "research_key": str(n.research_key), "spare_key": str(self.spare_key),
                 "port": n.url.rsplit(":", 1)[1], "job": self.job, "job7": self.job[:7], "idea": "matrix",
                 "channel": "discussion", "text": "a note from the docs test", "agent_name": "docs-bot",
                 "home": str(n.home)}
        if name in fixed:
            return fixed[name]
        if name == "new_path":
            return str(self.tmp / f"new-{next(self._n)}")
        if name == "fresh_agent":
            return f"agent-{next(self._n)}"
        if name in ("fresh_job", "fresh_job7"):
            job = await n.new_job(f"cancel-{next(self._n)}")
            return job if name == "fresh_job" else job[:7]
        if name == "tmp":  # the docs' /tmp/: a folder of the group's own
            if "tmp" not in group:
                group["tmp"] = str(self.tmp / f"tmp-{next(self._n)}")
                Path(group["tmp"]).mkdir()
            return group["tmp"] + "/"
        if name == "fresh_dir":
            if "fresh_dir" not in group:
                group["fresh_dir"] = str(self.tmp / f"home-{next(self._n)}")
            return group["fresh_dir"]
        if name == "prepared":
            (found,) = (Path(group["fresh_dir"]) / "data" / "prepared").iterdir()
            return str(found)
        raise KeyError(f"no value {name!r}")


def _run_case(text: str) -> Run:
    case = case_of(text)
    if not isinstance(case, Run):
        raise TypeError(f"{text!r} is not run: {case}")
    return case


def _substitute(text: str, subst: dict[str, str], values: dict[str, str]) -> str:
    for placeholder in sorted(subst, key=len, reverse=True):
        value = shlex.quote(values[placeholder])  # hex and paths stay as they are
        if placeholder.startswith("<") or "/" in placeholder or not placeholder[0].isalnum():
            text = text.replace(placeholder, value)
        else:
            text = re.sub(r"(?<![\w-])" + re.escape(placeholder) + r"(?![\w-])", lambda _m: value, text)
    return text


async def _bash(script: str, cwd: Path, env: dict[str, str], timeout_s: float) -> Outcome:
    proc = await asyncio.create_subprocess_exec("bash", "-c", script, cwd=cwd, env=env,
                                                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        return Outcome(None, out.decode(errors="replace"), err.decode(errors="replace") + f"\n(killed after {timeout_s} s)")
    return Outcome(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def _python_is_this_one(text: str) -> str:
    return re.sub(r"(?<![\w/.-])python(?=\s|$)", lambda _m: shlex.quote(sys.executable), text)


async def _run_group(texts: list[str], values: Values, node: DocsNode, tmp: Path, env: dict[str, str],
                     gate: asyncio.Semaphore, index: int) -> list[str]:
    """Runs `texts` in order in one folder; the failures, one line each (with the docs' places)."""
    work = tmp / f"work-{index}"
    work.mkdir()
    (work / "train.py").write_text(node.source + f"\n# an edit of the docs test, {index}\n")
    failures: list[str] = []
    group: dict[str, str] = {}
    for text in texts:
        case = _run_case(text)
        resolved = {p: await values.get(name, group) for p, name in case.subst.items()}
        script = "\n".join(_python_is_this_one(_substitute(part, case.subst, resolved))
                           for part in ["set -e", case.before, text, case.then])
        async with gate:
            result = await _bash(script, ROOT if case.cwd == "repo" else work, env,
                                 SLOW_TIMEOUT_S if case.slow else COMMAND_TIMEOUT_S)
        where = ", ".join(c.where() for c in LOCATED_RUNS.get(text, [])) or "(not in the docs yet)"
        said = (result.err.strip() or result.out.strip()).splitlines()[-3:]
        if result.code != 0:
            failures.append(f"{where} {text!r}: exit {result.code}: {' | '.join(said)}")
        elif "Traceback (most recent call last)" in result.err:
            failures.append(f"{where} {text!r}: printed a traceback: {' | '.join(said)}")
        elif case.expect and not re.search(case.expect, result.out.strip()):
            failures.append(f"{where} {text!r}: stdout does not match {case.expect!r}: {result.out.strip()[-300:]!r}")
    return failures


LOCATED_RUNS = _located(lambda case: isinstance(case, Run))


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[DocsNode]:
    async with docs_node(tmp_path) as n:
        yield n


async def _run_cases(node: DocsNode, tmp: Path, which: Callable[[Run], bool]) -> list[str]:
    values = Values(node, tmp)
    values.job = await node.new_job("shown")
    user_home = tmp / "user-home"
    user_home.mkdir()
    env = _env(node.home, user_home)
    env.update(HUB=node.url, HUB_KEY=node.agent_key)
    in_flux = sorted(t for t in IN_FLUX - set(LOCATED_RUNS) if isinstance(CASES[t], Run))
    chosen = [t for t in [*LOCATED_RUNS, *in_flux] if which(_run_case(t))]
    groups: dict[str, list[str]] = {}
    for text in chosen:
        name = _run_case(text).group or f"alone:{text}"
        groups.setdefault(name, []).append(text)
    for texts in groups.values():  # in order of the docs' lines
        texts.sort(key=lambda t: min(((c.path, c.line) for c in LOCATED_RUNS.get(t, [])), default=("", 0)))
    gate = asyncio.Semaphore(PARALLEL)
    jobs: list[Awaitable[list[str]]] = [_run_group(texts, values, node, tmp, env, gate, i)
                                        for i, texts in enumerate(groups.values())]
    return [f for fs in await asyncio.gather(*jobs) for f in fs]


@pytest.mark.slow
async def test_documented_commands_run_against_a_real_node(node: DocsNode, tmp_path: Path) -> None:
    failures = await _run_cases(node, tmp_path, lambda case: not case.slow)
    assert not failures, "documented commands that fail as printed:\n" + "\n".join(failures)


@pytest.mark.slow
async def test_documented_trainer_commands_run(node: DocsNode, tmp_path: Path) -> None:
    """`python -m trainer prepare` and docs/benchmarks.md's 10-second CPU run, sandboxed, for real."""
    failures = await _run_cases(node, tmp_path, lambda case: case.slow)
    assert not failures, "documented commands that fail as printed:\n" + "\n".join(failures)


async def _python(args: list[str], env: dict[str, str], cwd: Path) -> Outcome:
    return await _bash(" ".join(shlex.quote(a) for a in [sys.executable, *args]), cwd, env, COMMAND_TIMEOUT_S)


@pytest.mark.slow
async def test_ledger_checkpoint_prove_verify(node: DocsNode, tmp_path: Path) -> None:
    """README's `checkpoint FILE --key K`, `prove`, `verify`, `audit --checkpoint CP --proof P` on the
    node's own ledger file: a signed checkpoint, an inclusion proof of the record, both checked."""
    env = _env(node.home, tmp_path)
    ledger, key = str(node.ledger_path), str(node.research_key)
    cp, proof = tmp_path / "cp.json", tmp_path / "proof.json"
    steps = [["-m", "ledger", "checkpoint", ledger, "--key", key, "--out", str(cp)],
             ["-m", "ledger", "prove", ledger, "--entry", node.record_claim, "--checkpoint", str(cp), "--out", str(proof)],
             ["-m", "ledger", "verify", "--checkpoint", str(cp), "--proof", str(proof)],
             ["-m", "ledger", "audit", ledger, "--checkpoint", str(cp), "--proof", str(proof)]]
    for args in steps:
        result = await _python(args, env, tmp_path)
        assert result.code == 0, f"{' '.join(args)}: {result.err or result.out}"


@pytest.mark.slow
async def test_options_go_before_or_after_the_command(node: DocsNode, tmp_path: Path) -> None:
    """docs/agents.md: `--home` and `--json` "before or after the command name"; deploy.md's
    `python -m node status --home H`."""
    env = _env(tmp_path / "elsewhere", tmp_path)  # only --home finds the node
    home = str(node.home)
    forms = [["--home", home, "--json", "frontier"], ["--json", "frontier", "--home", home],
             ["frontier", "--home", home, "--json"], ["--home", home, "--json", "job", "list"],
             ["job", "list", "--home", home, "--json"], ["--home", home, "status"], ["status", "--home", home]]
    results = await asyncio.gather(*(_python(["-m", "node", *f], env, tmp_path) for f in forms))
    failures = []
    for form, result in zip(forms, results):
        if result.code != 0:
            failures.append(f"python -m node {' '.join(form)}: exit {result.code}: {result.err.strip()[-200:]}")
        elif "--json" in form or "status" in form:
            try:
                json.loads(result.out)
            except ValueError:
                failures.append(f"python -m node {' '.join(form)}: not JSON: {result.out[:200]!r}")
    assert not failures, "\n".join(failures)


async def test_without_a_node_a_command_says_so(tmp_path: Path) -> None:
    """program.md: any command "fails with "no node is running on HOME" if none runs"; `status` on a
    fresh home either describes it or says in one line what to do, never a traceback."""
    env = _env(tmp_path / "empty-home", tmp_path)
    credits = await _python(["-m", "node", "credits"], env, tmp_path)
    assert credits.code == 2 and "no node is running on" in credits.err and "Traceback" not in credits.err, credits
    status = await _python(["-m", "node", "status"], env, tmp_path)
    if status.code == 0:  # a status that describes a home with no node yet
        assert isinstance(json.loads(status.out), dict), status
    else:
        assert "python -m node" in status.err and "Traceback" not in status.err, status
        assert len(status.err.strip().splitlines()) == 1, status


# -- the checks themselves


def test_extraction_reads_fences_spans_tables_and_indented_blocks(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "program.md").write_text("")
    (tmp_path / "README.md").write_text(
        "Run `python3 -m node frontier`, `leaderboard`, `show H` or read `--json`.\n\n"
        "```sh\n.venv/bin/python -m node status   # as JSON\nif true; then\n  echo '# kept'\nfi\n```\n\n"
        "```\nledger/   not a command\npython -m ledger audit FILE\n```\n\n"
        "| command | what |\n|---|---|\n| `log [--limit N]` | claims |\n\n"
        "Indented:\n\n    sky launch x.yaml   # a cloud\n    kubectl logs y\n\n"
        "```python\npython_is_not_run()\n```\n")
    (tmp_path / "docs" / "a.md").write_text("Then `python -m node job submit train.py\n--price 1`, `job list`.\n")
    found = [(c.path, c.line, c.text) for c in extract_all(tmp_path)]
    assert found == [
        ("README.md", 1, "python -m node frontier"), ("README.md", 1, "python -m node leaderboard"),
        ("README.md", 1, "python -m node show H"), ("README.md", 4, "python -m node status"),
        ("README.md", 5, "if true; then\necho '# kept'\nfi"), ("README.md", 12, "python -m ledger audit FILE"),
        ("README.md", 17, "python -m node log [--limit N]"), ("README.md", 21, "sky launch x.yaml"),
        ("README.md", 22, "kubectl logs y"),
        ("docs/a.md", 1, "python -m node job submit train.py --price 1"), ("docs/a.md", 2, "python -m node job list")]


@pytest.mark.slow
async def test_the_help_check_refuses_what_the_cli_refuses(tmp_path: Path) -> None:
    helps = Helps(_env(tmp_path / "no-node", tmp_path))
    assert await check_synopsis(helps, "python -m ledger show FILE [--author ID] [--kind KIND]") == []
    assert await check_synopsis(helps, "python -m ledger checkpoint FILE --key K | prove | verify") == []
    (colour,) = await check_synopsis(helps, "python -m ledger show FILE [--colour C]")
    assert "does not list --colour" in colour
    (unknown,) = await check_synopsis(helps, "python -m ledger frobnicate FILE")
    assert "no such command" in unknown and "frobnicate" in unknown
    (bad,) = await check_synopsis(helps, "python -m node job submit|list|frob")
    assert "frob" in bad
    (bench,) = await check_synopsis(helps, "python scripts/bench_ledger.py --entries 10 --nope 3")
    assert "--nope" in bench


@given(st.text(alphabet=" \t#'\"$-abpython3.venv/bin", max_size=40))
def test_normalising_twice_changes_nothing(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once and "\t" not in once and once == once.strip()


@given(st.text(alphabet="ab -#", max_size=20))
def test_a_hash_inside_quotes_is_not_a_comment(inner: str) -> None:
    quoted = "'" + inner.replace("'", "") + "'"
    assert normalise(f"python -m node post c {quoted}") == " ".join(f"python -m node post c {quoted}".split())
