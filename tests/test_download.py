"""`tron download`, end to end through the CLI, against a local HTTP server that can drop, redirect and confirm."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import threading
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import py7zr
import pytest

from tests.helpers import invoke
from tron_cli.datasets import DATASETS
from tron_cli.fetching import http as http_core

YOOCHOOSE_FILES = ("yoochoose-clicks.dat", "yoochoose-buys.dat", "yoochoose-test.dat")


# --------------------------------------------------------------------------------------------- local server


@dataclasses.dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class FakeServer:
    """What the handler serves: files (with Range), routes (any answer), one-time drops; and what it saw."""

    def __init__(self) -> None:
        self.port = 0
        self.files: dict[str, bytes] = {}
        self.routes: dict[str, object] = {}  # path -> function(query, headers) -> (status, headers, body)
        self.drop_once: set[str] = set()  # the next full GET of these sends half the body, then closes
        self.ignore_range: set[str] = set()
        self.seen: list[Seen] = []

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def requests_for(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        state: FakeServer = self.server.state
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        state.seen.append(Seen(parts.path, query, {key.lower(): value for key, value in self.headers.items()}))
        if parts.path in state.routes:
            status, headers, body = state.routes[parts.path](query, self.headers)
            self.answer(status, headers, body)
        elif parts.path in state.files:
            self.serve_file(state, parts.path)
        else:
            self.answer(404, {"Content-Type": "text/plain"}, b"not found")

    def answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def serve_file(self, state: FakeServer, path: str) -> None:
        data = state.files[path]
        binary = {"Content-Type": "application/octet-stream"}
        requested = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
        if requested and path not in state.ignore_range:
            start = int(requested.group(1))
            if start >= len(data):
                self.answer(416, {"Content-Range": f"bytes */{len(data)}"}, b"")
                return
            self.answer(206, {**binary, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}, data[start:])
        elif path in state.drop_once:
            state.drop_once.discard(path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))  # announces all of it...
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])  # ...sends half, and the connection closes
            self.wfile.flush()
            self.close_connection = True
        else:
            self.answer(200, binary, data)


@pytest.fixture
def server():
    state = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = state
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def environment(tmp_path, monkeypatch):
    """TRON_HOME in tmp_path, no Kaggle credentials, no waiting between retries."""
    monkeypatch.setenv("TRON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle"))
    monkeypatch.setattr(http_core, "RETRY_BACKOFF_S", 0)
    monkeypatch.setattr(http_core, "TIMEOUT_S", 5)


@pytest.fixture
def repoint():
    """`repoint(name, url)` points a registered dataset's source at `url` for one test; its declaration comes back after."""
    originals = {}

    def repoint(name: str, url: str) -> None:
        spec = originals.setdefault(name, DATASETS.get(name))
        DATASETS.register(name, dataclasses.replace(spec, source=dataclasses.replace(spec.source, url=url)), replace=True)

    yield repoint
    for name, spec in originals.items():
        DATASETS.register(name, spec, replace=True)


def tron(*args: str):
    return invoke("download", *args)


def raw(tmp_path: Path, name: str) -> Path:
    return tmp_path / "home" / "data" / "raw" / name


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def all_files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file() or path.is_symlink()}


# --------------------------------------------------------------------------------------------- archives


def payloads(names, size: int = 1000) -> dict[str, bytes]:
    return {name: os.urandom(size) for name in names}


