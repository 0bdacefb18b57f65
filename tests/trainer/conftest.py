"""Test configuration for the trainer's tests."""
from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too, so the trainer's tests start whatever pyproject.toml's version says.
    config.addinivalue_line("markers", "slow: long tests (run in CI, skipped by the fast tier)")
