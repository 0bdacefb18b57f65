"""The node's repository: commits, reads, diffs and errors, on real repositories in tmp_path."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from swarm import gitrepo
from swarm.errors import RepositoryError, UnknownObject
from swarm.gitobjects import parse_commit
from swarm.gitrepo import Repository

AUTHOR = "node <node@swarm>"


async def test_commits_read_back_and_are_valid_git(tmp_path: Path) -> None:
    async with Repository.open(tmp_path / "r") as repo:
        base = await gitrepo.commit_file(repo, None, {"train.py": b"a\n", "lib/util.py": b"u\n"},
                                         "base", AUTHOR, 100)
        child = await gitrepo.commit_file(repo, base, {"lib/util.py": b"v\n"}, "c", AUTHOR, 200)
        assert len(child) == 20 and await gitrepo.has_commit(repo, child)
        assert await gitrepo.read_file(repo, child, "train.py") == b"a\n"
        assert await gitrepo.read_file(repo, child, "lib/util.py") == b"v\n"
        assert await gitrepo.changed_paths(repo, base, child) == {"lib/util.py"}
        assert await gitrepo.changed_paths(repo, None, base) == {"train.py", "lib/util.py"}
        info = await gitrepo.commit_info(repo, child)
        assert (info.parents, info.author, info.time_s, info.message) == ((base,), AUTHOR, 200, "c")
        assert (await gitrepo.commit_info(repo, base)).parents == ()
        with pytest.raises(UnknownObject):
            await gitrepo.commit_info(repo, b"\x01" * 20)
        with pytest.raises(UnknownObject):
            await gitrepo.read_file(repo, child, "missing.py")
        with pytest.raises(UnknownObject):
            await gitrepo.read_file(repo, child, "lib")
        assert not await gitrepo.has_commit(repo, b"\x01" * 20)
        tree = parse_commit((await gitrepo.read_objects(repo, [base]))[base].data).tree
        assert await gitrepo.has_object(repo, tree) and not await gitrepo.has_commit(repo, tree)
    done = subprocess.run(["git", "-C", str(tmp_path / "r"), "fsck", "--strict"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    log = subprocess.run(["git", "-C", str(tmp_path / "r"), "cat-file", "-p", child.hex()],
                         capture_output=True, text=True, timeout=30).stdout
    assert f"parent {base.hex()}" in log and "author node <node@swarm> 200 +0000" in log


async def test_same_inputs_give_the_same_commit(tmp_path: Path) -> None:
    async with Repository.open(tmp_path / "a") as a, Repository.open(tmp_path / "b") as b:
        files = {"train.py": b"x = 1\n"}
        assert await gitrepo.commit_file(a, None, files, "m", AUTHOR, 5) == \
            await gitrepo.commit_file(b, None, files, "m", AUTHOR, 5)


async def test_diff_is_unified_and_bounded(tmp_path: Path) -> None:
    async with Repository.open(tmp_path / "r") as repo:
        old = "".join(f"line {i}\n" for i in range(2000)).encode()
        new = old.replace(b"line 5\n", b"line five\n")
        a = await gitrepo.commit_file(repo, None, {"train.py": old}, "a", AUTHOR, 1)
        b = await gitrepo.commit_file(repo, a, {"train.py": new}, "b", AUTHOR, 2)
        text = await gitrepo.diff(repo, a, b)
        assert "-line 5\n+line five\n" in text and text.startswith("--- a/train.py\n+++ b/train.py")
        everything = await gitrepo.commit_file(repo, a, {"train.py": b"gone\n"}, "c", AUTHOR, 3)
        cut = await gitrepo.diff(repo, a, everything, max_bytes=1000)
        assert len(cut) < 1100 and cut.endswith("diff cut at 1000 characters\n")


async def test_bad_paths_authors_and_places(tmp_path: Path) -> None:
    async with Repository.open(tmp_path / "r") as repo:
        for path in ("../x", "a//b", ".git/hooks/pre-commit", ""):
            with pytest.raises(ValueError):
                await gitrepo.commit_file(repo, None, {path: b"x"}, "m", AUTHOR, 1)
        with pytest.raises(ValueError):
            await gitrepo.commit_file(repo, None, {"train.py": b"x"}, "m", "no email", 1)
        with pytest.raises(UnknownObject):
            await gitrepo.commit_file(repo, b"\x02" * 20, {"train.py": b"x"}, "m", AUTHOR, 1)
        base = await gitrepo.commit_file(repo, None, {"train.py": b"x"}, "m", AUTHOR, 1)
        with pytest.raises(RepositoryError):
            await gitrepo.commit_file(repo, base, {"train.py/inner": b"x"}, "m", AUTHOR, 1)
    with pytest.raises(RepositoryError, match="closed"):
        await gitrepo.has_commit(repo, base)
    await repo.aclose()  # idempotent
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "file").write_text("not git")
    with pytest.raises(RepositoryError):
        await Repository.open(tmp_path / "plain")
