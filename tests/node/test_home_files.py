"""The home's small files: the stable peer port (HOME/peer-port.json), the `current` swarm link,
and the one default of the home folder."""
from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
import contextlib
from contextlib import contextmanager
from pathlib import Path

import pytest

from node.errors import SetupError
from node.home import (PEER_PORT_FILE, Layout, current_ledger, current_slug, default_home, read_current,
                       set_current, stable_listen)


@contextmanager
def listening(port: int = 0) -> Iterator[int]:
    """A real listener on 127.0.0.1 (port 0: any free one), as another node's peer port would be."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        yield int(s.getsockname()[1])


def _free_run(length: int) -> int:
    """A port where `length` ports in a row are free now (the scan's test ground)."""
    for _ in range(50):
        with listening() as port:
            pass
        if port + length < 65536 and all(_bindable(p) for p in range(port, port + length)):
            return port
    raise AssertionError("no run of free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_port_is_the_configured_one_or_the_next_free_and_kept(tmp_path: Path) -> None:
    base = _free_run(4)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    listen = f"127.0.0.1:{base}"
    assert stable_listen(first, listen) == listen
    assert json.loads((first / PEER_PORT_FILE).read_text()) == {"listen": listen, "port": base}
    with listening(base):  # the first node runs: a second home on this machine takes the next port
        assert stable_listen(second, listen) == f"127.0.0.1:{base + 1}"
    # both restart, in the other order: each finds its own port again, not the configured one
    assert stable_listen(second, listen) == f"127.0.0.1:{base + 1}"
    assert stable_listen(first, listen) == listen
    with listening(base + 1):  # something else took the kept port: the scan starts again and the file follows
        assert stable_listen(second, listen) == listen
    assert json.loads((second / PEER_PORT_FILE).read_text())["port"] == base
    other = f"127.0.0.1:{base + 2}"  # a changed configuration is a new choice
    assert stable_listen(second, other) == other


def test_port_zero_stays_any_port_and_damaged_files_are_chosen_again(tmp_path: Path) -> None:
    assert stable_listen(tmp_path, "127.0.0.1:0") == "127.0.0.1:0"
    assert not (tmp_path / PEER_PORT_FILE).exists()
    base = _free_run(1)
    (tmp_path / PEER_PORT_FILE).write_text("{nope")
    assert stable_listen(tmp_path, f"127.0.0.1:{base}") == f"127.0.0.1:{base}"
    (tmp_path / PEER_PORT_FILE).write_text(json.dumps({"listen": f"127.0.0.1:{base}", "port": 70000}))
    assert stable_listen(tmp_path, f"127.0.0.1:{base}") == f"127.0.0.1:{base}"


def test_every_port_taken_says_what_to_do(tmp_path: Path) -> None:
    # the scan ends at the last port, so configuring it leaves one port to try: taken here
    with contextlib.ExitStack() as stack:
        if _bindable(65535):
            stack.enter_context(listening(65535))
        with pytest.raises(SetupError, match=r"are all taken: set another in \[network\] listen or pass --listen"):
            stable_listen(tmp_path, "127.0.0.1:65535")
    assert not (tmp_path / PEER_PORT_FILE).exists()


def test_current_is_a_symlink_to_the_swarm_folder(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    for slug in ("solo-aaaa", "swarm-bbbb"):
        layout.swarm(slug).mkdir(parents=True)
        layout.ledger(slug).write_bytes(b"")
    set_current(layout, "solo-aaaa")
    link = layout.swarms / "current"
    assert link.is_symlink() and os.readlink(link) == "solo-aaaa"  # relative: the home can move
    assert current_ledger(tmp_path).resolve() == layout.ledger("solo-aaaa").resolve()
    set_current(layout, "swarm-bbbb")
    assert read_current(layout) == "swarm-bbbb" and current_slug(layout) == "swarm-bbbb"
    assert current_ledger(tmp_path).resolve() == layout.ledger("swarm-bbbb").resolve()
    assert [p.name for p in layout.swarms.iterdir() if p.name.startswith(".")] == []  # no temporary link left


def test_an_old_home_with_a_text_file_is_read_and_upgraded(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.swarm("solo-cccc").mkdir(parents=True)
    layout.ledger("solo-cccc").write_bytes(b"")
    (layout.swarms / "current").write_text("solo-cccc\n")
    assert read_current(layout) == "solo-cccc" and current_slug(layout) == "solo-cccc"
    set_current(layout, "solo-cccc")  # the next start replaces the file with the link
    assert (layout.swarms / "current").is_symlink() and read_current(layout) == "solo-cccc"


@pytest.mark.parametrize("text", ["", "../etc\n", ".hidden\n"])
def test_a_bad_current_names_no_swarm(tmp_path: Path, text: str) -> None:
    layout = Layout(tmp_path)
    layout.swarms.mkdir(parents=True)
    (layout.swarms / "current").write_text(text)
    assert read_current(layout) is None
    with pytest.raises(SetupError, match="start the node once"):
        current_slug(layout)


def test_the_home_defaults_to_the_environment_then_the_user_folder(tmp_path: Path) -> None:
    assert default_home({"AUTOSWARM_HOME": str(tmp_path / "e")}) == tmp_path / "e"
    assert default_home({"AUTOSWARM_HOME": ""}) == Path.home() / ".autoswarm"
    assert default_home({}) == Path.home() / ".autoswarm"
