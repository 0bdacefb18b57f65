"""The commands the documentation prints, and the means to check them: tests/test_docs.py's kit.

Three parts, each knowing nothing of the others' concerns:
- `extract`: every command line of README.md, program.md and docs/*.md (fenced and indented code
  blocks, inline `python ...` spans and the spans that continue them, inline spans of the other
  tools the docs tell a person to run (git, curl, pip, ...), the first column of command tables),
  normalised so a table can name it (`python` for any interpreter spelling, comments cut,
  spaces collapsed). Pure: text in, commands out.
- `Helps` and `check_synopsis`: a synopsis (`python -m node frontier | show H`, `[--limit N]`,
  `job submit|list`) is checked against the real `--help` texts: every command word must be a
  command there and every option shown must appear in that command's help.
- `docs_node`: a node home served by a real Backend (tests/node/hubkit.py's: a real ledger file
  under HOME/swarms/<slug>/, a real git repository, the submission queue, a real credits market
  over a real peer) on 127.0.0.1, with HOME/api.json, HOME/config.toml and HOME/keys, so
  `python -m node <command>` and `python -m node status` as subprocesses find it. The trainer is
  the one thing missing: a small worker claims each queued submission with a made-up number.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import shlex
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ledger.bodies import Post, Verify
from ledger.store import Ledger
from swarm import gitrepo
from swarm.gitrepo import Repository
from swarm.peer import Peer
from swarm.peerconfig import PeerConfig
from tests.ledger.factory import identity
from tests.node.hubkit import CLASS, KitBackend, spec_for

from node import home as node_home
from node.configfile import ensure_config_file
from node.market.loop import Market, MarketConfig, keep_job_bundle, running
from node.market.policy import JobRequest
from node.research.fetch import read_bundle
from node.research.history import History
from node.research.submit import SubmitQueue
from node.research.verifier import record_mint, verification_mint
from node.web import agenthub, nodeapi
from node.web.agents import AgentRegistry

ROOT = Path(__file__).resolve().parents[1]
HELP_TIMEOUT_S = 60.0      # one `--help` takes about a second at load 3 on two cores


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", root / "program.md", *sorted((root / "docs").glob("*.md"))]


# -- extraction (pure)

@dataclass(frozen=True, slots=True)
class DocCommand:
    path: str      # relative to the repository root
    line: int      # 1-based line of the command's first line
    text: str      # normalised: see `normalise`

    def where(self) -> str:
        return f"{self.path}:{self.line}"


_FENCE = re.compile(r"^([ \t]*)```([\w-]*)[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)
_SHELL_LANGS = {"sh", "bash", "console", "shell"}
# the first word of a command line in a code block that is not marked as shell
_COMMAND_WORD = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S*\s+)*(?:\.venv/bin/python3?|python3?|bash|sh|pip|uv|sky|kubectl|docker|"
                           r"curl|git|export|cd)(?:\s|$)")
_INTERPRETER = re.compile(r"(?<![\w/.-])(?:\.venv/bin/python3?|python3)(?=\s|$)")
_SPAN = re.compile(r"(?<!`)`([^`]+?)`(?!`)")
_SPAN_COMMAND = re.compile(r"^(?:\.venv/bin/python3?|python3?) (?:-m \S|-c |scripts/)")
_SPAN_TOOL = re.compile(r"^(?:curl|git|pip|sky|kubectl|docker|bash|pytest) \S")  # `git` alone is a word
_CONTINUES = re.compile(r"^(?:,| and|, and|,? or)\s*$")


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a # outside quotes, after a space)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def normalise(text: str) -> str:
    """One spelling per command: `python` for every interpreter, no comment, single spaces, no prompt."""
    text = " ".join(_strip_comment(text).split())
    text = re.sub(r"^(?:\$ )+", "", text)
    return _INTERPRETER.sub("python", text)


def _block_commands(body: str, first_line: int, shell: bool) -> list[tuple[int, str]]:
    """(line, text) of every command in a code block; `if ... fi` and `\\`-continued lines join."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0

    def flush() -> None:
        if pending:
            out.append((start, "\n".join(normalise(p.rstrip("\\")) for p in pending)))
            pending.clear()

    for n, raw in enumerate(body.split("\n")):
        line = _strip_comment(raw.strip()).strip()
        if not line:
            continue
        if not pending:
            if not shell and not _COMMAND_WORD.match(line):
                continue
            start = first_line + n
        pending.append(line)
        joined = "\n".join(pending)
        opened = len(re.findall(r"(?:^|[;\s])if\s", joined)) - len(re.findall(r"(?:^|[;\s])fi(?:$|[;\s])", joined))
        if not line.endswith("\\") and opened <= 0:
            flush()
    flush()
    return out


