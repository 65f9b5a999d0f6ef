"""`ntklab data fetch` and `data list` against a local HTTP server on 127.0.0.1 that serves
generated files (no test touches the network): resumed, restarted, refused and mirrored downloads."""

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from official_formats import write_cifar10, write_idx_dataset
from rich.console import Console
from typer.testing import CliRunner

from ntklab.cli import app
from ntklab.data import files as datafiles
from ntklab.data.fetch import RichProgress, fetch, list_datasets
from ntklab.data.files import DataError


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.supports_range = True
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before the connection drops (once)
        self.corrupt = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        asked = self.headers.get("Range")
        srv.requests.append((self.path, asked))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        if srv.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 1])
        start = 0
        if asked and srv.supports_range:
            start = int(asked.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = srv.drop_after.pop(self.path, None)
        self.wfile.write(body if cut is None else body[: cut - start])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def server():
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def publish(server, tmp_path, name="mnist", **kwargs):
    """Generate a dataset's files, serve them at /<name>/<file>, and return its registry entry."""
    source = tmp_path / "source"
    if name == "cifar10":
        _, files = write_cifar10(source, url_base=server.base, **kwargs)
    else:
        _, files = write_idx_dataset(source, name, url_base=server.base, **kwargs)
    for path in (source / name).rglob("*"):
        if path.is_file():
            server.files[f"/{name}/{path.relative_to(source / name)}"] = path.read_bytes()
    return files


IMAGES = "/mnist/train-images-idx3-ubyte.gz"


def test_fetch_downloads_every_file_verified_then_keeps_them(server, tmp_path):
    files = publish(server, tmp_path)
    registry = {"mnist": files}
    root = tmp_path / "data"
    results = fetch("mnist", root, registry=registry)
    assert [r.action for r in results] == ["downloaded"] * 4
    for path in (root / "mnist").glob("[!.]*"):
        assert path.read_bytes() == server.files[f"/mnist/{path.name}"]
    assert not list((root / "mnist").glob("*.part"))
    assert [r.state for r in list_datasets(root, registry)] == ["ok"]
    server.requests.clear()
    assert [r.action for r in fetch("mnist", root, registry=registry)] == ["present"] * 4
    assert server.requests == []


def test_fetch_interrupted_mid_file_resumes_and_ends_verified(server, tmp_path):
    registry = {"mnist": publish(server, tmp_path)}
    root = tmp_path / "data"
    size = len(server.files[IMAGES])
    server.drop_after[IMAGES] = size // 2
    with pytest.raises(DataError, match=r"the next fetch resumes from there") as failure:
        fetch("mnist", root, registry=registry, retries=0)
    part = root / "mnist" / "train-images-idx3-ubyte.gz.part"
    assert str(part) in str(failure.value)
    assert part.read_bytes() == server.files[IMAGES][: size // 2]
    assert not (root / "mnist" / "train-images-idx3-ubyte.gz").exists()

    results = fetch("mnist", root, registry=registry, retries=0)
    assert (IMAGES, f"bytes={size // 2}-") in server.requests, "only the missing bytes were asked for"
    assert results[0].action == "resumed"
    assert (root / "mnist" / "train-images-idx3-ubyte.gz").read_bytes() == server.files[IMAGES]
    assert not part.exists()


def test_a_dropped_connection_is_resumed_within_one_fetch(server, tmp_path):
    registry = {"cifar10": publish(server, tmp_path, "cifar10")}
    archive = "/cifar10/cifar-10-python.tar.gz"
    server.drop_after[archive] = 1000
    fetch("cifar10", tmp_path / "data", registry=registry, retries=2)
    assert [r for r in server.requests if r[0] == archive] == [(archive, None), (archive, "bytes=1000-")]
    assert (tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == server.files[archive]


def test_a_server_ignoring_range_restarts_the_download(server, tmp_path):
    registry = {"mnist": publish(server, tmp_path)}
    directory = tmp_path / "data" / "mnist"
    directory.mkdir(parents=True)
    (directory / "train-images-idx3-ubyte.gz.part").write_bytes(b"\xff" * 500)  # not even the right prefix
    server.supports_range = False
    fetch("mnist", tmp_path / "data", registry=registry)
    assert (IMAGES, "bytes=500-") in server.requests
    assert (directory / "train-images-idx3-ubyte.gz").read_bytes() == server.files[IMAGES]


def test_a_download_that_fails_its_checksum_is_discarded(server, tmp_path):
    registry = {"mnist": publish(server, tmp_path)}
    server.corrupt = True
    with pytest.raises(DataError, match="does not match the official checksum: its sha256"):
        fetch("mnist", tmp_path / "data", registry=registry, retries=0)
    assert list((tmp_path / "data" / "mnist").glob("[!.]*")) == [], "no .part file, no file under the official name"


def test_a_corrupt_local_file_is_downloaded_again(server, tmp_path):
    registry = {"mnist": publish(server, tmp_path)}
    root = tmp_path / "data"
    fetch("mnist", root, registry=registry)
    labels = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-3])
    assert [r.state for r in list_datasets(root, registry)] == ["corrupt"]
    results = fetch("mnist", root, registry=registry)
    assert [r.action for r in results] == ["present"] * 3 + ["downloaded"]
    assert labels.read_bytes() == server.files["/mnist/t10k-labels-idx1-ubyte.gz"]


def test_missing_file_on_the_server_and_mirror_override(server, tmp_path, monkeypatch):
    files = publish(server, tmp_path)
    del server.files["/mnist/t10k-images-idx3-ubyte.gz"]
    with pytest.raises(DataError, match="HTTP 404"):
        fetch("mnist", tmp_path / "data", registry={"mnist": files}, retries=0)
    for path in (tmp_path / "source" / "mnist").iterdir():
        server.files[f"/mirror/mnist/{path.name}"] = path.read_bytes()
    monkeypatch.setenv("NTKLAB_DATA_MIRROR", server.base + "/mirror")
    fetch("mnist", tmp_path / "data", registry={"mnist": files}, retries=0)
    assert server.requests[-2:] == [("/mirror/mnist/t10k-images-idx3-ubyte.gz", None),
                                    ("/mirror/mnist/t10k-labels-idx1-ubyte.gz", None)]


def test_rich_progress_reports_bytes(server, tmp_path):
    registry = {"mnist": publish(server, tmp_path)}
    stream = io.StringIO()
    fetch("mnist", tmp_path / "data", registry=registry, progress=RichProgress(Console(file=stream, width=120)))
    assert "train-images-idx3-ubyte.gz" in stream.getvalue()


def test_cli_data_fetch_and_list(server, tmp_path, monkeypatch):
    monkeypatch.setitem(datafiles.REGISTRY, "mnist", publish(server, tmp_path))
    root = tmp_path / "data"
    runner = CliRunner()
    fetched = runner.invoke(app, ["data", "fetch", "mnist", "--root", str(root)])
    assert fetched.exit_code == 0, fetched.output
    assert "mnist: 4 files verified" in fetched.output and "4 downloaded" in fetched.output
    listed = runner.invoke(app, ["data", "list", "--root", str(root), "--format", "json"])
    assert listed.exit_code == 0
    states = {r["dataset"]: r["state"] for r in json.loads(listed.stdout)}
    assert states == {"mnist": "ok", "fashion_mnist": "missing", "kmnist": "missing", "cifar10": "missing",
                      "cifar100": "missing", "svhn": "missing"}
    unknown = runner.invoke(app, ["data", "fetch", "imagenet", "--root", str(root)])
    assert unknown.exit_code == 2 and "unknown dataset 'imagenet'" in unknown.output
