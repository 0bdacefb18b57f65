"""How each command that README.md, program.md and docs/*.md print is checked (tests/test_docs.py).

`CASES` names every documented command, `FAMILIES` whole families of them by a regex:
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

import re
from dataclasses import dataclass, field

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
    "bash scripts/test.sh --fast": Skip("the fast tier of the same suite: CI runs everything"),
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
    "python -m node --agent \"claude -p 'Follow BRIEF.md in this folder.' --permission-mode acceptEdits\"": Parse(
        _FOREVER + "; with an agent per worker, as tests/node/test_agent_node.py runs a scripted one"),
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
    "python -m node submit train.py --parent <best-commit> -m \"short description of the change\"": Run(
        {"<best-commit>": "better"}, expect=r"^queued [0-9a-f]{40} \(parent [0-9a-f]{12}\) at position \d+"),
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
    "python -m node --agent CMD": Parse(_FOREVER),
    "python -m node submit": Parse(_NAMES),
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
    "python -m node demo --nodes 3 [--budget-s N] [--dir D] [--keep]": Parse(_DEMO),
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
    "python scripts/attacks_live.py": Skip("starts a real node and attacks it (minutes); "
                                          "tests/node/test_attacks_live.py runs it"),
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