def _indented_blocks(text: str) -> list[tuple[int, str]]:
    """(first line, body) of indented code blocks (4+ spaces after a blank line) that hold commands."""
    lines = text.split("\n")
    found: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("    ") and lines[i].strip() and i > 0 and not lines[i - 1].strip():
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            body = "\n".join(lines[i:j])
            if _COMMAND_WORD.match(lines[i].strip()):
                found.append((i + 1, body))
            i = j
        else:
            i += 1
    return found


def _spans(text: str, line_of: "functools.partial[int]") -> list[tuple[int, str]]:
    """Inline command spans: `python ...` ones, the bare spans that continue one in the same
    sentence (`python -m node frontier`, `leaderboard`, `show H` -> python -m node show H), and
    the first column of a table whose header's first cell is `command`."""
    out: list[tuple[int, str]] = []
    in_command_table = False
    for n, row in enumerate(text.split("\n")):
        if row.startswith("|"):
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            if cells and cells[0] == "command":
                in_command_table = True
            elif in_command_table and cells and cells[0].startswith("`") and \
                    not _SPAN_COMMAND.match(cells[0].strip("`")):
                for m in _SPAN.finditer(row.split(" | ")[0]):
                    span = " ".join(m.group(1).split())
                    if not _SPAN_COMMAND.match(span) and not span.startswith("-"):
                        out.append((n + 1, normalise("python -m node " + span)))
        else:
            in_command_table = False
    prefix: str | None = None
    last_end = -1
    for m in _SPAN.finditer(text):
        span = " ".join(m.group(1).split())
        if _SPAN_COMMAND.match(span):
            words = span.split()
            prefix = " ".join(words[:3]) if words[1] == "-m" else None
            out.append((line_of(m.start()), normalise(span)))
        elif _SPAN_TOOL.match(span):
            prefix = None
            out.append((line_of(m.start()), normalise(span)))
        elif prefix is not None and _CONTINUES.match(text[last_end:m.start()]) and not span.startswith("-"):
            out.append((line_of(m.start()), normalise(f"{prefix} {span}")))
        else:
            prefix = None
        last_end = m.end()
    return out


def _line_finder(text: str) -> "functools.partial[int]":
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    return functools.partial(_line_of, starts)


def _line_of(starts: list[int], offset: int) -> int:
    lo, hi = 0, len(starts)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if starts[mid] <= offset else (lo, mid)
    return lo + 1


def extract(path: Path, root: Path = ROOT) -> list[DocCommand]:
    text = path.read_text()
    rel = str(path.relative_to(root))
    line_of = _line_finder(text)
    found: list[tuple[int, str]] = []
    for m in _FENCE.finditer(text):
        lang = m.group(2)
        if lang in _SHELL_LANGS or lang == "":
            found += _block_commands(m.group(3), line_of(m.start(3)), shell=lang in _SHELL_LANGS)
    # everything outside fences: blank the fences (keeping line numbers) and read the rest
    outside = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for first, body in _indented_blocks(outside):
        found += _block_commands(body, first, shell=False)
    found += _spans(outside, _line_finder(outside))
    return [DocCommand(rel, line, cmd) for line, cmd in sorted(set(found)) if cmd]


