"""Other nodes' commits, pulled by bundle hash from peers when a verification or a parent needs one.

A claim of an improvement names the sha256 of a thin bundle (its commit against its parent).
To read such a commit we need its parent first, so `fetch` walks up the claimed ancestry until
it reaches a commit we hold (the baseline at worst), then applies bundles top-down. Each bundle
is asked of the claim's author first, then of other connected peers; its bytes must hash to the
claimed value, and swarm/bundles.py checks everything else before an object enters the
repository. A fetched bundle is kept under HOME/bundles, so this node serves it onwards.

A commit no peer could serve is not asked for again for RETRY_S: a verifier that cannot get a
commit moves on to other work instead of hammering peers.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from ledger.spec import SignedSpec
from swarm import bundles, gitrepo
from swarm.errors import BadMessage, BundleRejected, PeerUnavailable, RepositoryError
from swarm.gitrepo import Repository
from swarm.peer import Peer

from node.research.history import History

MAX_DEPTH = 256          # ancestors fetched for one commit
MAX_SOURCES = 4          # peers asked for one bundle
RETRY_S = 60.0           # before asking again for a commit no peer served

_log = logging.getLogger(__name__)


class CommitFetcher:
    def __init__(self, repo: Repository, history: History, spec: SignedSpec, bundle_dir: Path, peer: Peer,
                 clock: Callable[[], float] = time.time) -> None:
        self.repo, self.history, self.spec, self.bundle_dir, self.peer = repo, history, spec, bundle_dir, peer
        self.clock = clock
        self._failed: dict[bytes, float] = {}      # commit -> clock time of the last failure
        self._lock = asyncio.Lock()                # one walk at a time: two workers needing one parent
        self.fetched = 0

    async def fetch(self, commit: bytes) -> bool:
        """True once `commit` is in the repository; False if no peer could serve it now."""
        async with self._lock:
            if await gitrepo.has_commit(self.repo, commit):
                return True
            if self.clock() - self._failed.get(commit, -RETRY_S) < RETRY_S:
                return False
            chain = await self._missing_chain(commit)
            for child in reversed(chain):
                if not await self._fetch_one(child):
                    self._failed[commit] = self.clock()
                    return False
            return True

    async def _missing_chain(self, commit: bytes) -> list[bytes]:
        """`commit` and its claimed ancestors that are not here, child first."""
        chain = [commit]
        while len(chain) < MAX_DEPTH:
            parent = self._claimed_parent(chain[-1])
            if parent is None or await gitrepo.has_commit(self.repo, parent):
                break
            chain.append(parent)
        return chain

    def _claimed_parent(self, commit: bytes) -> bytes | None:
        for claim_id in self.history.by_commit.get(commit, []):
            body = self.history.claims[claim_id].body
            if body.bundle is not None:
                return body.parent
        return None

    async def _fetch_one(self, commit: bytes) -> bool:
        claims = [self.history.claims[c] for c in self.history.by_commit.get(commit, [])]
        for record in claims:
            digest = record.body.bundle
            if digest is None:
                continue
            conns = sorted(self.peer.replicator.conns.values(), key=lambda c: c.node != record.author)
            for conn in conns[:MAX_SOURCES]:
                try:
                    data = await self.peer.fetch_bundle(conn.addr, digest)
                    if bundles.bundle_hash(data) != digest:
                        raise BundleRejected("the bundle's bytes do not hash to the claimed value")
                    await bundles.apply_bundle(self.repo, data, expect_commit=commit,
                                               allowed_paths=frozenset(self.spec.spec.allowed_files))
                except (PeerUnavailable, BundleRejected, BadMessage, RepositoryError) as exc:
                    _log.info("bundle %s of %s from %s: %s", digest.hex()[:12], commit.hex()[:12], conn.addr, exc)
                    continue
                await keep_bundle(self.bundle_dir, digest, data)
                self.fetched += 1
                return True
        return False



async def keep_bundle(bundle_dir: Path, digest: bytes, data: bytes) -> None:
    """Stores a bundle under its hash (atomically; an existing one is left alone) for serving."""
    path = bundle_dir / digest.hex()
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    await asyncio.to_thread(tmp.write_bytes, data)
    tmp.replace(path)


async def read_bundle(bundle_dir: Path, digest: bytes) -> bytes | None:
    """A kept bundle by hash, or None (what the peer serves at /swarm/v1/bundle/<hash>)."""
    path = bundle_dir / digest.hex()
    try:
        return await asyncio.to_thread(path.read_bytes)
    except OSError:
        return None
