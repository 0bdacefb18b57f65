"""Who may use the node's local API: the operator, and the agents the operator let in.

The operator token (HOME/api.json, 0600, written by node/web/server.py with a fresh token each
run) authenticates as OPERATOR: the node's own CLI reads it. Only the operator registers agents
(AgentHub's `POST /api/register` with the operator's bearer token); from a shell that is
`python -m node agent-key NAME` (node/client/agent.py), which prints what an agent's
~/.agenthub_creds holds, so the seed's AgentHub flow then runs verbatim.

An agent gets a random bearer key; only its sha256 is kept, in HOME/agents.json (0600), so the
file alone lets nobody in. The registry is bounded: at most MAX_AGENTS agents, at most
MAX_REGISTRATIONS_PER_MIN new ones a minute, and an agent unused for AGENT_IDLE_EXPIRY_S is
forgotten (its key stops working; registrations survive restarts only while not expired).

Agents act on the node's behalf: what they publish is signed by the node's research identity,
and their name goes with it (a claim's message, a post's text) only as a label.

Knows nothing of aiohttp: node/web/common.py turns a None from `authenticate` into 401.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import NodeError

OPERATOR = "operator"
MAX_AGENTS = 256
MAX_REGISTRATIONS_PER_MIN = 10
AGENT_IDLE_EXPIRY_S = 30 * 24 * 3600   # an agent unused this long is forgotten
USE_SAVE_INTERVAL_S = 3600             # an agent's last use is written to the file at most this often
MAX_AGENT_NAME_CHARS = 64
AGENT_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_AGENT_NAME_CHARS - 1}}}$")
KEY_PREFIX = "ash_"
FILE_VERSION = 2

log = logging.getLogger(__name__)


class BadAgent(NodeError):
    """A registration the registry refuses: a bad or taken name."""


class RegistryFull(BadAgent):
    """Too many agents, or too many registrations in the last minute."""


@dataclass(slots=True)
class AgentRecord:
    digest: str          # sha256 hex of the agent's key
    created_ms: int
    used_ms: int         # last authenticated request (creation counts)
    saved_used_ms: int   # the used_ms the file holds


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _parse(raw: Any, path: Path) -> dict[str, AgentRecord]:
    """The agents of a version-2 file. An older file (name -> digest, written when anyone could
    register) is refused entry by entry: its agents must be minted again by the operator."""
    if isinstance(raw, dict) and raw.get("version") != FILE_VERSION and all(isinstance(v, str) for v in raw.values()):
        if raw:
            log.warning("%s: %d agents registered before the operator token was required are dropped; "
                        "mint new keys with `python -m node agent-key NAME`", path, len(raw))
        return {}
    agents = raw.get("agents") if isinstance(raw, dict) else None
    if not isinstance(agents, dict):
        raise NodeError(f"{path}: not an agents file (expected {{\"version\": 2, \"agents\": {{...}}}})")
    out: dict[str, AgentRecord] = {}
    for name, item in agents.items():
        if not (isinstance(name, str) and AGENT_NAME.match(name) and isinstance(item, dict)
                and isinstance(item.get("digest"), str) and len(item["digest"]) == 64
                and type(item.get("created_ms")) is int and type(item.get("used_ms")) is int):
            raise NodeError(f"{path}: agent {name[:MAX_AGENT_NAME_CHARS]!r} is not a valid record")
        out[name] = AgentRecord(item["digest"], item["created_ms"], item["used_ms"], item["used_ms"])
    return out


class AgentRegistry:
    def __init__(self, path: Path, operator_token: str, agents: dict[str, AgentRecord], *,
                 clock_ms: Callable[[], int] = _wall_ms, max_agents: int = MAX_AGENTS,
                 max_per_min: int = MAX_REGISTRATIONS_PER_MIN, idle_expiry_s: float = AGENT_IDLE_EXPIRY_S) -> None:
        self.path = path
        self._operator = _digest(operator_token)
        self._clock_ms = clock_ms
        self.max_agents, self.max_per_min, self.idle_expiry_s = max_agents, max_per_min, idle_expiry_s
        self._agents = agents
        self._by_digest = {r.digest: name for name, r in agents.items()}
        self._recent: collections.deque[int] = collections.deque()  # registration times in the last minute
        if self._expire():
            self._save()

    @classmethod
    def load(cls, path: Path, operator_token: str, **limits: Any) -> AgentRegistry:
        """Reads HOME/agents.json (absent: no agents yet), forgetting expired agents; a file that is
        not ours is an error."""
        agents: dict[str, AgentRecord] = {}
        if path.exists():
            try:
                raw = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise NodeError(f"{path}: not a readable agents file: {exc}") from None
            agents = _parse(raw, path)
        return cls(path, operator_token, agents, **limits)

    def _expire(self) -> bool:
        """Forgets agents idle longer than the expiry; whether any was."""
        cutoff = self._clock_ms() - int(self.idle_expiry_s * 1000)
        gone = [name for name, r in self._agents.items() if r.used_ms < cutoff]
        for name in gone:
            del self._by_digest[self._agents.pop(name).digest]
        return bool(gone)

    def register(self, name: str) -> str:
        """A new agent's bearer key (shown once). Names are unique; OPERATOR is reserved."""
        if not isinstance(name, str) or not AGENT_NAME.match(name):
            raise BadAgent("agent id must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        now = self._clock_ms()
        self._expire()
        if name == OPERATOR or name in self._agents:
            raise BadAgent(f"agent id {name!r} is taken")
        if len(self._agents) >= self.max_agents:
            raise RegistryFull(f"this node has {self.max_agents} agents already (unused ones expire)")
        while self._recent and self._recent[0] <= now - 60_000:
            self._recent.popleft()
        if len(self._recent) >= self.max_per_min:
            raise RegistryFull(f"at most {self.max_per_min} registrations a minute; try again shortly")
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        record = AgentRecord(_digest(key), now, now, now)
        self._agents[name] = record
        self._by_digest[record.digest] = name
        self._recent.append(now)
        self._save()
        return key

    def authenticate(self, header: str | None) -> str | None:
        """The agent an `Authorization: Bearer <key>` header belongs to, or None."""
        if not header or not header.startswith("Bearer "):
            return None
        digest = _digest(header[len("Bearer "):].strip())
        if hmac.compare_digest(digest, self._operator):
            return OPERATOR
        name = self._by_digest.get(digest)
        if name is None:
            return None
        record, now = self._agents[name], self._clock_ms()
        if record.used_ms < now - int(self.idle_expiry_s * 1000):  # expired while the node ran
            self._expire()
            self._save()
            return None
        record.used_ms = now
        if now - record.saved_used_ms >= USE_SAVE_INTERVAL_S * 1000:
            self._save()
        return name

    def names(self) -> list[str]:
        return sorted(self._agents)

    def _save(self) -> None:
        data = {"version": FILE_VERSION, "agents": {
            name: {"digest": r.digest, "created_ms": r.created_ms, "used_ms": r.used_ms}
            for name, r in sorted(self._agents.items())}}
        write_private(self.path, json.dumps(data, sort_keys=True))
        for r in self._agents.values():
            r.saved_used_ms = r.used_ms


def write_private(path: Path, text: str) -> None:
    """Replaces `path` atomically with a file only its owner can read, from its first byte: a
    leftover temporary file (whatever its mode) is removed, never reused."""
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# -- the operator's command: python -m node agent-key NAME
