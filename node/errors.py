"""The node's exception tree: each names what went wrong, and each becomes one readable line.

Foreign exceptions (ledger, swarm, OS, TOML) are translated where the node meets them; the CLI
prints `str(exc)` of a NodeError and exits 2 (bad input) or 1 (a failure while running).
"""
from __future__ import annotations


class NodeError(Exception):
    """Base of every error the node package raises."""


class ConfigError(NodeError):
    """Bad command-line arguments, a config file that does not parse, or a value out of range."""


class SetupError(NodeError):
    """The home folder, keys, data, repository or swarm spec cannot be made ready."""


class HomeBusy(SetupError):
    """Another node process holds this home folder."""


class TrainerFailed(NodeError):
    """The trainer could not run at all (bad install, no sandbox, garbled output): not a bad candidate."""


class NoProposal(NodeError):
    """The proposer found no edit that was not already tried."""


class BadSubmission(NodeError):
    """A commit handed to the research loop that it cannot run: unknown, wrong parent, wrong files, queue full."""


class AlreadySubmitted(BadSubmission):
    """The commit is queued or claimed already."""


class QueueFull(BadSubmission):
    """The submission queue is full; try again later."""
