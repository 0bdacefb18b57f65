"""The node's home folder: layout, lock, identities, prepared data, the baseline commit, the solo spec.

    HOME/config.toml              node/config.py writes it on first run
    HOME/node.lock                held (flock) while a node runs here: one node per home
    HOME/keys/research.key        the node's identity: claims and profile (0600)
    HOME/keys/verifier.key        the solo swarm's trusted verifier: verifications and mints (0600)
    HOME/data/                    prepared datasets (`python -m trainer prepare --home HOME`)
    HOME/repo/                    bare git repository of every experiment
    HOME/bundles/<sha256 hex>     thin bundles of claimed improvements, served by hash
    HOME/swarms/<slug>/           one folder per swarm: spec.bin (signed spec), ledger.sqlite
    HOME/swarms/current           a symlink to the current swarm's folder, so HOME/swarms/current/ledger.sqlite
                                  is the ledger (`python -m ledger audit` takes it); a text file
                                  holding the slug in homes from before, still read
    HOME/peer-port.json           the peer port this home got ([network] listen's, or the next free one),
                                  used again on the next start so peers find it where it was

The home is HOME = --home, else $AUTOSWARM_HOME, else ~/.autoswarm (`default_home`).

Why two keys in a solo swarm: the credit rules refuse a verification by the claim's own author,
and a swarm of one has nobody else. The verifier key is a separate identity whose number comes
from its own re-run of the claim's commit in a fresh harness process (deterministic replay of
the claim's steps and seed); it never copies the claimant's number. The spec names it as the
only trusted verifier, so anyone auditing the ledger sees exactly who vouched for what. A
multi-node swarm replaces it with the quorum of other nodes' verifiers.

The solo swarm's slug hashes every spec field except the creation time, so a restart with the
same harness, data and config finds its swarm again, and a change (a new harness, another
budget) starts a new one instead of mixing incomparable numbers.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ledger import codec
from ledger.errors import InvalidSpec, KeyFileError
from ledger.keys import Identity, parse_node_id
from ledger.spec import SignedSpec, SwarmSpec, decode_spec, sign_spec
from swarm import gitrepo
from swarm.errors import SwarmError
from swarm.gitrepo import Repository
from trainer.harness import HARNESS_DIR, harness_hash

from node.errors import HomeBusy, SetupError
from node.platform import Device

if TYPE_CHECKING:  # node/config.py imports this module for `default_home`
    from node.config import NodeConfig

PREPARE_TIMEOUT_S = 1800.0    # the offline corpus takes seconds; climbmix-sized data far longer
GENESIS_AUTHOR = "autoswarm <genesis@autoswarm>"
GENESIS_TIME_S = 0            # fixed, so every node derives the same baseline commit id
ALLOWED_FILES = ("train.py",)
CURRENT_FILE = "current"
PEER_PORT_FILE = "peer-port.json"
PORT_SCAN = 100               # ports tried after the configured one when it is taken


def default_home(env: Mapping[str, str]) -> Path:
    """The home when no --home is given: $AUTOSWARM_HOME, else ~/.autoswarm."""
    return Path(env.get("AUTOSWARM_HOME") or Path.home() / ".autoswarm").expanduser().absolute()


@dataclass(frozen=True, slots=True)
class Layout:
    home: Path

    @property
    def keys(self) -> Path:
        return self.home / "keys"

    @property
    def research_key(self) -> Path:
        return self.keys / "research.key"

    @property
    def verifier_key(self) -> Path:
        return self.keys / "verifier.key"

    @property
    def repo(self) -> Path:
        return self.home / "repo"

    @property
    def bundles(self) -> Path:
        return self.home / "bundles"

    @property
    def swarms(self) -> Path:
        return self.home / "swarms"

    def swarm(self, slug: str) -> Path:
        return self.swarms / slug

    def ledger(self, slug: str) -> Path:
        return self.swarm(slug) / "ledger.sqlite"


@dataclass(frozen=True, slots=True)
class DataInfo:
    path: Path
    manifest_hash: bytes
    tokenizer_key: bytes


def lock_home(home: Path) -> IO[bytes]:
    """Holds HOME/node.lock until the returned file is closed (or the process dies)."""
    home.mkdir(parents=True, exist_ok=True)
    f = open(home / "node.lock", "ab")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise HomeBusy(f"{home}: another node is running on this home folder") from None
    return f


def load_identities(layout: Layout) -> tuple[Identity, Identity]:
    layout.keys.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.keys, 0o700)
    try:
        return Identity.load_or_create(layout.research_key), Identity.load_or_create(layout.verifier_key)
    except KeyFileError as exc:
        raise SetupError(str(exc)) from None


async def prepare_data(home: Path) -> DataInfo:
    """Runs `python -m trainer prepare` (cached after the first time) and reads its JSON line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trainer", "prepare", "--home", str(home), "--no-progress",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    try:
        async with asyncio.timeout(PREPARE_TIMEOUT_S):
            out, err = await proc.communicate()
    except BaseException:
        proc.kill()
        await asyncio.shield(proc.wait())
        raise
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        why = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise SetupError(f"preparing the dataset failed: {why[:300]}")
    try:
        report = json.loads(lines[-1])
        return DataInfo(Path(report["path"]), bytes.fromhex(report["manifest_hash"]),
                        bytes.fromhex(report["tokenizer_key"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise SetupError(f"the dataset report is not readable: {exc!r}") from None


def genesis_source() -> bytes:
    return (HARNESS_DIR / "train.py").read_bytes()


async def ensure_baseline(repo: Repository) -> bytes:
    """The genesis commit: the trainer's train.py, by a fixed author at a fixed time."""
    try:
        return await gitrepo.commit_file(repo, None, {"train.py": genesis_source()}, "genesis train.py",
                                         GENESIS_AUTHOR, GENESIS_TIME_S)
    except SwarmError as exc:
        raise SetupError(f"{repo.path}: cannot write the baseline commit: {exc}") from None


def solo_spec_fields(config: NodeConfig, research: Identity, verifier: Identity, data: DataInfo,
                     baseline: bytes, devices: list[Device]) -> dict[str, object]:
    classes = sorted({d.platform_class for d in devices})
    budget = max(config.budget_s(d.device) for d in devices)
    trusted = [verifier.public_key]
    for text in config.verifiers:
        key = parse_node_id(text)
        if key not in trusted:
            trusted.append(key)
    if config.quorum > len(trusted):
        raise SetupError(f"[swarm] quorum = {config.quorum} needs at least that many trusted verifiers; this node's "
                         f"own and [swarm] verifiers make {len(trusted)}")
    return dict(
        name=config.swarm_name, creator=research.public_key, harness_hash=bytes.fromhex(harness_hash()),
        dataset_hash=data.manifest_hash, tokenizer_hash=data.tokenizer_key, time_budget_s=budget,
        metric="val_bpb", direction="min", baseline_commit=baseline, allowed_files=list(ALLOWED_FILES),
        platform_classes=classes, verifiers=trusted, quorum=config.quorum,
        noise_bpb={d.platform_class: config.noise_bpb(d.device) for d in devices},
        record_ucr_per_bpb=config.record_ucr_per_bpb, verify_ucr=config.verify_ucr,
        max_steps={d.platform_class: config.max_steps(d.device, budget) for d in devices},
        **config.spec_trust_fields(),
    )


def slug_of(fields: dict[str, object]) -> str:
    return "solo-" + hashlib.sha256(codec.encode(fields)).hexdigest()[:16]


def load_or_create_spec(layout: Layout, fields: dict[str, object], research: Identity, now_ms: int) -> tuple[str, SignedSpec]:
    """The solo swarm for these fields: found again by its slug, or signed now."""
    slug = slug_of(fields)
    folder = layout.swarm(slug)
    path = folder / "spec.bin"
    try:
        if path.exists():
            signed = decode_spec(path.read_bytes())
        else:
            signed = sign_spec(research, SwarmSpec(created_ms=now_ms, **fields))  # type: ignore[arg-type]
        _keep_spec(layout, slug, signed)
    except InvalidSpec as exc:
        raise SetupError(f"{path}: {exc}") from None
    except OSError as exc:
        raise SetupError(f"{folder}: {exc.strerror}") from None
    return slug, signed


def joined_slug(signed: SignedSpec) -> str:
    return "swarm-" + signed.swarm_id.hex()[:16]


def check_joinable(signed: SignedSpec, data: DataInfo, baseline: bytes, devices: list[Device]) -> None:
    """Refuses a swarm whose numbers this node could not produce or compare (SetupError, one line)."""
    spec, name = signed.spec, f"swarm {signed.spec.name!r} ({signed.swarm_id.hex()[:16]})"
    if spec.harness_hash.hex() != harness_hash():
        raise SetupError(f"{name} runs another trainer harness ({spec.harness_hash.hex()[:16]}, ours "
                         f"{harness_hash()[:16]}): install the autoswarm version its members run")
    if spec.dataset_hash != data.manifest_hash or spec.tokenizer_hash != data.tokenizer_key:
        raise SetupError(f"{name} trains on other data (dataset {spec.dataset_hash.hex()[:16]}, ours "
                         f"{data.manifest_hash.hex()[:16]}): prepare its dataset with `python -m trainer prepare`")
    if spec.baseline_commit != baseline:
        raise SetupError(f"{name} starts from another baseline commit ({spec.baseline_commit.hex()[:12]}, ours "
                         f"{baseline.hex()[:12]})")
    missing = sorted({d.platform_class for d in devices} - set(spec.platform_classes))
    if missing:
        raise SetupError(f"{name} has no platform class {', '.join(missing)} for this node's hardware "
                         f"(its classes: {', '.join(spec.platform_classes)})")


def save_joined_spec(layout: Layout, signed: SignedSpec) -> str:
    slug = joined_slug(signed)
    try:
        _keep_spec(layout, slug, signed)
    except OSError as exc:
        raise SetupError(f"{layout.swarm(slug)}: {exc.strerror}") from None
    return slug


def _keep_spec(layout: Layout, slug: str, signed: SignedSpec) -> None:
    """Writes the swarm's spec.bin once (atomically) and makes it the home's current swarm."""
    folder = layout.swarm(slug)
    path = folder / "spec.bin"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(signed.wire)
        os.replace(tmp, path)
    set_current(layout, slug)


def set_current(layout: Layout, slug: str) -> None:
    """Points HOME/swarms/current at the slug's folder: a relative symlink, swapped in by rename so
    a reader sees the old or the new one, never none (this replaces an old home's text file too)."""
    link = layout.swarms / CURRENT_FILE
    if link.is_symlink() and os.readlink(link) == slug:
        return
    tmp = layout.swarms / f".{CURRENT_FILE}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(slug, tmp)
    os.replace(tmp, link)


def read_current(layout: Layout) -> str | None:
    """The current swarm's slug: the symlink's target, or an old home's text file; None if neither."""
    link = layout.swarms / CURRENT_FILE
    try:
        slug = os.readlink(link) if link.is_symlink() else link.read_text().strip()
    except OSError:
        return None
    return slug if slug and "/" not in slug and not slug.startswith(".") else None


def current_ledger(home: Path) -> Path:
    """The path a person audits: HOME/swarms/current/ledger.sqlite (the symlink's view of it)."""
    return Layout(home).swarms / CURRENT_FILE / "ledger.sqlite"


def joined_spec(layout: Layout) -> SignedSpec | None:
    """The spec of the swarm this home joined before, if its current swarm is a joined one."""
    slug = read_current(layout)
    if slug is None or not slug.startswith("swarm-"):
        return None
    try:
        return decode_spec((layout.swarm(slug) / "spec.bin").read_bytes())
    except OSError:
        return None
    except InvalidSpec as exc:
        raise SetupError(f"{layout.swarms}: the joined swarm's spec is damaged: {exc}") from None


def current_slug(layout: Layout) -> str:
    slug = read_current(layout)
    if slug is None:
        raise SetupError(f"{layout.home}: no swarm yet; start the node once with `python -m node --home {layout.home}`")
    if not layout.ledger(slug).exists():
        raise SetupError(f"{layout.swarms / CURRENT_FILE}: names no swarm with a ledger here ({slug}); "
                         f"start the node to create it")
    return slug


# -- the peer port


def _free(host: str, port: int) -> bool:
    """Whether a listener could bind host:port now (as aiohttp binds: SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host or "0.0.0.0", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise SetupError(f"cannot listen on {host}:{port}: {exc.strerror}; check [network] listen") from None
    return True


def stable_listen(home: Path, listen: str) -> str:
    """The configured HOST:PORT for the peer, made stable across restarts: the port this home got
    last time (HOME/peer-port.json) while the configuration asks for the same address, else the
    configured port or the next free one of PORT_SCAN. Port 0 (any free port, each start) passes."""
    host, _, text = listen.rpartition(":")
    port, bare = int(text), host.strip("[]")
    if port == 0:
        return listen
    path = home / PEER_PORT_FILE
    try:
        kept = json.loads(path.read_text())
        if isinstance(kept, dict) and kept.get("listen") == listen and isinstance(kept.get("port"), int) \
                and 0 < kept["port"] <= 65535 and _free(bare, kept["port"]):
            return f"{host}:{kept['port']}"
    except (OSError, ValueError):
        pass  # first start, or a damaged file: choose again
    found = next((p for p in range(port, min(port + PORT_SCAN, 65536)) if _free(bare, p)), None)
    if found is None:
        raise SetupError(f"ports {port} to {min(port + PORT_SCAN, 65536) - 1} on {bare} are all taken: "
                         f"set another in [network] listen or pass --listen HOST:PORT")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"listen": listen, "port": found}) + "\n")
    os.replace(tmp, path)
    return f"{host}:{found}"
