"""The swarm's exception tree. aiohttp, msgpack and cryptography exceptions never escape `swarm/`."""
from __future__ import annotations


class SwarmError(Exception):
    """Base of every error the swarm package raises."""


# -- peers and their messages (swarm/protocol.py, swarm/handshake.py, swarm/peer.py)


class BadMessage(SwarmError):
    """Bytes from a peer that are not a valid message: encoding, type, size or field."""


class BadHandshake(BadMessage):
    """A hello that does not verify, names another swarm or protocol, or is out of its time window."""


class ReplayedHandshake(BadHandshake):
    """A hello whose nonce was already seen inside the time window."""


class PeerUnavailable(SwarmError):
    """A peer could not be reached, refused us, or went away mid-conversation."""


# -- git repository and bundles (swarm/gitrepo.py, swarm/packfile.py, swarm/bundles.py)


class RepositoryError(SwarmError):
    """The node's own git repository is missing, unreadable or refuses a write."""


class UnknownObject(RepositoryError):
    """A commit, tree or path that the repository does not hold."""


class BundleRejected(SwarmError):
    """A bundle from a peer that fails a check; nothing of it entered the repository."""