def make_zip(path: Path, files: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16  # S_IFLNK: what zip tools write for a symlink
            archive.writestr(info, "/etc/passwd")
    return path


def make_tar(path: Path, files: dict[str, bytes], link: tuple[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type = link[1]
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    return path


def make_7z(path: Path, files: dict[str, bytes], symlink_to: Path | None = None) -> Path:
    with py7zr.SevenZipFile(path, "w") as archive:
        archive.set_encoded_header_mode(False)  # plain header, so `rename_in_7z` can patch a name
        if symlink_to is not None:  # first: py7zr fails on a symlink written after writestr members
            link = path.with_name("link")
            link.symlink_to(symlink_to)
            archive.write(link, "link")
            link.unlink()
        for name, data in files.items():
            archive.writestr(data, name)
    return path


def rename_in_7z(path: Path, old: str, new: str) -> None:
    """Rewrite a member name in place (same length) and fix the header CRCs.

    py7zr refuses to write '..' or absolute names, so the hostile archives are written with a harmless name
    of the same length and patched here: what the test reads is a genuine 7z file with that member.
    """
    data = bytearray(path.read_bytes())
    before, after = old.encode("utf-16-le"), new.encode("utf-16-le")
    assert len(before) == len(after) and data.count(before) == 1
    index = data.index(before)
    data[index : index + len(before)] = after
    offset, size = struct.unpack_from("<QQ", data, 12)
    struct.pack_into("<I", data, 28, zlib.crc32(bytes(data[32 + offset : 32 + offset + size])))
    struct.pack_into("<I", data, 8, zlib.crc32(bytes(data[12:32])))
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------------------------- downloads


def test_download_extracts_and_writes_manifest(tmp_path, server):
    files = payloads(YOOCHOOSE_FILES)
    archive = make_7z(tmp_path / "yoochoose-data.7z", files).read_bytes()
    server.files["/yc/yoochoose-data.7z"] = archive
    url = server.url("/yc/yoochoose-data.7z")

    result = tron("yoochoose", "--url", url, "--sha256", sha(archive))

    assert result.exit_code == 0, result.stderr
    out = raw(tmp_path, "yoochoose")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema"] == "manifest/1"
    assert manifest["name"] == "yoochoose" and manifest["source"] == url
    assert manifest["archive"] == {"path": "yoochoose-data.7z", "size": len(archive), "sha256": sha(archive)}
    assert manifest["files"] == [{"path": name, "size": len(files[name]), "sha256": sha(files[name])} for name in sorted(files)]
    assert manifest["parameters"] == {}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["created"])
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    assert not list(out.glob("*.part")) and not list(out.glob(".extract-*"))


def test_complete_download_is_not_redone_unless_forced(tmp_path, server):
    server.files["/a.zip"] = make_zip(tmp_path / "a.zip", payloads(["train-item-views.csv"])).read_bytes()
    url = server.url("/a.zip")
    assert tron("diginetica", "--url", url).exit_code == 0
    assert len(server.seen) == 1

    again = tron("diginetica", "--url", url)
    assert again.exit_code == 0
    assert "already complete" in again.stderr
    assert len(server.seen) == 1

    forced = tron("diginetica", "--url", url, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert len(server.seen) == 2


def test_missing_extracted_file_is_restored_from_the_kept_archive(tmp_path, server):
    files = payloads(["train-item-views.csv"])
    server.files["/a.zip"] = make_zip(tmp_path / "a.zip", files).read_bytes()
    assert tron("diginetica", "--url", server.url("/a.zip")).exit_code == 0
    out = raw(tmp_path, "diginetica")
    (out / "train-item-views.csv").unlink()

    result = tron("diginetica", "--url", server.url("/a.zip"))

    assert result.exit_code == 0, result.stderr
    assert "Reusing" in result.stderr
    assert (out / "train-item-views.csv").read_bytes() == files["train-item-views.csv"]
    assert len(server.seen) == 1


def test_dropped_connection_resumes_with_range(tmp_path, server):
    files = payloads(YOOCHOOSE_FILES, size=200_000)
    archive = make_7z(tmp_path / "yoochoose-data.7z", files).read_bytes()
    server.files["/yc.7z"] = archive
    server.drop_once.add("/yc.7z")

    result = tron("yoochoose", "--url", server.url("/yc.7z"))

    assert result.exit_code == 0, result.stderr
    ranges = [seen.headers.get("range") for seen in server.requests_for("/yc.7z")]
    assert ranges == [None, f"bytes={len(archive) // 2}-"]
    out = raw(tmp_path, "yoochoose")
    assert (out / "yoochoose-data.7z").read_bytes() == archive
    assert (out / "yoochoose-clicks.dat").read_bytes() == files["yoochoose-clicks.dat"]


def test_interrupted_download_resumes_in_the_next_invocation(tmp_path, server, monkeypatch):
    monkeypatch.setattr(http_core, "ATTEMPTS", 1)
    archive = make_zip(tmp_path / "a.zip", payloads(["train-item-views.csv"], size=100_000)).read_bytes()
    server.files["/a.zip"] = archive
    server.drop_once.add("/a.zip")
    out = raw(tmp_path, "diginetica")

    first = tron("diginetica", "--url", server.url("/a.zip"))
    assert first.exit_code == 1
    assert "Run the same command again to resume" in first.stderr
    assert (out / "dataset-train-diginetica.zip.part").stat().st_size == len(archive) // 2
    assert not (out / "manifest.json").exists()

    second = tron("diginetica", "--url", server.url("/a.zip"))
    assert second.exit_code == 0, second.stderr
    assert server.seen[-1].headers["range"] == f"bytes={len(archive) // 2}-"
    assert (out / "dataset-train-diginetica.zip").read_bytes() == archive


def test_server_trouble_is_retried(tmp_path, server):
    archive = make_zip(tmp_path / "a.zip", payloads(["train-item-views.csv"])).read_bytes()
    answers = iter([(503, {"Content-Type": "text/plain"}, b"busy"), (429, {"Content-Type": "text/plain"}, b"slow down")])
    server.routes["/a.zip"] = lambda query, headers: next(answers, (200, {"Content-Type": "application/zip"}, archive))

    result = tron("diginetica", "--url", server.url("/a.zip"))

    assert result.exit_code == 0, result.stderr
    assert "HTTP 503" in result.stderr and "HTTP 429" in result.stderr  # each retry is announced
    assert len(server.requests_for("/a.zip")) == 3
    assert (raw(tmp_path, "diginetica") / "dataset-train-diginetica.zip").read_bytes() == archive


def test_server_ignoring_range_restarts_from_zero(tmp_path, server):
    archive = make_zip(tmp_path / "a.zip", payloads(["train-item-views.csv"])).read_bytes()
    server.files["/a.zip"] = archive
    server.ignore_range.add("/a.zip")
    out = raw(tmp_path, "diginetica")
    out.mkdir(parents=True)
    (out / "dataset-train-diginetica.zip.part").write_bytes(b"stale bytes from another file")

    result = tron("diginetica", "--url", server.url("/a.zip"))

    assert result.exit_code == 0, result.stderr
    assert server.seen[0].headers["range"] == "bytes=29-"
    assert (out / "dataset-train-diginetica.zip").read_bytes() == archive


def test_checksum_mismatch_keeps_nothing(tmp_path, server):
    archive = make_zip(tmp_path / "a.zip", payloads(["train-item-views.csv"])).read_bytes()
    server.files["/a.zip"] = archive
    wrong = "0" * 64

    result = tron("diginetica", "--url", server.url("/a.zip"), "--sha256", wrong)

    assert result.exit_code == 1
    assert "dataset-train-diginetica.zip" in result.stderr
    assert wrong in result.stderr and sha(archive) in result.stderr
    assert "Traceback" not in result.stderr
    assert all_files(raw(tmp_path, "diginetica")) == set()


HOSTILE_MEMBERS = [(kind, hostile) for kind in ("zip", "tar", "7z") for hostile in ("dotdot", "absolute", "symlink")]


@pytest.mark.parametrize("kind, hostile", [*HOSTILE_MEMBERS, ("tar", "hardlink")])  # only tar has hard links
def test_unsafe_archive_is_refused_whole(tmp_path, kind, hostile):
    files = payloads(YOOCHOOSE_FILES)  # good members first: none of them may be extracted either
    outside = tmp_path / "outside" / "evil.txt"
    archive = tmp_path / f"fixture.{kind}"
    names = {"dotdot": "../../evil.txt", "absolute": str(outside), "symlink": "link", "hardlink": "link"}
    if kind == "zip":
        if hostile == "symlink":
            make_zip(archive, files, symlink="link")
        else:
            make_zip(archive, {**files, names[hostile]: b"evil"})
    elif kind == "tar":
        if hostile in ("symlink", "hardlink"):
            make_tar(archive, files, link=("link", tarfile.SYMTYPE if hostile == "symlink" else tarfile.LNKTYPE))
        else:
            make_tar(archive, {**files, names[hostile]: b"evil"})
    elif hostile == "symlink":
        make_7z(archive, files, symlink_to=Path("/etc/passwd"))
    else:
        harmless = "x" * len(names[hostile])
        make_7z(archive, {**files, harmless: b"evil"})
        rename_in_7z(archive, harmless, names[hostile])
    before = all_files(tmp_path)

    result = tron("yoochoose", "--from", str(archive))

    assert result.exit_code == 1, result.stderr
    assert repr(names[hostile]) in result.stderr and "nothing was extracted" in result.stderr
    assert all_files(tmp_path) == before


def test_file_url_mirror(tmp_path):
    files = payloads(["train-item-views.csv", "products.csv"])
    archive = make_tar(tmp_path / "mirror.tar.gz", files)
    url = archive.as_uri()

    result = tron("diginetica", "--url", url, "--json")

    assert result.exit_code == 0, result.stderr
    manifest = json.loads((raw(tmp_path, "diginetica") / "manifest.json").read_text())
    assert manifest["source"] == url
    assert manifest["archive"]["sha256"] == sha(archive.read_bytes())
    assert {entry["path"] for entry in manifest["files"]} == set(files)


def test_from_path_uses_the_local_file_and_no_network(tmp_path):
    files = payloads(["train-item-views.csv"])
    archive = make_zip(tmp_path / "dataset-train-diginetica.zip", files)

    result = tron("diginetica", "--from", str(archive))

    assert result.exit_code == 0, result.stderr
    manifest = json.loads((raw(tmp_path, "diginetica") / "manifest.json").read_text())
    assert manifest["source"] == str(archive.resolve())
    assert manifest["archive"]["path"] == str(archive.resolve())
    assert manifest["files"][0]["sha256"] == sha(files["train-item-views.csv"])


def test_from_path_accepts_the_data_file_itself(tmp_path):
    data = tmp_path / "train-item-views.csv"
    data.write_text("sessionId;userId;itemId;timeframe;eventdate\n1;;81766;526309;2016-05-09\n")

    result = tron("diginetica", "--from", str(data))

    assert result.exit_code == 0, result.stderr
    assert (raw(tmp_path, "diginetica") / "train-item-views.csv").read_bytes() == data.read_bytes()


def test_from_path_of_the_wrong_archive(tmp_path):
    archive = make_zip(tmp_path / "other.zip", payloads(["something.csv"]))
    result = tron("diginetica", "--from", str(archive))
    assert result.exit_code == 1
    assert "train-item-views.csv" in result.stderr and "--from" in result.stderr
    assert not (raw(tmp_path, "diginetica") / "manifest.json").exists()


def test_json_output(tmp_path):
    archive = make_zip(tmp_path / "d.zip", payloads(["train-item-views.csv"]))
    first = tron("diginetica", "--from", str(archive), "--json")
    second = tron("diginetica", "--json")

    for result, skipped in ((first, False), (second, True)):
        assert result.exit_code == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["name"] == "diginetica" and document["skipped"] is skipped
        assert Path(document["path"]) == raw(tmp_path, "diginetica").resolve()
        assert [set(entry) for entry in document["files"]] == [{"path", "size", "sha256"}]


# --------------------------------------------------------------------------------------------- errors


def test_http_error_names_url_and_what_to_do(server):
    result = tron("yoochoose", "--url", server.url("/missing.7z"))
    assert result.exit_code == 1
    assert f"{server.url('/missing.7z')} answered HTTP 404" in result.stderr
    assert "--from PATH" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_redirect_to_another_scheme_is_refused(tmp_path, server):
    server.routes["/x.7z"] = lambda query, headers: (302, {"Location": (tmp_path / "secret").as_uri()}, b"")
    (tmp_path / "secret").write_bytes(b"not for the network")
    result = tron("yoochoose", "--url", server.url("/x.7z"))
    assert result.exit_code == 1
    assert "refused a redirect" in result.stderr and "Traceback" not in result.stderr
    assert not raw(tmp_path, "yoochoose").joinpath("yoochoose-data.7z").exists()


def test_redirect_loop_stops(server):
    server.routes["/loop"] = lambda query, headers: (302, {"Location": "/loop"}, b"")
    result = tron("yoochoose", "--url", server.url("/loop"))
    assert result.exit_code == 1 and "redirected more than 10 times" in result.stderr
    assert len(server.requests_for("/loop")) == 11


def test_unreachable_host(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on once this closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = tron("yoochoose", "--url", f"http://127.0.0.1:{port}/x.7z")
    assert result.exit_code == 1
    assert "cannot open" in result.stderr and "--url MIRROR" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["synthetic", "--url", "http://example.invalid/x"],
        ["yoochoose", "--sessions", "10"],
        ["yoochoose", "--sha256", "abc"],
        ["yoochoose", "--url", "ftp://example.invalid/x.7z"],
        ["yoochoose", "--url", "http://[unclosed/x.7z"],
        ["yoochoose", "--url", "http://example.invalid/x.7z", "--from", "x.7z"],
    ],
)
def test_usage_errors(args):
    result = tron(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ")


def test_another_dataset_in_out_dir_is_refused(tmp_path):
    archive = make_zip(tmp_path / "d.zip", payloads(["train-item-views.csv"]))
    out = tmp_path / "shared"
    assert tron("diginetica", "--from", str(archive), "--out", str(out)).exit_code == 0
    result = tron("synthetic", "--out", str(out))
    assert result.exit_code == 1 and "holds a download of diginetica" in result.stderr


# --------------------------------------------------------------------------------------------- Kaggle


def test_kaggle_without_credentials_makes_no_request(tmp_path, server, repoint):
    repoint("otto", server.url("/api"))
    result = tron("otto")
    assert result.exit_code == 1
    assert "kaggle.json" in result.stderr and str(tmp_path / "kaggle") in result.stderr
    assert server.seen == []


def test_kaggle_credentials_stay_with_their_host(tmp_path, server, repoint):
    files = payloads(["otto-recsys-train.jsonl", "otto-recsys-test.jsonl"])
    server.files["/storage/recsys-dataset.zip"] = make_zip(tmp_path / "otto.zip", files).read_bytes()
    signed = server.url("/storage/recsys-dataset.zip", host="localhost")  # another host than 127.0.0.1
    server.routes["/api/v1/datasets/download/otto/recsys-dataset"] = lambda query, headers: (302, {"Location": signed}, b"")
    repoint("otto", server.url("/api/v1/datasets/download/otto/recsys-dataset"))
    (tmp_path / "kaggle").mkdir()
    (tmp_path / "kaggle" / "kaggle.json").write_text(json.dumps({"username": "ann", "key": "s3cret"}))

    result = tron("otto")

    assert result.exit_code == 0, result.stderr
    api, storage = server.seen
    assert api.headers["authorization"] == "Basic " + base64.b64encode(b"ann:s3cret").decode()
    assert storage.path == "/storage/recsys-dataset.zip" and storage.headers["host"].startswith("localhost")
    assert "authorization" not in storage.headers
    assert (raw(tmp_path, "otto") / "otto-recsys-train.jsonl").read_bytes() == files["otto-recsys-train.jsonl"]


def test_kaggle_refusal_explains_credentials_and_rules(server, monkeypatch, repoint):
    server.routes["/api"] = lambda query, headers: (403, {"Content-Type": "application/json"}, b'{"message": "Forbidden"}')
    repoint("otto", server.url("/api"))
    monkeypatch.setenv("KAGGLE_USERNAME", "ann")
    monkeypatch.setenv("KAGGLE_KEY", "wrong")
    result = tron("otto")
    assert result.exit_code == 1
    assert "HTTP 403" in result.stderr and "KAGGLE_USERNAME" in result.stderr and "rules" in result.stderr


# --------------------------------------------------------------------------------------------- Google Drive


@pytest.fixture
def drive(tmp_path, server, repoint):
    """The diginetica source pointed at the local server; returns the zip it should end with."""
    archive = make_zip(tmp_path / "digi.zip", payloads(["train-item-views.csv"])).read_bytes()
    repoint("diginetica", server.url("/uc?export=download&id=ID"))
    return archive


def html(text: str, headers: dict[str, str] | None = None):
    return 200, {"Content-Type": "text/html; charset=utf-8", **(headers or {})}, text.encode()


def test_drive_confirmation_form(tmp_path, server, drive):
    page = f"""<html><body>Google Drive can't scan this file for viruses.
    <form id="download-form" action="{server.url("/download")}" method="get">
    <input type="submit" value="Download anyway"/>
    <input type="hidden" name="id" value="ID"><input type="hidden" name="export" value="download">
    <input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1&amp;2">
    </form></body></html>"""
    expected = {"id": "ID", "export": "download", "confirm": "t", "uuid": "u-1&2"}
    server.routes["/uc"] = lambda query, headers: html(page)
    server.routes["/download"] = lambda query, headers: (200, {"Content-Type": "application/zip"}, drive) if query == expected else html(page)

    result = tron("diginetica")

    assert result.exit_code == 0, result.stderr
    assert (raw(tmp_path, "diginetica") / "dataset-train-diginetica.zip").read_bytes() == drive


def test_drive_confirmation_cookie(tmp_path, server, drive):
    cookie = {"Set-Cookie": "download_warning_13058876669334088843_ID=Xy_9; Path=/"}

    def uc(query, headers):
        if query.get("confirm") == "Xy_9" and "download_warning_" in (headers.get("Cookie") or ""):
            return 200, {"Content-Type": "application/zip"}, drive
        return html("<html>Too large to scan for viruses.</html>", cookie)

    server.routes["/uc"] = uc

    result = tron("diginetica")

    assert result.exit_code == 0, result.stderr
    assert server.seen[-1].query == {"export": "download", "id": "ID", "confirm": "Xy_9"}


def test_drive_confirmation_link(server, drive):
    def uc(query, headers):
        if query.get("confirm") == "AbC1":
            return 200, {"Content-Type": "application/octet-stream"}, drive
        return html('<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC1&amp;id=ID">Download anyway</a>')

    server.routes["/uc"] = uc
    assert tron("diginetica").exit_code == 0


def test_drive_download_url_in_page_data(tmp_path, server, drive):
    """Newer pages carry the file's URL in their data, JSON-escaped (gdown reads it)."""
    target = server.url("/file").replace("=", "\\u003d")
    server.routes["/uc"] = lambda query, headers: html(f'<script>var d = {{"downloadUrl":"{target}?id\\u003dID\\u0026confirm\\u003dt"}};</script>')
    server.routes["/file"] = lambda query, headers: (200, {"Content-Type": "application/zip"}, drive) if query == {"id": "ID", "confirm": "t"} else html("no")

    result = tron("diginetica")

    assert result.exit_code == 0, result.stderr
    assert (raw(tmp_path, "diginetica") / "dataset-train-diginetica.zip").read_bytes() == drive


def test_drive_refusal_is_reported_in_its_words(tmp_path, server, drive):
    caption = "Too many users have viewed or downloaded this file recently."
    server.routes["/uc"] = lambda query, headers: html(f'<html><p class="uc-error-caption">Sorry</p><p class="uc-error-subcaption">{caption}</p></html>')

    result = tron("diginetica")

    assert result.exit_code == 1
    assert f"Google Drive refused the download: {caption}" in result.stderr and "--from PATH" in result.stderr
    assert len(server.seen) == 1


def test_drive_that_keeps_answering_html_asks_for_from(tmp_path, server, drive):
    server.routes["/uc"] = lambda query, headers: html('<a href="/uc?export=download&amp;confirm=T&amp;id=ID">again</a>')

    result = tron("diginetica")

    assert result.exit_code == 1
    assert "web page instead of the file" in result.stderr
    assert "--from PATH" in result.stderr and "drive.google.com" in result.stderr
    assert not (raw(tmp_path, "diginetica") / "manifest.json").exists()


@pytest.mark.parametrize("kind", ["zip", "tar", "7z"])
@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_damaged_archive_is_refused_and_nothing_is_kept(tmp_path, kind, damage):
    """A flipped byte (caught by the format's checksum: gzip's only at the end of its stream) or a cut-off
    archive: one Error line naming the archive, no manifest, nothing extracted."""
    files = payloads(["train-item-views.csv"], size=50_000)
    archive = {"zip": make_zip, "tar": make_tar, "7z": make_7z}[kind](tmp_path / f"fixture.{kind}", files)
    data = bytearray(archive.read_bytes())
    if damage == "flipped":
        middle = len(data) // 2
        data[middle : middle + 2] = bytes(b ^ 0xFF for b in data[middle : middle + 2])
    else:
        del data[len(data) * 2 // 3 :]
    archive.write_bytes(bytes(data))

    result = tron("diginetica", "--from", str(archive))

    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.strip().splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0]
    assert f"{archive} is corrupt" in errors[0]
    assert all_files(raw(tmp_path, "diginetica")) == set()


@pytest.mark.parametrize("damage", ["truncated", "other-version"])
def test_damaged_manifest_is_named_by_preprocess_and_redone_by_download(tmp_path, damage):
    assert tron("synthetic", "--sessions", "60", "--items", "20").exit_code == 0
    manifest = raw(tmp_path, "synthetic") / "manifest.json"
    if damage == "truncated":
        manifest.write_text(manifest.read_text()[:40])
    else:
        manifest.write_text(manifest.read_text().replace('"manifest/1"', '"manifest/2"'))

    refused = invoke("preprocess")
    assert refused.exit_code == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()] and str(manifest) in refused.stderr

    again = tron("synthetic", "--sessions", "60", "--items", "20")
    assert again.exit_code == 0, again.stderr
    assert json.loads(manifest.read_text())["schema"] == "manifest/1"
    assert invoke("preprocess").exit_code == 0


# --------------------------------------------------------------------------------------------- synthetic and CLI


def test_synthetic(tmp_path):
    result = tron("synthetic", "--sessions", "40", "--items", "30", "--seed", "3", "--json")

    assert result.exit_code == 0, result.stderr
    out = raw(tmp_path, "synthetic")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == "synthetic" and manifest["archive"] is None
    assert manifest["parameters"] == {"sessions": 40, "items": 30, "seed": 3, "days": 0, "churn": 0}
    assert sorted(entry["path"] for entry in manifest["files"]) == ["test.jsonl", "train.jsonl"]
    for entry in manifest["files"]:
        assert sha((out / entry["path"]).read_bytes()) == entry["sha256"]
    assert not [path for path in out.parent.iterdir() if path.name.startswith(".")]

    other = tron("synthetic", "--sessions", "41", "--items", "30", "--seed", "3")
    assert other.exit_code == 1 and "--force" in other.stderr


def test_synthetic_five_weeks_are_the_bytes_they_always_were(tmp_path):
    """The daily log (--days) added parameters and draws; the default output stays byte for byte what 0.2.0 wrote."""
    assert tron("synthetic", "--sessions", "300", "--items", "50", "--seed", "3").exit_code == 0
    out = raw(tmp_path, "synthetic")
    assert sha((out / "train.jsonl").read_bytes()) == "32151f463b603a950c4b03ae6f13f57604fcb05d55c92744e4fe61d7db26b5b8"
    assert sha((out / "test.jsonl").read_bytes()) == "1b4ba948cbf3b047fcecb62fca101c959fdc8bd863bba2d20e39090913a389c3"
    manifest = out / "manifest.json"
    document = json.loads(manifest.read_text())
    document["parameters"] = {"sessions": 300, "items": 50, "seed": 3}  # as a download made before --days recorded it
    manifest.write_text(json.dumps(document))
    again = tron("synthetic", "--sessions", "300", "--items", "50", "--seed", "3")
    assert again.exit_code == 0 and "already complete" in again.stderr


def test_synthetic_daily_log_has_items_born_and_retired_each_day(tmp_path):
    args = ("synthetic", "--sessions", "600", "--items", "200", "--days", "4", "--churn", "20", "--seed", "5")
    assert tron(*args, "--out", str(tmp_path / "a")).exit_code == 0
    assert tron(*args, "--out", str(tmp_path / "b")).exit_code == 0
    days = sorted((tmp_path / "a").glob("day-*.jsonl"))
    assert [path.name for path in days] == ["day-001.jsonl", "day-002.jsonl", "day-003.jsonl", "day-004.jsonl"]
    assert all(path.read_bytes() == (tmp_path / "b" / path.name).read_bytes() for path in days)  # seeded
    clicked, sessions = [], 0
    for day, path in enumerate(days):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        sessions += len(records)
        starts = {(min(event["ts"] for event in record["events"]) - 1_659_304_800_000) // 86_400_000 for record in records}
        assert starts == {day}  # one day's sessions, by their start (days count from 2022-08-01, Berlin)
        clicked.append({event["aid"] for record in records for event in record["events"]})
        assert max(clicked[-1]) < 200 + day * 20  # no item born later
        if day:
            assert len(set(range(200 + (day - 1) * 20, 200 + day * 20)) & clicked[-1]) >= 10  # the items born today are clicked
    assert sessions == 600
    assert len(clicked[0] - clicked[3]) > 20  # items of the first day that are gone by the fourth


def test_help_has_summary_and_example():
    result = invoke("download", "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "tron download synthetic" in result.stdout


def test_command_module_does_not_import_torch():
    trace = subprocess.run([sys.executable, "-X", "importtime", "-c", "from tron_cli.cli import download"], capture_output=True, text=True, check=True).stderr
    assert "torch" not in trace
