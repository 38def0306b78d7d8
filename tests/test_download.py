"""The downloader against a local HTTP server on 127.0.0.1: good mirror, failover past a 404, checksum
mismatch, a connection dropped mid-transfer, offline mode. Nothing partial may be left behind."""

import http.server
import sys
import threading

import pytest

from tinydgl.data import DownloadError
from tinydgl.data import datasets as ds
from tinydgl.data.download import RemoteFile, download, sha256_bytes

PAYLOAD = bytes(range(256)) * 400  # 100 KiB, several read chunks' worth on a slow path


class Handler(http.server.BaseHTTPRequestHandler):
    """/good/<f>: the payload. /missing/<f>: 404. /bad/<f>: right length, wrong bytes.
    /drop/<f>: announces the full length, sends half, closes the connection."""

    hits = []

    def do_GET(self):
        Handler.hits.append(self.path)
        kind = self.path.split("/")[1]
        if kind == "missing":
            self.send_error(404)
            return
        body = PAYLOAD if kind in ("good", "drop") else bytes(len(PAYLOAD))
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if kind == "drop" else body)
        if kind == "drop":
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "TINYDGL_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    Handler.hits.clear()


def remote(server, *kinds, name="file.gz"):
    return RemoteFile(name, sha256_bytes(PAYLOAD), len(PAYLOAD), tuple(f"{server}/{k}/{name}" for k in kinds))


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_good_mirror(server, tmp_path):
    path = download(remote(server, "good"), tmp_path / "new" / "dir", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert leftovers(path.parent) == ["file.gz"]


def test_failover_past_404(server, tmp_path):
    path = download(remote(server, "missing", "good"), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert Handler.hits == ["/missing/file.gz", "/good/file.gz"]


def test_failover_past_dropped_connection_and_bad_checksum(server, tmp_path):
    path = download(remote(server, "drop", "bad", "good"), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD and leftovers(tmp_path) == ["file.gz"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="SHA-256 check failed"):
        download(remote(server, "bad"), tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_interrupted_transfer_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match=f"interrupted after {len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes"):
        download(remote(server, "drop"), tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_every_mirror_is_reported(server, tmp_path):
    with pytest.raises(DownloadError) as info:
        download(remote(server, "missing", "drop"), tmp_path, progress=False)
    message = str(info.value)
    assert "/missing/file.gz: HTTP 404" in message and "/drop/file.gz" in message


def test_existing_file_is_replaced_only_by_a_verified_one(server, tmp_path):
    (tmp_path / "file.gz").write_bytes(b"old")
    with pytest.raises(DownloadError):
        download(remote(server, "bad"), tmp_path, progress=False)
    assert (tmp_path / "file.gz").read_bytes() == b"old"


def test_progress_bar_runs(server, tmp_path):
    download(remote(server, "good"), tmp_path, progress=True)
    assert (tmp_path / "file.gz").exists()


def test_plain_progress_without_tqdm(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `import tqdm` now raises ImportError
    download(remote(server, "good"), tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "downloading file.gz (0.1 MB)" in err and "file.gz: 100%" in err


def test_offline_never_touches_the_network(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYDGL_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline"):
        download(remote(server, "good"), tmp_path, progress=False)
    assert Handler.hits == []


def test_load_dataset_downloads_missing_files_from_mirrors(server, tmp_path, monkeypatch):
    """End to end: load_dataset finds nothing, downloads 4 IDX files (first mirror 404s), verifies, parses."""
    import gzip

    import numpy as np

    from tinydgl.data.idx import write_idx

    served = {}
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    y = np.arange(20, dtype=np.uint8) % 10
    (tmp_path / "src").mkdir()
    for name, array in [
        ("train-images-idx3-ubyte.gz", x),
        ("train-labels-idx1-ubyte.gz", y),
        ("t10k-images-idx3-ubyte.gz", x[:10]),
        ("t10k-labels-idx1-ubyte.gz", y[:10]),
    ]:
        served[name] = write_idx(tmp_path / "src" / name, array).read_bytes()
    files = tuple(
        RemoteFile(n, sha256_bytes(b), len(b), (f"{server}/missing/{n}", f"{server}/serve/{n}"))
        for n, b in served.items()
    )
    monkeypatch.setattr(Handler, "do_GET", _serving(served))
    monkeypatch.setitem(ds.DATASETS, "mnist", ds.replace(ds.DATASETS["mnist"], files=files))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYDGL_DATA", raising=False)

    data = ds.load_dataset("mnist", data_dir=tmp_path / "data", progress=False)
    assert data.x_train.shape == (20, 1, 28, 28) and data.y_test.tolist() == list(range(10))
    assert leftovers(tmp_path / "data" / "mnist") == sorted(served)
    assert (
        gzip.decompress((tmp_path / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())[:4]
        == b"\x00\x00\x08\x01"
    )


def _serving(served):
    def do_GET(self):
        kind, name = self.path.split("/")[1:3]
        if kind != "serve":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(served[name])))
        self.end_headers()
        self.wfile.write(served[name])

    return do_GET
