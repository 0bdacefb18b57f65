"""Test order for a parallel run (`bash scripts/test.sh`, CI's command, and its `--fast` tier run
on two pytest-xdist workers, one file per work unit, in collection order).

A parallel run's wall time is set by its longest files, so files holding `slow` tests come first,
those with the longest declared bound (`pytest.mark.timeout`) leading. Within a file the order is
unchanged; a serial run (`-n 0`) keeps pytest's own order.
"""
from __future__ import annotations

import pytest

DEFAULT_TIMEOUT_S = 600.0  # pyproject's [tool.pytest.ini_options] timeout


def _weight(item: pytest.Item) -> float:
    """0 for a fast test, else its declared bound: what the test itself says it may take."""
    if item.get_closest_marker("slow") is None:
        return 0.0
    mark = item.get_closest_marker("timeout")
    return float(mark.args[0]) if mark is not None and mark.args else DEFAULT_TIMEOUT_S


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("numprocesses", None):
        return  # serial: pytest's own order
    files: dict[str, float] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        files[path] = max(files.get(path, 0.0), _weight(item))
    rank = {path: i for i, path in enumerate(sorted(files, key=lambda p: -files[p]))}  # stable: ties keep their order
    items.sort(key=lambda item: rank[item.nodeid.split("::", 1)[0]])
