"""The node parses train.py in worker threads (asyncio.to_thread) and in its event loop at once.
CPython 3.11 keeps the AST constructor's recursion depth per interpreter, so two threads parsing
together failed now and then with "SystemError: AST constructor recursion depth mismatch" (seen
in the docs test: `python -m node show <hash>` answered 500). node/research/program.py's parses
take turns; this test makes the race likely (garbage cycles whose finalizers run Python code
while the parser builds its tree, and a tiny thread switch interval) and expects no error."""
from __future__ import annotations

import contextlib
import gc
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from node.home import genesis_source
from node.research import program
from node.research.submit import check_source

THREADS, PARSES = 6, 40


class _Cycle:
    """Garbage the collector finds while a parser allocates: its finalizer runs Python code."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        sum(range(2000))


@contextlib.contextmanager
def _racy() -> Iterator[None]:
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-6)
    gc.set_threshold(50, 1, 1)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)


def _errors_in_threads(parse: Callable[[], object]) -> list[str]:
    errors: list[str] = []

    def work() -> None:
        for _ in range(PARSES):
            try:
                for _ in range(20):
                    _Cycle()
                parse()
            except SystemError as exc:
                errors.append(str(exc))
                return

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    with _racy():
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    return errors


@pytest.mark.parametrize("parse", ["key", "check"])
def test_parses_in_many_threads_at_once_never_fail(parse: str) -> None:
    source = genesis_source().decode()
    calls: dict[str, Callable[[], object]] = {
        "key": lambda: program.normalized_key(source),
        "check": lambda: check_source(source.encode()),
    }
    assert _errors_in_threads(calls[parse]) == []


def test_without_taking_turns_the_race_is_real(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same load with the lock removed: the SystemError this guards against (so the test above
    proves something); a few tries, since a race is a race."""
    monkeypatch.setattr(program, "_PARSE_LOCK", contextlib.nullcontext())
    source = genesis_source().decode()
    found = []
    for _ in range(10):
        found = _errors_in_threads(lambda: program.normalized_key(source))
        if found:
            break
    assert found and "recursion depth mismatch" in found[0]