def extract_all(root: Path = ROOT) -> list[DocCommand]:
    return [c for path in doc_files(root) for c in extract(path, root)]


# -- synopses against the real --help texts

@dataclass(frozen=True, slots=True)
class Help:
    code: int
    text: str

    def prog(self) -> str:
        """`python -m node frontier` of `usage: python -m node frontier [-h] ...`."""
        m = re.search(r"usage: (.*)", self.text)
        if m is None:
            return ""
        given = m.group(1).split()
        skip = 3 if given[1:2] == ["-m"] else 2   # `python -m node` / `python scripts/x.py`
        words: list[str] = given[:skip]
        for word in given[skip:]:
            if word[:1] in "[-{<" or word.isupper() or word == "|" or "/" in word or "." in word.strip("."):
                break
            words.append(word)
        return " ".join(words)

    def takes_value(self, option: str) -> bool:
        """`--profile {auto,cpu,gpu}` / `--home HOME` in the help: the next word is its value."""
        return re.search(r"(?<![\w-])" + re.escape(option) + r"[ =](?:[A-Z][A-Z0-9_:]*|\{[^}]*\})", self.text) is not None

    def has_option(self, option: str) -> bool:
        return re.search(r"(?<![\w-])" + re.escape(option) + r"(?![\w-])", self.text) is not None


_DONE: dict[tuple[str, ...], Help] = {}   # help texts do not depend on the home: one run per test session


class Helps:
    """`--help` of each command path, run once (as `python -m <module> <path> --help`) and cached."""

    def __init__(self, env: dict[str, str], cwd: Path = ROOT, parallel: int = 4) -> None:
        self.env, self.cwd = env, cwd
        self._cache: dict[tuple[str, ...], asyncio.Future[Help]] = {}
        self._gate = asyncio.Semaphore(parallel)

    async def _run(self, argv: tuple[str, ...]) -> Help:
        async with self._gate:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *argv, "--help", cwd=self.cwd, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            try:
                async with asyncio.timeout(HELP_TIMEOUT_S):
                    out, _ = await proc.communicate()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
            _DONE[argv] = Help(proc.returncode or 0, out.decode(errors="replace"))
            return _DONE[argv]

    async def get(self, argv: tuple[str, ...]) -> Help:
        if argv in _DONE:
            return _DONE[argv]
        if argv not in self._cache:
            self._cache[argv] = asyncio.ensure_future(self._run(argv))
        return await self._cache[argv]


def _alternatives(words: list[str]) -> list[list[str]]:
    """`a | b c` -> [[a], [b, c]]; `job submit|list` -> [[job, submit], [job, list]]."""
    groups: list[list[str]] = [[]]
    for w in words:
        if w == "|":
            groups.append([])
        else:
            groups[-1].append(w)
    out: list[list[str]] = []
    for g in groups:
        variants: list[list[str]] = [[]]
        for w in g:
            choices = w.split("|") if "|" in w and not w.startswith("-") and "<" not in w else [w]
            variants = [v + [c] for v in variants for c in choices]
        out += variants
    return [v for v in out if v]


def _is_value(word: str) -> bool:
    """A placeholder or a value, never a command word."""
    return (word[:1] in "[<\"'$~." or word == "..." or word.isupper() or not re.fullmatch(r"[a-z][a-z0-9-]*", word))


