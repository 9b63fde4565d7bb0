"""Fetching through pooch from a local HTTP server on 127.0.0.1 (no test touches the internet):
checksums verified, a mismatch refused and nothing kept, an interrupted download retried, a
corrupt cached copy replaced, unverifiable files refused without --no-verify, network failures."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import socket
import threading

import numpy as np
import pytest

from _runs import invoke, one_error_line
from hpo_bench import data
from hpo_bench.data import DatasetEntry, SourceFile

LIBSVM = b"+1 1:0.5 3:2\n-1 2:-1.25 5:3 # comment\n\n+1 1:1 2:2 3:3 4:4 5:5\n-1 4:1e-3\n" * 20


class Server:
    """Serves ``files`` (path -> bytes); ``truncate[path] = k`` cuts the next k responses to half their body
    (Content-Length still announces the whole, then the connection closes: an interrupted download)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.truncate.get(self.path, 0) > 0:
                    outer.truncate[self.path] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def log_message(self, *args):  # quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_BENCH_DATA", str(tmp_path / "data"))
    data.clear_memory()
    yield tmp_path / "data"
    data.clear_memory()


@pytest.fixture
def entry(server, cache):
    """A one-file libsvm dataset served by the local server, with its true sha256 registered."""
    server.files["/tiny.svm.gz"] = gzip.compress(LIBSVM)
    e = data.register(DatasetEntry(
        name="served", title="t", format="libsvm", task="binary", n=80, p=5, n_classes=2, sparse=True, density=None,
        split="permute-50-25-25", files=(SourceFile("tiny.svm.gz", server.url + "/tiny.svm.gz",
                                                    "sha256:" + hashlib.sha256(server.files["/tiny.svm.gz"]).hexdigest(),
                                                    len(server.files["/tiny.svm.gz"])),)), replace=True)
    yield e
    data.unregister("served")


def with_checksum(e: DatasetEntry, checksum: str | None) -> DatasetEntry:
    import dataclasses

    f = dataclasses.replace(e.files[0], checksum=checksum)
    return data.register(dataclasses.replace(e, files=(f,)), replace=True)


def test_fetch_verifies_parses_once_and_then_serves_from_the_cache(server, entry, cache):
    from sklearn.datasets import load_svmlight_file

    d = data.fetch("served", retries=0)
    assert d.verified is True and d.x.shape == (80, 5) and server.hits["/tiny.svm.gz"] == 1
    raw = data.raw_dir("served") / "tiny.svm.gz"
    ref_x, ref_y = load_svmlight_file(str(raw), n_features=5)
    assert (d.x != ref_x).nnz == 0 and np.array_equal(d.y, ref_y)
    assert data.parsed_path("served").exists()
    data.clear_memory()
    assert data.load("served").x.nnz == d.x.nnz and server.hits["/tiny.svm.gz"] == 1  # load never downloads
    data.fetch("served", retries=0)
    assert server.hits["/tiny.svm.gz"] == 1  # a verified cached copy is not downloaded again


def test_a_checksum_mismatch_is_refused_and_nothing_is_kept(server, entry, cache):
    with_checksum(entry, "sha256:" + "0" * 64)
    with pytest.raises(data.ChecksumError, match="does not match the registered checksum") as exc:
        data.fetch("served", retries=0)
    assert exc.value.exit_code == 2 and server.hits["/tiny.svm.gz"] == 1
    folder = data.raw_dir("served")
    assert not (folder / "tiny.svm.gz").exists() and not [p for p in folder.iterdir() if p.name != "manifest.json"]
    with pytest.raises(data.DatasetMissingError):
        data.load("served")


def test_an_interrupted_download_is_detected_and_retried(server, entry, cache):
    server.truncate["/tiny.svm.gz"] = 1  # the first response stops half way
    d = data.fetch("served", retries=1)
    assert server.hits["/tiny.svm.gz"] == 2 and d.verified is True and d.x.shape == (80, 5)
    assert (data.raw_dir("served") / "tiny.svm.gz").read_bytes() == server.files["/tiny.svm.gz"]


def test_an_interrupted_download_without_retries_fails_and_leaves_nothing(server, entry, cache):
    server.truncate["/tiny.svm.gz"] = 1
    with pytest.raises(data.FetchError, match="IncompleteRead") as exc:  # requests checks Content-Length
        data.fetch("served", retries=0)
    assert exc.value.exit_code == 1 and "'served'" in str(exc.value)
    assert not (data.raw_dir("served") / "tiny.svm.gz").exists()


def test_a_corrupt_cached_copy_is_downloaded_again(server, entry, cache):
    data.fetch("served", retries=0)
    raw = data.raw_dir("served") / "tiny.svm.gz"
    raw.write_bytes(b"garbage")
    data.fetch("served", retries=0)
    assert server.hits["/tiny.svm.gz"] == 2 and raw.read_bytes() == server.files["/tiny.svm.gz"]


def test_files_without_a_registered_checksum_need_no_verify_and_are_recorded_unverified(server, entry, cache):
    with_checksum(entry, None)
    with pytest.raises(data.UnverifiedSourceError, match="hpo-bench data fetch served --no-verify"):
        data.fetch("served", retries=0)
    assert server.hits.get("/tiny.svm.gz", 0) == 0
    d = data.fetch("served", verify=False, retries=0)
    assert d.verified is False
    manifest = json.loads((data.raw_dir("served") / "manifest.json").read_text())
    assert manifest["files"]["tiny.svm.gz"]["verified"] is False
    assert manifest["files"]["tiny.svm.gz"]["sha256"] == hashlib.sha256(server.files["/tiny.svm.gz"]).hexdigest()


def test_network_failure_is_a_fetch_error(server, entry, cache):
    server.files.pop("/tiny.svm.gz")  # 404
    with pytest.raises(data.FetchError, match="failed after 1 tries") as exc:
        data.fetch("served", retries=0)
    assert exc.value.exit_code == 1


def test_cli_fetch_and_list_against_the_local_server(server, entry, cache, monkeypatch, capsys):
    code, out, _ = invoke(monkeypatch, capsys, "data", "fetch", "served", "--retries", "0")
    assert code == 0 and "served: download" in out and "verified" in out
    code, out, _ = invoke(monkeypatch, capsys, "data", "list", "--json")
    row = {r["name"]: r for r in json.loads(out)["datasets"]}["served"]
    assert row["cached"] == "yes" and row["verified"] is True and row["shape"] == [80, 5]
    server.files.pop("/tiny.svm.gz")
    (data.raw_dir("served") / "tiny.svm.gz").write_bytes(b"garbage")  # forces a download, which now fails
    code, _, err = invoke(monkeypatch, capsys, "data", "fetch", "served", "--retries", "0")
    assert code == 1 and "data import served FILE" in one_error_line(err)
