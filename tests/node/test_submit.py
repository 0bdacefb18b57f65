"""The submission queue (node/research/submit.py): a train.py that does not parse is refused with
its line and column, and the queue survives a restart."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.research.submit import BadTrainPy, SubmitQueue, check_source
from tests.node.hubkit import KitBackend, backend

GOOD = b"x = 1\nprint(x)\n"


async def _commits(kit: KitBackend, n: int) -> list[bytes]:
    return [await kit.commit(kit.baseline, GOOD + b"# %d\n" % i, f"edit {i}") for i in range(n)]


async def test_a_train_py_that_does_not_parse_is_refused_with_its_line_and_column(tmp_path: Path) -> None:
    async with backend(tmp_path) as kit:
        commit = await kit.commit(kit.baseline, b"x = 1\nif x\n    pass\n", "broken")
        with pytest.raises(BadTrainPy) as caught:
            await kit.queue.submit(commit, "agent-1")
        assert (caught.value.line, caught.value.column) == (2, 5)
        assert str(caught.value) == "train.py does not parse: line 2, column 5: expected ':'"
        assert kit.queue.queued() == []
        latin = await kit.commit(kit.baseline, b"s = '\xe9'\n", "latin-1")
        with pytest.raises(BadTrainPy, match="not UTF-8"):
            await kit.queue.submit(latin, "agent-1")


@given(st.text(max_size=60))
def test_check_source_accepts_exactly_what_python_parses(text: str) -> None:
    try:
        compile(text, "train.py", "exec", flags=0x400, dont_inherit=True)   # ast.PyCF_ONLY_AST
        parses = True
    except (SyntaxError, ValueError):
        parses = False
    if parses:
        check_source(text.encode())
    else:
        with pytest.raises(BadTrainPy):
            check_source(text.encode())


async def test_queued_and_taken_submissions_survive_a_restart_and_finished_ones_do_not(tmp_path: Path) -> None:
    path = tmp_path / "swarm" / "submissions.json"
    async with backend(tmp_path) as kit:
        first = SubmitQueue(kit.repo, kit.history, kit.ledger.spec, path=path)
        a, b, c = await _commits(kit, 3)
        for commit in (a, b, c):
            await first.submit(commit, "agent-1")
        taken = first.take()
        assert taken is not None and taken.commit == a   # the worker was running it when the node stopped
        done = first.take()
        assert done is not None and done.commit == b
        first.finish(b)                                  # its claim was published
        assert [r["commit"] for r in json.loads(path.read_text())] == [a.hex(), c.hex()]

        again = SubmitQueue(kit.repo, kit.history, kit.ledger.spec, path=path)
        kept, dropped = await again.restore()
        assert [s.commit for s in kept] == [a, c] and dropped == []
        assert [s.commit for s in again.queued()] == [a, c] and kept[0].agent == "agent-1"


async def test_a_restored_submission_already_claimed_is_not_run_twice(tmp_path: Path) -> None:
    path = tmp_path / "submissions.json"
    async with backend(tmp_path) as kit:
        (a,) = await _commits(kit, 1)
        queue = SubmitQueue(kit.repo, kit.history, kit.ledger.spec, path=path)
        await queue.submit(a, "agent-1")
        assert queue.take() is not None
        await kit.claim(a, kit.baseline, 1.4)   # published, then the node stopped before `finish`
        again = SubmitQueue(kit.repo, kit.history, kit.ledger.spec, path=path)
        assert await again.restore() == ([], [])
        assert json.loads(path.read_text()) == []


@pytest.mark.parametrize("text", ["{not json", '{"a": 1}', '[{"commit": "zz", "agent": "x"}]',
                                  '[{"commit": "' + "ab" * 20 + '", "agent": "x"}]'])
async def test_a_damaged_queue_file_is_reported_and_the_node_goes_on(tmp_path: Path, text: str) -> None:
    path = tmp_path / "submissions.json"
    path.write_text(text)
    async with backend(tmp_path) as kit:
        queue = SubmitQueue(kit.repo, kit.history, kit.ledger.spec, path=path)
        kept, dropped = await queue.restore()
        assert kept == [] and len(dropped) == 1 and queue.queued() == []
        (a,) = await _commits(kit, 1)
        await queue.submit(a, "agent-1")   # and the queue works, its file rewritten
        assert [r["commit"] for r in json.loads(path.read_text())] == [a.hex()]


async def test_an_idle_worker_waits_again_after_a_submission_was_taken(tmp_path: Path) -> None:
    """The wait that idle workers sleep in: at once while something is queued, woken by a new
    submission, and a real wait again once it is taken (it returned at once forever after the
    first submission, and an idle node spun at 80% of a core: seen in the demo)."""
    async with backend(tmp_path) as kit:
        queue = SubmitQueue(kit.repo, kit.history, kit.ledger.spec)
        loop = asyncio.get_running_loop()
        (commit,) = await _commits(kit, 1)
        await queue.submit(commit, "agent-1")
        async with asyncio.timeout(5):
            await queue.wait(60)                      # queued: no wait
        assert queue.take() is not None            # as a worker takes it: once, while one is queued
        queue.finish(commit)
        start = loop.time()
        await queue.wait(0.3)
        assert loop.time() - start >= 0.25            # taken: the next idle wait is a wait
        waiter = asyncio.create_task(queue.wait(60))
        await asyncio.sleep(0)
        (other,) = [c for c in await _commits(kit, 2) if c != commit]
        await queue.submit(other, "agent-1")
        async with asyncio.timeout(5):
            await waiter                              # a new submission wakes it