async def check_synopsis(helps: Helps, command: str) -> list[str]:
    """What in `command` (a `python -m MODULE ...` or `python scripts/X.py ...` line, alternatives
    allowed) the real help texts do not know: unknown command words, options not in the help."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    if words[:1] != ["python"] or len(words) < 2:
        return [f"not a python command: {command}"]
    base: tuple[str, ...]
    if words[1] == "-m":
        base, rest = (words[1], words[2]), words[3:]
    else:
        base, rest = (words[1],), words[2:]
    problems: list[str] = []
    for variant in _alternatives(rest):
        problems += [p for p in await _check_variant(helps, base, variant) if p not in problems]
    if not rest:
        help_ = await helps.get(base)
        if help_.code != 0:
            problems.append(f"`python {' '.join(base)} --help` exits {help_.code}")
    return problems


async def _check_variant(helps: Helps, base: tuple[str, ...], words: list[str]) -> list[str]:
    path: tuple[str, ...] = ()
    seen_positional = False
    skip_value = False
    options: list[str] = []
    for word in words:
        option = word.strip("[]").split("=", 1)[0]
        if option.startswith("-") and len(option) > 1 and option != "--":
            options.append(option)
            skip_value = "=" not in word and (await helps.get(base + path)).takes_value(option)
            continue
        if skip_value or seen_positional or _is_value(word):
            seen_positional = seen_positional or not (skip_value or word.startswith("["))
            skip_value = False
            continue
        below = await helps.get(base + path + (word,))
        expected = " ".join(("python",) + base + path + (word,))
        if below.code == 0 and below.prog() == expected:
            path += (word,)
            continue
        mine = await helps.get(base + path)
        if _lists_commands(mine):
            return [f"`{expected}`: no such command (`{' '.join(('python',) + base + path)} --help` does not "
                    f"know {word!r})"]
        seen_positional = True
    help_ = await helps.get(base + path)
    if help_.code != 0:
        return [f"`python {' '.join(base + path)} --help` exits {help_.code}"]
    run_help = await helps.get(base + ("run",)) if not path and base[:2] == ("-m", "node") else None
    problems: list[str] = []
    for option in options:
        if option in ("-h", "--help") or help_.has_option(option):
            continue
        if run_help is not None and run_help.code == 0 and run_help.prog() == "python -m node run" and \
                run_help.has_option(option):
            continue
        problems.append(f"`python {' '.join(base + path)} --help` does not list {option}")
    return problems


def _lists_commands(help_: Help) -> bool:
    """Whether this level takes a command (argparse's `{a,b}` or a COMMAND metavar, or a usage of
    alternatives like `python -m trainer run ... | python -m trainer prepare ...`)."""
    usage = help_.text.split("\n\n", 1)[0]
    return "{" in usage or "COMMAND" in usage or " | python " in usage


# -- the node the agent commands talk to

OPERATOR_TOKEN = "docs-operator-token"
CLAIM_VALUE_BPB = 1.45       # what the stand-in worker "measures" for every queued submission
WORKER_WAKE_S = 1.0          # the stand-in worker re-checks its queue at least this often


@dataclass
class DocsNode:
    home: Path
    url: str
    ledger_path: Path
    research_key: Path
    baseline: str            # 40-hex commits in the node's repository
    better: str              # the verified record
    record_claim: str        # 64-hex id of the record's claim entry
    agent_key: str           # a registered agent's key, for the AgentHub routes
    source: str              # the genesis train.py
    kit: KitBackend          # tests/node/hubkit.py's, with the market attached
    market: Market

    async def new_job(self, tag: str) -> str:
        """A fresh open job of this node (64 hex), so each cancel in the docs cancels its own."""
        kit, market = self.kit, self.market
        base = bytes.fromhex(self.baseline)
        commit = await gitrepo.commit_file(kit.repo, base, {"train.py": (self.source + f"\n# job {tag}\n").encode()},
                                           f"job {tag}", "docs <docs@autoswarm>", 1)
        bundle = await keep_job_bundle(kit.repo, self.home / "bundles", commit, base)
        entry = await market.submit(JobRequest(
            job_type="train", commit=commit, bundle=bundle, args=("--steps", "5", "--seed", "1"), platform_class=CLASS,
            max_gpu_s=60, price_ucr_per_gpu_s=100, expires_s=3600))
        return entry.id.hex()


async def _claim_queued(kit: KitBackend) -> None:
    """The node's worker, minus the trainer: claims every submission as it is queued."""
    queue = kit.queue
    while True:
        await queue.wait(WORKER_WAKE_S)
        while (item := queue.take()) is not None:
            await kit.claim(item.commit, item.parent, CLAIM_VALUE_BPB, message=item.message)


