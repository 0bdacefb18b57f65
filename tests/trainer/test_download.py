"""The downloader and the climbmix source against a real HTTP server on 127.0.0.1 (port 0).

The server serves parquet files made here with pyarrow, honours Range requests, and can be told
to cut the connection part-way through the next N responses or to ignore Range.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer import climbmix
from trainer.data import ShardMismatch, read_documents
from trainer.download import DownloadFailed, HashMismatch, TooLarge, download

JOIN_TIMEOUT_S = 10.0


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    drop_next: int = 0              # responses that stop after `drop_after_bytes` and hang up
    drop_after_bytes: int = 0
    ignore_range: bool = False
    fail_next_with: list[int] = field(default_factory=list)  # status codes for the next requests
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            with state.lock:
                state.requests.append((name, self.headers.get("Range")))
                status = state.fail_next_with.pop(0) if state.fail_next_with else None
                drop = state.drop_next > 0
                state.drop_next -= int(drop)
            if status is not None or name not in state.files:
                self.send_response(status or 404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = state.files[name]
            start = 0
            rng = self.headers.get("Range")
            if rng and not state.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if drop:
                # Promise the whole body, send part of it, then hang up: a dropped connection.
                self.wfile.write(body[start:start + state.drop_after_bytes])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body[start:])

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                              name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive()


def parquet_bytes(tmp_path: Path, texts: list[str], name: str = "x.parquet") -> bytes:
    path = tmp_path / name
    pq.write_table(pa.table({"text": texts, "id": list(range(len(texts)))}), path)
    return path.read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def shard(tmp_path: Path) -> bytes:
    # Incompressible-ish text so the file is big enough to cut in the middle.
    return parquet_bytes(tmp_path, [f"document {i}: " + sha(str(i).encode()) * 20 for i in range(300)])


def test_fresh_download_is_verified_and_renamed(server, shard, tmp_path: Path) -> None:
    url, state = server
    state.files["a.parquet"] = shard
    got = download(f"{url}/a.parquet", tmp_path / "c" / "a.parquet", sha256=sha(shard), backoff_s=0)
    assert got.path.read_bytes() == shard and got.sha256 == sha(shard) and got.resumed_from_bytes == 0
    assert not (tmp_path / "c" / "a.parquet.part").exists()
    assert len(list(read_documents(got.path))) == 300
    # Already cached with the right hash: no request at all.
    before = len(state.requests)
    again = download(f"{url}/a.parquet", got.path, sha256=sha(shard), backoff_s=0)
    assert again.attempts == 0 and len(state.requests) == before


def test_resumes_a_partial_file_with_range(server, shard, tmp_path: Path) -> None:
    url, state = server
    state.files["a.parquet"] = shard
    dest = tmp_path / "a.parquet"
    (tmp_path / "a.parquet.part").write_bytes(shard[:1000])
    got = download(f"{url}/a.parquet", dest, sha256=sha(shard), backoff_s=0)
    assert dest.read_bytes() == shard and got.resumed_from_bytes == 1000
    assert state.requests == [("a.parquet", "bytes=1000-")]


def test_dropped_connection_is_retried_from_where_it_stopped(server, shard, tmp_path: Path) -> None:
    url, state = server
    state.files["a.parquet"] = shard
    state.drop_next, state.drop_after_bytes = 2, len(shard) // 3
    sleeps: list[float] = []
    got = download(f"{url}/a.parquet", tmp_path / "a.parquet", sha256=sha(shard), backoff_s=0.5,
                   sleep=sleeps.append)
    assert got.path.read_bytes() == shard and got.attempts == 3
    third = len(shard) // 3
    assert [r for _, r in state.requests] == [None, f"bytes={third}-", f"bytes={2 * third}-"]
    assert sleeps == [0.5, 1.0]  # exponential backoff, injected so the test never waits


def test_server_errors_are_retried_then_give_up(server, shard, tmp_path: Path) -> None:
    url, state = server
    state.files["a.parquet"] = shard
    state.fail_next_with = [503, 500]
    assert download(f"{url}/a.parquet", tmp_path / "a.parquet", sha256=None, backoff_s=0).attempts == 3
    state.fail_next_with = [503] * 3
    with pytest.raises(DownloadFailed, match="gave up after 3 attempts"):
        download(f"{url}/a.parquet", tmp_path / "b.parquet", sha256=None, attempts=3, backoff_s=0)


def test_not_found_fails_at_once(server, tmp_path: Path) -> None:
    url, state = server
    with pytest.raises(DownloadFailed, match="404"):
        download(f"{url}/missing.parquet", tmp_path / "m.parquet", sha256=None, backoff_s=0)
    assert len(state.requests) == 1


def test_hash_mismatch_raises_and_leaves_nothing(server, shard, tmp_path: Path) -> None:
    url, state = server
    state.files["a.parquet"] = shard
    cache = tmp_path / "cache"
    with pytest.raises(HashMismatch):
        download(f"{url}/a.parquet", cache / "a.parquet", sha256="0" * 64, backoff_s=0)
    assert list(cache.iterdir()) == []
    assert issubclass(HashMismatch, ShardMismatch)


def test_size_bound_is_enforced(server, shard, tmp_path: Path) -> None:
    url, state = server
    state.files["a.parquet"] = shard
    with pytest.raises(TooLarge):
        download(f"{url}/a.parquet", tmp_path / "a.parquet", sha256=None, max_bytes=len(shard) - 1, backoff_s=0)
    assert list(tmp_path.glob("a.parquet*")) == []


def test_server_ignoring_range_restarts_cleanly(server, shard, tmp_path: Path) -> None:
    url, state = server
    state.files["a.parquet"] = shard
    state.ignore_range = True
    (tmp_path / "a.parquet.part").write_bytes(b"garbage" * 10)
    got = download(f"{url}/a.parquet", tmp_path / "a.parquet", sha256=sha(shard), backoff_s=0)
    assert got.path.read_bytes() == shard


def test_complete_part_file_gets_416_and_is_kept(server, shard, tmp_path: Path) -> None:
    url, state = server
    state.files["a.parquet"] = shard
    (tmp_path / "a.parquet.part").write_bytes(shard)
    got = download(f"{url}/a.parquet", tmp_path / "a.parquet", sha256=sha(shard), backoff_s=0)
    assert got.path.read_bytes() == shard


def test_climbmix_fetch_records_tofu_then_honours_pins(server, tmp_path: Path) -> None:
    url, state = server
    for index in (0, 1, climbmix.VAL_SHARD):
        state.files[climbmix.shard_name(index)] = parquet_bytes(tmp_path, [f"shard {index} doc {j}" for j in range(5)])
    cache = tmp_path / "climbmix"
    dataset = climbmix.fetch(cache, num_train_shards=2, base_url=url, backoff_s=0)
    assert dataset.trust == "tofu"
    assert [s.name for s in dataset.manifest.split("val")] == ["shard_06542.parquet"]
    assert [s.name for s in dataset.manifest.split("train")] == ["shard_00000.parquet", "shard_00001.parquet"]
    tofu = json.loads((cache / climbmix.TOFU_FILE).read_text())
    assert tofu == {s.name: s.sha256 for s in dataset.manifest.shards}
    assert list(dataset.documents("val")) == [f"shard 6542 doc {j}" for j in range(5)]

    # The recorded hashes, published as a pin file, make the dataset pinned; same manifest.
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps(tofu))
    pinned = climbmix.fetch(cache, num_train_shards=2, base_url=url, pin_file=pins, backoff_s=0)
    assert pinned.trust == "pinned" and pinned.manifest.hash == dataset.manifest.hash

    # A pin that disagrees with the server's bytes: typed error, and the bad file is not kept.
    (cache / "shard_00000.parquet").unlink()
    pins.write_text(json.dumps({**tofu, "shard_00000.parquet": "1" * 64}))
    with pytest.raises(HashMismatch):
        climbmix.fetch(cache, num_train_shards=2, base_url=url, pin_file=pins, backoff_s=0)
    assert not (cache / "shard_00000.parquet").exists()
    assert not (cache / "shard_00000.parquet.part").exists()
