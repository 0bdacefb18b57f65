"""Every command README.md, program.md and docs/*.md print works as printed.

tests/docskit.py extracts the commands; `CASES` below says, for each one, how it is checked:
- `Run`: run for real as a subprocess (bash, `python` meaning this interpreter, AUTOSWARM_HOME a
  node home served by a real Backend on 127.0.0.1, HOME a scratch folder), placeholders (H, A B,
  <hash>, 3fa2c1, FILE, KEY, HOME...) replaced by real values; it must exit 0 without a traceback
  and print what `expect` says;
- `Parse`: a synopsis (`[--limit N]`, `a | b`, `...`) or a command too long to run here: every
  command word must be a command of the real `--help`, and every option shown must be in it;
- `Skip`: not ours to run (another tool, the test suite itself, a system install), with why.
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
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.keys import Identity
from tests.docskit import ROOT, DocCommand, DocsNode, Helps, check_synopsis, docs_node, extract_all, normalise

COMMAND_TIMEOUT_S = 120.0    # an agent command takes 1-3 s at load 3; `submit --wait` polls every 5 s
SLOW_TIMEOUT_S = 540.0       # a 10 s CPU run: about 75 s at load 3 (sandboxed training and evaluation)
PARALLEL = 4                 # subprocesses at once: they mostly wait on the node


@dataclass(frozen=True)
class Run:
    subst: dict[str, str] = field(default_factory=dict)   # placeholder -> a value's name (see `Values`)
    expect: str = ""          # a regex stdout must match (after `then`)
    then: str = ""            # shell run after the command, in the same shell (to show what it set)
    before: str = ""          # shell run before it, in the same shell (what the docs' prose says to do first)
    group: str = ""           # commands of one group run in order, in one folder
    cwd: str = "work"         # "work": a folder holding an edited train.py; "repo": the repository
    slow: bool = False


@dataclass(frozen=True)
class Parse:
    why: str = ""             # why it is not run (empty: a synopsis, which cannot run as printed)


@dataclass(frozen=True)
class Skip:
    why: str


Case = Run | Parse | Skip

_RESULT_LINE = r"(?m)^commit:[0-9a-f]{7} platform:cpu-tiny val_bpb:1\.45"
_FOREVER = "runs the research loop until stopped (minutes of training); tests/node/test_node_run.py runs it"
_DEMO = "a loopback swarm until a verified record (minutes); tests/node/test_demo.py runs it"
_NAMES = "names a command; the forms with arguments run"
# program.md's "commit only train.py on top of a swarm commit", as an agent in an empty folder does it
_ON_A_SWARM_COMMIT = ("rm train.py && git init -q && "
                      "curl -sf \"$HUB/api/git/fetch/<parent>\" -H \"Authorization: Bearer $HUB_KEY\" -o /tmp/parent.bundle && "
                      "git bundle unbundle /tmp/parent.bundle >/dev/null && git checkout -q <parent> && "
                      "sed -i 's/^MATRIX_LR = .*/MATRIX_LR = @LR@/' train.py && "
                      "git -c user.name=agent -c user.email=agent@example.org commit -qam 'matrix lr @LR@'")
_PUSH = "curl -s -X POST \"$HUB/api/git/push\" -H \"Authorization: Bearer $HUB_KEY\" --data-binary @/tmp/push.bundle"

CASES: dict[str, Case] = {
    # README.md
    "python -m node": Parse(_FOREVER),
    "bash scripts/setup.sh && python -m node": Skip("installs system packages (apt, torch), then runs the node forever"),
    "bash scripts/test.sh": Skip("the whole test suite: CI runs exactly this"),
    "python -m ledger keygen KEY": Run({"KEY": "new_path"}, expect=r"\b[a-z0-9]{8,}"),
    "python -m ledger new-swarm --key KEY --out FILE": Run({"KEY": "spare_key", "FILE": "new_path"}),
    "python -m ledger audit FILE": Run({"FILE": "ledger"}),
    "python -m ledger show FILE [--author ID] [--kind KIND]": Parse(),
    "python -m ledger stats FILE": Run({"FILE": "ledger"}),
    "python -m trainer prepare": Run(cwd="repo", slow=True, expect=r'"manifest_hash"'),
    "python -m trainer run trainer/train.py --profile cpu": Parse("5 minutes of training (the default budget); "
                                                                 "docs/benchmarks.md's 10 s form runs"),
    "python -m ledger checkpoint FILE --key K": Run({"FILE": "ledger", "K": "research_key"}),
    "python -m ledger prove": Parse(_NAMES + " in test_ledger_checkpoint_prove_verify"),
    "python -m ledger verify": Parse(_NAMES + " in test_ledger_checkpoint_prove_verify"),
    "python -m ledger audit --checkpoint CP --proof P": Parse("shorthand without FILE; "
                                                             "test_ledger_checkpoint_prove_verify runs it"),
    "python -m node [--max-experiments N] [--budget-s S]": Parse(_FOREVER),
    "python -m node --bootstrap HOST:PORT [--listen HOST:PORT]": Parse(_FOREVER),
    "python -m node status": Run(expect=r'"classes"'),
    "python -m node frontier": Run(expect=r"cpu-tiny"),
    "python -m node leaderboard": Run(),
    "python -m node show H": Run({"H": "better"}, expect=r"raise the matrix lr"),
    "python -m node diff A B": Run({"A": "baseline", "B": "better"}, expect=r"MATRIX_LR = 0\.05"),
    "python -m node log": Run(expect=r"raise the matrix lr"),
    "python -m node submit train.py": Run(),
    "python -m node post": Parse(_NAMES),
    "python -m node read": Parse(_NAMES),
    "python -m node hypothesis": Run(),
    "python -m node insight": Run(),
    "python -m node credits": Run(),
    "python -m node job submit train.py --max-gpu-s 300 --price 100": Run(),
    "python -m node job list": Run(),
    "python -m node job show ID": Run({"ID": "job"}),
    "python -m node job cancel ID": Run({"ID": "fresh_job"}),
    "python -m node demo --nodes 3": Parse(_DEMO),
    "sky launch -c swarm --num-nodes 16 deploy/skypilot/autoswarm.yaml": Skip("SkyPilot and a cloud; tests/test_deploy.py"),
    "kubectl apply -f deploy/k8s/service.yaml -f deploy/k8s/statefulset.yaml": Skip("a Kubernetes cluster; "
                                                                                   "tests/test_deploy.py"),
    # program.md
    "python -m node <command>": Parse(),
    "python -m node ...": Parse(),
    "HUB=$(python -c \"import json,os; h=os.environ.get('AUTOSWARM_HOME') or os.path.expanduser('~/.autoswarm'); "
    "print(json.load(open(h+'/api.json'))['url'])\")": Run(then='echo "HUB=$HUB"', expect=r"HUB=http://127\.0\.0\.1:\d+$"),
    # program.md's key, from the operator's shell, into the file the agent sources
    "(umask 077; python -m node agent-key YOUR_AGENT_NAME > ~/.autoswarm_agent_creds)": Run(
        {"YOUR_AGENT_NAME": "fresh_agent"}, group="agent-creds", before="unset HUB HUB_KEY AGENT_ID",
        then="stat -c %a ~/.autoswarm_agent_creds", expect=r"^600$"),
    "source ~/.autoswarm_agent_creds": Run(group="agent-creds", before="unset HUB HUB_KEY AGENT_ID",
                                           then='echo "$HUB $HUB_KEY"', expect=r"^http://127\.0\.0\.1:\d+ \S+$"),
    "python -m node checkout <best-commit> -o train.py": Run({"<best-commit>": "better"}, then="grep -c 'MATRIX_LR = 0.05' train.py",
                                                             expect=r"(?m)^1$"),
    "python -m node read results": Run(expect=r"the first post of #results"),
    "python -m node read discussion": Run(expect=r"the first post of #discussion"),
    "python -m node log --search <idea>": Run({"<idea>": "idea"}, expect=r"matrix"),
    "python -m node show <hash>": Run({"<hash>": "better"}, expect=r"raise the matrix lr"),
    "python -m node diff <a> <b>": Run({"<a>": "baseline", "<b>": "better"}, expect=r"MATRIX_LR = 0\.05"),
    "python -m node submit train.py -m \"short description of the change\" --wait": Run(expect=_RESULT_LINE),
    "python -m node post results \"commit:a1b2c3d platform:h100-80g val_bpb:0.993200 vram_gb:44.2 | raise MATRIX_LR to "
    "0.05\"": Run(),
    "python -m node hypothesis \"deeper models stop helping past DEPTH=12 here\" --tag depth": Run(),
    "python -m node insight \"...\" --source <entry id>": Run({"<entry id>": "record_claim"}),
    "python -m node job submit train.py --max-gpu-s 300 --price 100 [--steps N] [--seed N]": Parse(),
    # docs/agenthub.md: a coding agent's git route, in one folder, in order
    "python -m node agent-key YOUR_AGENT_NAME > ~/.agenthub_creds": Run(
        {"YOUR_AGENT_NAME": "fresh_agent"}, group="hub-creds", before="unset HUB HUB_KEY AGENT_ID",
        then='. ~/.agenthub_creds && echo "$HUB $HUB_KEY"', expect=r"^http://127\.0\.0\.1:\d+ \S+$"),
    "curl -s \"$HUB/api/git/fetch/<hash>\" -H \"Authorization: Bearer $HUB_KEY\" -o /tmp/fetch.bundle":
        Run({"<hash>": "better", "/tmp/": "tmp"}, group="git-fetch",
            before="rm train.py && git init -q"),  # agenthub.md: "`git init` first in an empty folder"
    "git bundle unbundle /tmp/fetch.bundle": Run({"/tmp/": "tmp"}, group="git-fetch"),
    "git checkout <hash>": Run({"<hash>": "better"}, group="git-fetch", then="grep -c 'MATRIX_LR = 0.05' train.py",
                               expect=r"^1$"),
    "git fetch /tmp/fetch.bundle": Run({"/tmp/": "tmp"}, group="git-fetch"),
    "git bundle unbundle": Skip(_NAMES + "; docs/agenthub.md's `git bundle unbundle /tmp/fetch.bundle` runs"),
    "git checkout --orphan": Skip("what program.md says never to do"),
    # program.md's git route for a submission: a commit of train.py on a swarm commit, pushed as a bundle
    "git bundle create /tmp/push.bundle <parent>..HEAD": Run({"<parent>": "better", "/tmp/": "tmp"}, group="git-push",
                                                             before=_ON_A_SWARM_COMMIT.replace("@LR@", "0.07")),
    "curl -s -X POST \"$HUB/api/git/push\" -H \"Authorization: Bearer $HUB_KEY\" --data-binary @/tmp/push.bundle":
        Run({"/tmp/": "tmp"}, group="git-push", expect=r'"status": ?"queued"'),
    "git bundle create /tmp/push.bundle HEAD": Run({"<parent>": "better", "/tmp/": "tmp"}, group="git-push-whole",
                                                   before=_ON_A_SWARM_COMMIT.replace("@LR@", "0.08"), then=_PUSH,
                                                   expect=r'"status": ?"queued"'),
    "git init": Skip("the step before unbundle, in prose; the git-fetch group does it first"),
    # docs/agents.md
    "python -m node show HASH": Run({"HASH": "better"}, expect=r"raise the matrix lr"),
    "python -m node leaderboard [--class C] [--limit N]": Parse(),
    "python -m node checkout HASH [-o FILE]": Parse(),
    "python -m node log [--search Q] [--limit N]": Parse(),
    "python -m node submit FILE [--parent H] [-m MSG] [--wait [S]]": Parse(),
    "python -m node post CHANNEL TEXT": Run({"CHANNEL": "channel", "TEXT": "text"}),
    "python -m node read CHANNEL [--limit N]": Parse(),
    "python -m node hypothesis [TEXT] [--tag T]...": Parse(),
    "python -m node insight [TEXT] [--source ID]...": Parse(),
    "python -m node job submit FILE --max-gpu-s S --price P [--steps N] [--seed N]": Parse(),
    # docs/architecture.md, benchmarks.md, market.md, node.md, dashboard.md, deploy.md
    "python -m ledger audit": Parse(_NAMES),
    "python -m ledger checkpoint": Parse(_NAMES),
    "python -c pass": Run(),
    "python -m trainer prepare --home HOME": Run({"HOME": "fresh_dir"}, cwd="repo", slow=True, group="trainer",
                                                expect=r'"manifest_hash"'),
    "python -m trainer run trainer/train.py --profile cpu --budget-s 10 --seed 0 --data HOME/data/...":
        Run({"HOME/data/...": "prepared"}, cwd="repo", slow=True, group="trainer", expect=r'"status": "ok"'),
    "python -m node --home HOME --profile cpu --budget-s 10 --max-experiments 4": Parse(_FOREVER),
    "python -m node job submit train.py --max-gpu-s 300 --price 100 --steps 2000 --seed 1": Run(),
    "python -m node job show 3fa2c1d": Run({"3fa2c1d": "job7"}, expect=r"open"),
    "python -m node job cancel 3fa2c1d": Run({"3fa2c1d": "fresh_job7"}),
    "python -m node --bootstrap 10.0.0.5:7400 --listen 0.0.0.0:7400 --advertise 10.0.0.6:7400": Parse(
        "dials 10.0.0.5 and runs forever"),
    "python -m node --max-experiments 3 --budget-s 5": Parse(_FOREVER),
    "python -m node frontier | leaderboard | show H | diff A B | log | submit train.py | post C T | read C | credits ...":
        Parse(),
    "python -m node demo": Parse(_DEMO),
    "python -m node job submit|list|show|cancel": Parse(),
    "python -m node job submit": Parse(_NAMES),
    "python -m trainer ...": Parse(),
    "python -m node demo --nodes 3 [--budget-s 5] [--dir D] [--keep]": Parse(_DEMO),
    "python -m node --profile cpu --budget-s 3 --max-experiments 4": Parse(_FOREVER),
    "python -m node --home HOME --listen 0.0.0.0:7400 [--bootstrap BOOTSTRAP]": Parse(_FOREVER),
    "python -m trainer.prepare --home DIR --no-progress": Run({"DIR": "fresh_dir"}, cwd="repo", slow=True,
                                                             expect=r'"manifest_hash"'),
    "python -m trainer.prepare": Parse(_NAMES),
    "python -m trainer run ...": Parse(),
    "python -m trainer run|prepare": Parse(),
    "python -m trainer run PATH [--profile cpu|gpu|auto] [--budget-s N] [--steps N] [--horizon N] [--seed N] "
    "[--eval-seed N] [--data DIR] [--parent PATH] [--no-sandbox] [--keep-work DIR] [--home DIR] [--hide PATH]... "
    "[--compile-cache DIR|none]": Parse(),
    "python -m trainer run trainer/train.py --profile cpu --budget-s 2 --seed 1 --eval-seed 5": Parse(
        "a training run like the 10 s one above, which runs for real"),
    "bash scripts/gpu_check.sh gpu_check.jsonl": Skip("the GPU check (minutes); tests/trainer/test_gpu_check.py "
                                                      "runs its CPU fallback"),
    "bash scripts/gpu_check.sh [OUT.jsonl] [--budget-s S]": Skip("the GPU check (minutes); "
                                                                 "tests/trainer/test_gpu_check.py runs its CPU fallback"),
    # the forms the CLI work (one argparse tree, --advertise, agent-key) adds to the docs
    "python -m node agent-key NAME": Run({"NAME": "agent_name"}, expect=r"\S"),
    "python -m node agent-key claude-1 > ~/.agenthub_creds": Run(
        group="hub-creds", before="unset HUB HUB_KEY AGENT_ID", then='. ~/.agenthub_creds && echo "$HUB $HUB_KEY"',
        expect=r"^http://127\.0\.0\.1:\d+ \S+$"),
    "python -m node --help": Run(expect=r"frontier"),
    "python -m node --bootstrap HOST:PORT [--listen HOST:PORT] [--advertise HOST:PORT]": Parse(_FOREVER),
    "python -m node --home /h --json frontier": Run({"/h": "home"}, expect=r'"classes"'),
    "python -m node frontier --home /h --json": Run({"/h": "home"}, expect=r'"classes"'),
}
# (pattern, case) for families; a command matching none of CASES' keys is looked up here
FAMILIES: list[tuple[str, Case]] = [
    (r"python scripts/bench_\w+\.py( .*)?", Parse("a benchmark (minutes to hours); its options are checked")),
    (r"(DASHBOARD_SCREENSHOTS=\S+ )?python -m pytest .*", Skip("the test suite's own files")),
    (r"(pip install|sky|kubectl|docker)( .*)?", Skip("an install, a cloud or a cluster engine; tests/test_deploy.py "
                                                    "checks the files")),
    (r"pytest .*", Skip("the test suite's own files (their paths are checked)")),
    (r"git (bundle create|bundle verify|fetch b\.bundle)( .*)?",
     Skip("git's own forms in the bundle format's prose; tests/swarm/test_bundles.py runs git against our bundles")),
]
# rows for docs in flux while the CLI work merges: forms that one side of the merge prints and the
# other does not (a row no doc prints any more fails test_every_case_is_still_documented otherwise)
IN_FLUX = {"python -m node agent-key NAME", "python -m node --help",
           "python -m node --bootstrap HOST:PORT [--listen HOST:PORT] [--advertise HOST:PORT]",
           "python -m node --bootstrap HOST:PORT [--listen HOST:PORT]", "python -m node --home /h --json frontier",
           "python -m node frontier --home /h --json"}


def case_of(text: str) -> Case | None:
    if text in CASES:
        return CASES[text]
    for pattern, case in FAMILIES:
        if re.fullmatch(pattern, text, re.S):
            return case
    return None


DOCS = extract_all()


def test_the_docs_have_commands() -> None:
    """The extraction sees the docs (a regex that stopped matching would make every check vacuous)."""
    assert len(DOCS) >= 100
    texts = {c.text for c in DOCS}
    assert {"python -m node frontier", "python -m node status", "python -m ledger audit FILE"} <= texts


def test_every_documented_command_is_classified() -> None:
    missing = [f"{c.where()}: {c.text!r}" for c in DOCS if case_of(c.text) is None]
    assert not missing, "commands in the docs that tests/test_docs.py's CASES does not name:\n" + "\n".join(missing)


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
