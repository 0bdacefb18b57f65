"""program.md followed to the letter by a scripted agent, against a running node's API.

The node is tests/docskit.py's: a real ledger file, a real git repository and the submission queue
behind the real routes on 127.0.0.1, with a stand-in worker that claims each queued submission.
The agent runs program.md's own commands (taken from its experiment loop's code blocks, with the
placeholders filled from what earlier commands printed) as subprocesses, each within a shell
tool's command timeout. While it edits, a new record arrives: its submission must still be built
on the commit it checked out.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from ledger.bodies import Verify
from tests.docskit import CLAIM_VALUE_BPB, DocsNode, docs_node
from tests.node.hubkit import CLASS

from node.research.verifier import record_mint, verification_mint

ROOT = Path(__file__).resolve().parents[2]
SHELL_TIMEOUT_S = 120.0    # Claude Code's default for one shell command; every command must fit in it
POLL_S = 0.5               # program.md says `sleep 60` between looks; the stand-in worker is faster
pytestmark = pytest.mark.slow   # about ten CLI processes: 10-30 s at load on two cores


def loop_blocks(text: str) -> list[str]:
    """The shell code blocks of program.md's experiment loop, in order, one command each."""
    loop = text[text.index("## The experiment loop"):text.index("## Buying compute")]
    blocks = re.findall(r"^[ \t]*```sh\n(.*?)^[ \t]*```", loop, re.S | re.M)
    return [" ".join(b.split()) for b in blocks]


def test_the_loop_prints_exactly_the_commands_the_agent_runs() -> None:
    assert loop_blocks((ROOT / "program.md").read_text()) == [
        "python -m node checkout <best-commit> -o train.py",
        'python -m node submit train.py --parent <best-commit> -m "short description of the change"',
        "python -m node show <hash>",
    ]


def test_the_program_states_the_rules_an_unattended_agent_needs() -> None:
    text = (ROOT / "program.md").read_text()
    assert "--wait" not in text and "3600" not in text      # nothing blocks past a shell timeout
    assert "keep one experiment of yours waiting, never more" in text
    assert "Always pass `--parent`" in text
    assert "`noise_bpb`" in text and "record margin" in text
    assert "touch the seed" in text and "touch the evaluation" in text
    assert "submit one experiment at a time" not in text.lower()   # docs/node.md: keep the queue filled


async def _shell(node: DocsNode, work: Path, command: str) -> str:
    """One command as an agent's shell tool runs it: bash, in its folder, within SHELL_TIMEOUT_S."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOSWARM_", "HUB"))}
    env.update(AUTOSWARM_HOME=str(node.home), HOME=str(work.parent), PYTHONUNBUFFERED="1",
               PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}")
    proc = await asyncio.create_subprocess_exec("bash", "-c", command, cwd=work, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    started = time.monotonic()
    try:
        out, err = await asyncio.wait_for(proc.communicate(), SHELL_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{command!r} did not return within a shell timeout of {SHELL_TIMEOUT_S:.0f} s")
    assert proc.returncode == 0, (command, out.decode(), err.decode())
    assert time.monotonic() - started < SHELL_TIMEOUT_S
    return out.decode()


async def _new_record(node: DocsNode, parent: str) -> str:
    """Another node's edit becomes a record: claimed, verified, minted."""
    kit = node.kit
    source = node.source.replace("WARMDOWN_RATIO = 0.5", "WARMDOWN_RATIO = 0.3")
    commit = await kit.commit(bytes.fromhex(parent), source.encode(), "warm down over the last 30%")
    record = await kit.claim(commit, bytes.fromhex(parent), 1.0, message="warm down over the last 30%")
    entry = await kit.publish_as(kit.verifier, Verify(claim=record.id, commit=commit, platform_class=CLASS,
                                                     status="ok", val_bpb=1.0, num_steps=10, seed=0, training_s=1.0))
    if (fee := verification_mint(kit.ledger.state, kit.verifier.public_key, entry.id)) is not None:
        await kit.publish_as(kit.verifier, fee)
    mint, why = record_mint(kit.ledger.state, kit.verifier.public_key, record.id)
    assert mint is not None, why
    await kit.publish_as(kit.verifier, mint)
    return commit.hex()


async def test_an_agent_following_program_md_to_the_letter(tmp_path: Path) -> None:
    checkout, submit, show = loop_blocks((ROOT / "program.md").read_text())
    async with docs_node(tmp_path) as node:
        work = tmp_path / "agent" / "work"
        work.mkdir(parents=True)
        # the noise and the margin, where program.md says they are
        status = json.loads(await _shell(node, work, "python -m node status"))
        assert status["classes"][CLASS]["noise_bpb"] == pytest.approx(0.01)
        # 1. look; 2. fix the parent: the best commit of the class, checked out
        frontier = await _shell(node, work, "python -m node frontier")
        best = re.search(r"(?m)^  best: ([0-9a-f]{40})", frontier)
        assert best is not None and best.group(1) == node.better, frontier
        parent = best.group(1)
        await _shell(node, work, checkout.replace("<best-commit>", parent))
        assert "MATRIX_LR = 0.05" in (work / "train.py").read_text()
        # meanwhile another node's edit becomes the best
        newer = await _new_record(node, parent)
        assert f"best: {newer}" in await _shell(node, work, "python -m node frontier")
        # 3. edit; 4. submit on the parent fixed at checkout
        text = (work / "train.py").read_text()
        (work / "train.py").write_text(text.replace("MATRIX_LR = 0.05", "MATRIX_LR = 0.06"))
        queued = await _shell(node, work, submit.replace("<best-commit>", parent))
        found = re.search(r"^queued ([0-9a-f]{40}) \(parent ([0-9a-f]{12})\)", queued)
        assert found is not None, queued
        commit = found.group(1)
        assert parent.startswith(found.group(2)) and not newer.startswith(found.group(2))
        # 5. follow it with short looks until its claim is in
        deadline = time.monotonic() + SHELL_TIMEOUT_S
        while "claims (0)" in (shown := await _shell(node, work, show.replace("<hash>", commit))):
            assert time.monotonic() < deadline, shown
            await asyncio.sleep(POLL_S)
        assert f"{CLAIM_VALUE_BPB:.6f}" in shown and "queued on this node" not in shown
        assert f"parent {parent}" in shown
        # 6. report it in the #results format
        line = (f"commit:{commit[:7]} platform:{CLASS} val_bpb:{CLAIM_VALUE_BPB:.6f} vram_gb:0.0 | "
                "raise MATRIX_LR to 0.06")
        await _shell(node, work, f'python -m node post results "{line}"')
        assert line in await _shell(node, work, "python -m node read results")
