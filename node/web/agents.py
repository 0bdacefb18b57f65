"""Who may use the node's local API: registered agents (AgentHub's register) and the operator.

Agents register with a name and get a random bearer key; only its sha256 is kept, in
HOME/agents.json (0600), so the file alone lets nobody in. The operator token (HOME/api.json,
written by node/web/server.py) authenticates as OPERATOR: the node's own CLI uses it. Agents act on the
node's behalf: what they publish is signed by the node's research identity, and their name goes
with it (a claim's message, a post's text) only as a label.

Knows nothing of HTTP; node/web/agenthub.py and node/web/nodeapi.py turn a None from `authenticate`
into 401.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path

from node.errors import NodeError

OPERATOR = "operator"
MAX_AGENTS = 1000
MAX_AGENT_NAME_CHARS = 64
AGENT_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_AGENT_NAME_CHARS - 1}}}$")
KEY_PREFIX = "ash_"


class BadAgent(NodeError):
    """A registration the registry refuses: a bad or taken name."""


class RegistryFull(BadAgent):
    """Too many agents, or too many registrations in the last minute."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AgentRegistry:
    def __init__(self, path: Path, operator_token: str, agents: dict[str, str]) -> None:
        self.path = path
        self._operator = _digest(operator_token)
        self._agents = agents            # name -> sha256 hex of its key
        self._by_digest = {d: name for name, d in agents.items()}

    @classmethod
    def load(cls, path: Path, operator_token: str) -> AgentRegistry:
        """Reads HOME/agents.json (absent: no agents yet); a file that is not ours is an error."""
        agents: dict[str, str] = {}
        if path.exists():
            try:
                raw = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise NodeError(f"{path}: not a readable agents file: {exc}") from None
            if not isinstance(raw, dict) or not all(
                    isinstance(k, str) and AGENT_NAME.match(k) and isinstance(v, str) and len(v) == 64
                    for k, v in raw.items()):
                raise NodeError(f"{path}: not an agents file (expected {{name: sha256 hex}})")
            agents = dict(raw)
        return cls(path, operator_token, agents)

    def register(self, name: str) -> str:
        """A new agent's bearer key (shown once). Names are unique; OPERATOR is reserved."""
        if not isinstance(name, str) or not AGENT_NAME.match(name):
            raise BadAgent("agent id must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        if name == OPERATOR or name in self._agents:
            raise BadAgent(f"agent id {name!r} is taken")
        if len(self._agents) >= MAX_AGENTS:
            raise RegistryFull(f"this node has {MAX_AGENTS} agents already")
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        self._agents[name] = _digest(key)
        self._by_digest[self._agents[name]] = name
        self._save()
        return key

    def authenticate(self, header: str | None) -> str | None:
        """The agent an `Authorization: Bearer <key>` header belongs to, or None."""
        if not header or not header.startswith("Bearer "):
            return None
        digest = _digest(header[len("Bearer "):].strip())
        if hmac.compare_digest(digest, self._operator):
            return OPERATOR
        return self._by_digest.get(digest)

    def names(self) -> list[str]:
        return sorted(self._agents)

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._agents, f, sort_keys=True)
        os.replace(tmp, self.path)
