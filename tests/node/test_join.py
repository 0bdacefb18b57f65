"""Joining and fetching: admission policy, the joinable check, and commits pulled from a real peer."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest

from ledger import fold
from ledger.bodies import Admit, Claim
from node import home
from node.research.admission import due_admissions
from node.errors import SetupError
from node.research.fetch import CommitFetcher, keep_bundle, read_bundle
from node.research.history import ClaimRecord, History
from node.home import DataInfo
from node.platform import Device
from swarm import bundles, gitrepo
from swarm.gitrepo import Repository
from tests.ledger.factory import CLASS, Feeds, identity, make_spec
from tests.swarm.swarmkit import SPEC, open_node

AUTHOR = "t <t@autoswarm>"


def test_the_creator_admits_each_listed_profiled_node_once() -> None:
    creator, known, new, frozen = identity(1), identity(2), identity(3), identity(4)
    spec = make_spec(creator, [known])
    state = fold.initial(spec.spec)
    state.frozen[frozen.public_key] = 1
    profiles = {known.public_key: CLASS, new.public_key: CLASS, frozen.public_key: CLASS, identity(5).public_key: "tpu",
                identity(6).public_key: CLASS}
    keys = {known.public_key, new.public_key, frozen.public_key, identity(5).public_key}  # [swarm] admit_keys
    assert due_admissions(state, profiles, keys) == [Admit(verifier=new.public_key, platform_classes=[CLASS])]
    feeds = Feeds(spec.swarm_id)
    fold.apply(state, feeds.sign(creator, due_admissions(state, profiles, keys)[0]))
    assert due_admissions(state, profiles, keys) == []  # admitted: nothing more to do


def _device(cls: str) -> Device:
    return Device(index=None, name="cpu", memory_mb=1, driver="", platform_class=cls)


def test_a_swarm_we_cannot_compare_with_is_refused_in_one_line() -> None:
    spec = SPEC.spec
    data = DataInfo(Path("/nonexistent"), spec.dataset_hash, spec.tokenizer_hash)
    with pytest.raises(SetupError, match="another trainer harness"):
        home.check_joinable(SPEC, data, spec.baseline_commit, [_device(CLASS)])


async def _chain(repo: Repository, bundle_dir: Path) -> tuple[bytes, list[tuple[bytes, bytes, bytes]]]:
    """genesis -> c1 -> c2 in `repo`; each child's thin bundle kept under bundle_dir: (commit, parent, digest)."""
    genesis = await gitrepo.commit_file(repo, None, {"train.py": b"x = 1\n"}, "genesis", AUTHOR, 0)
    out, parent = [], genesis
    for i in (2, 3):
        commit = await gitrepo.commit_file(repo, parent, {"train.py": f"x = {i}\n".encode()}, f"c{i}", AUTHOR, i)
        data = await bundles.make_bundle(repo, commit, have=[parent])
        digest = bundles.bundle_hash(data)
        await keep_bundle(bundle_dir, digest, data)
        out.append((commit, parent, digest))
        parent = commit
    return genesis, out


def _history(chain: list[tuple[bytes, bytes, bytes]], author: bytes) -> History:
    history = History()
    for n, (commit, parent, digest) in enumerate(chain):
        body = Claim(commit=commit, parent=parent, platform_class=CLASS, status="ok", val_bpb=1.0 - n / 10,
                     num_steps=1, planned_steps=1, seed=0, training_s=1.0, wall_s=1.0, peak_vram_mb=0.0,
                     loss_curve=[], diff_summary="", message="", bundle=digest)
        history.add(ClaimRecord(bytes([n]) * 32, author, n + 1, 0, body))
    return history


async def test_a_commit_and_its_missing_parent_come_from_a_peer_by_bundle_hash(tmp_path: Path) -> None:
    async with Repository.open(tmp_path / "a-repo") as a_repo, Repository.open(tmp_path / "b-repo") as b_repo:
        genesis, chain = await _chain(a_repo, tmp_path / "a-bundles")
        await gitrepo.commit_file(b_repo, None, {"train.py": b"x = 1\n"}, "genesis", AUTHOR, 0)  # same genesis
        source = functools.partial(read_bundle, tmp_path / "a-bundles")
        async with open_node(tmp_path, bundle_source=source) as a, open_node(tmp_path, bootstrap=(a.address,)) as b:
            await b.peer.wait_until(lambda: len(b.peer.connected()) == 1, 30)
            history = _history(chain, a.identity.public_key)
            fetcher = CommitFetcher(b_repo, history, SPEC, tmp_path / "b-bundles", b.peer)
            tip = chain[-1][0]
            assert await fetcher.fetch(tip) and fetcher.fetched == 2
            assert await gitrepo.read_file(b_repo, tip, "train.py") == b"x = 3\n"
            assert await gitrepo.has_commit(b_repo, chain[0][0])
            assert sorted(p.name for p in (tmp_path / "b-bundles").iterdir()) == sorted(d.hex() for *_, d in chain)
            assert await fetcher.fetch(tip) and fetcher.fetched == 2  # here now: nothing fetched again


async def test_a_bundle_that_does_not_match_its_claimed_hash_is_refused(tmp_path: Path) -> None:
    async with Repository.open(tmp_path / "a-repo") as a_repo, Repository.open(tmp_path / "b-repo") as b_repo:
        genesis, chain = await _chain(a_repo, tmp_path / "a-bundles")
        await gitrepo.commit_file(b_repo, None, {"train.py": b"x = 1\n"}, "genesis", AUTHOR, 0)
        commit, parent, digest = chain[0]
        (tmp_path / "a-bundles" / digest.hex()).write_bytes(b"not the bundle it claims to be")
        source = functools.partial(read_bundle, tmp_path / "a-bundles")
        async with open_node(tmp_path, bundle_source=source) as a, open_node(tmp_path, bootstrap=(a.address,)) as b:
            await b.peer.wait_until(lambda: len(b.peer.connected()) == 1, 30)
            fetcher = CommitFetcher(b_repo, _history(chain[:1], a.identity.public_key), SPEC, tmp_path / "b-bundles",
                                    b.peer)
            assert not await fetcher.fetch(commit)
            assert not await gitrepo.has_commit(b_repo, commit) and not (tmp_path / "b-bundles").exists()
            assert not await fetcher.fetch(commit)  # remembered: not asked again within RETRY_S