@contextlib.asynccontextmanager
async def docs_node(tmp: Path) -> AsyncIterator[DocsNode]:
    home = tmp / "node-home"
    layout = node_home.Layout(home)
    me, verifier = identity(900), identity(901)
    me.save(layout.research_key)
    verifier.save(layout.verifier_key)
    layout.keys.chmod(0o700)
    ensure_config_file(home)
    slug = "solo-docs"
    layout.swarm(slug).mkdir(parents=True)
    (layout.swarms / node_home.CURRENT_FILE).write_text(slug + "\n")
    async with Repository.open(layout.repo) as repo:
        baseline = await node_home.ensure_baseline(repo)
        spec = spec_for(me, [verifier], baseline)
        async with Ledger.open(layout.ledger(slug), spec) as ledger, \
                Peer.open(PeerConfig(), ledger, me,
                          bundle_source=functools.partial(read_bundle, layout.bundles)) as peer:
            history = History()
            agents = AgentRegistry.load(home / "agents.json", OPERATOR_TOKEN)
            market = Market(ledger, peer, repo, home, me, [], [CLASS], MarketConfig(offer=False, spot_check_rate=0.0),
                            on_event=lambda text: None)
            kit = KitBackend(home, ledger, repo, me, verifier, SubmitQueue(repo, history, spec), agents, history,
                             market=market)  # type: ignore[arg-type]

            async def verified(claim_id: bytes, commit: bytes, value: float) -> None:
                entry = await kit.publish_as(verifier, Verify(claim=claim_id, commit=commit, platform_class=CLASS,
                                                              status="ok", val_bpb=value, num_steps=10, seed=0,
                                                              training_s=1.0))
                fee = verification_mint(ledger.state, verifier.public_key, entry.id)
                if fee is not None:
                    await kit.publish_as(verifier, fee)
                mint, why = record_mint(ledger.state, verifier.public_key, claim_id)
                if mint is None:
                    raise RuntimeError(f"docs node: no record mint: {why}")
                await kit.publish_as(verifier, mint)

            source = (await gitrepo.read_file(repo, baseline, "train.py")).decode()
            base_claim = await kit.claim(baseline, None, 1.5, message="baseline: the genesis train.py")
            await verified(base_claim.id, baseline, 1.5)
            better = await kit.commit(baseline, source.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05").encode(),
                                      "raise the matrix lr")
            record = await kit.claim(better, baseline, 1.2, message="raise the matrix lr")
            await verified(record.id, better, 1.2)
            for channel in ("results", "discussion"):  # program.md's channels, as a first agent leaves them
                await kit.publish(Post(channel=channel, text=f"the first post of #{channel}", reply_to=None))

            app = web.Application()
            agenthub.add_routes(app, kit, agents)
            nodeapi.add_routes(app, kit, agents)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                url = f"http://127.0.0.1:{runner.addresses[0][1]}"
                api = home / "api.json"
                api.write_text(json.dumps({"url": url, "token": OPERATOR_TOKEN}))
                api.chmod(0o600)
                node = DocsNode(home, url, layout.ledger(slug), layout.research_key, baseline.hex(), better.hex(),
                                record.id.hex(), agents.register("docs-agent"), source, kit, market)
                async with running(market, None), asyncio.TaskGroup() as tg:
                    worker = tg.create_task(_claim_queued(kit), name="docs-node-worker")
                    try:
                        yield node
                    finally:
                        worker.cancel()
            finally:
                await runner.cleanup()
