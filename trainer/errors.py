"""The root of the trainer's exception tree.

Every exception the trainer raises on purpose derives from TrainerError, so a caller (the node,
the command line) can catch "the trainer refused or failed" in one clause. Subclasses live next to
their raisers (sandbox.SandboxError, data.DataError, evaluate.EvalError, ...) and keep the builtin
bases they had (ValueError, RuntimeError) so that older `except ValueError` clauses still match.

Knows nothing: plain classes, importable inside the sandbox too.
"""
from __future__ import annotations


class TrainerError(Exception):
    """Something the trainer refused or could not do; the message is one readable line."""


__all__ = ["TrainerError"]
