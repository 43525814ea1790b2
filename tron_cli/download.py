"""Fetch the raw datasets: resumable, checksummed downloads, safe archive extraction and `manifest.json`.

A download directory (`$TRON_HOME/data/raw/NAME/` unless `--out` says otherwise) holds the archive as
fetched, the files extracted from it and `manifest.json`, written last: the directory is complete exactly
when its manifest exists and every file it lists is there with the recorded size.

HTTP goes through the standard library only (urllib, with redirects followed by hand so that credentials
never reach another host); archives are zip, 7z (py7zr) or tar. Nothing here imports click or rich.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.cookiejar
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, NamedTuple

from tron_cli import __version__
from tron_cli.datasets import DATASETS, DatasetSpec, Source
from tron_cli.errors import ArtifactError, DownloadError, MissingInputError, UsageError
from tron_cli.home import raw_root
from tron_cli.reporting import SILENT, Reporter, Task

MANIFEST = "manifest.json"
CHUNK_BYTES = 1 << 20
ATTEMPTS = 5  # tries per file within one invocation; each one resumes where the last stopped
RETRY_BACKOFF_S = 0.5  # doubled after every failed try
TIMEOUT_S = 60
MAX_REDIRECTS = 10
MAX_PAGE_BYTES = 1 << 20  # a confirmation page larger than this is not one
REDIRECT_STATUS = {301, 302, 303, 307, 308}
RETRY_STATUS = {429, 500, 502, 503, 504}  # the server's trouble, likely to pass
USER_AGENT = f"tron/{__version__} (python-urllib)"



class Fetched(NamedTuple):
    """A file that `fetch` downloaded and verified."""

    path: Path
    size: int
    sha256: str


@dataclass
class Download:
    """What `download_dataset` did: the directory, its manifest, and whether it was complete already."""

    path: Path
    manifest: dict[str, Any]
    skipped: bool


class HttpStatusError(DownloadError):
    """The server answered with an HTTP error status (kept in `status`)."""

    def __init__(self, url: str, status: int, hint: str | None):
        self.status = status
        super().__init__(f"{url} answered HTTP {status}", hint)


class _Dropped(Exception):
    """A transient failure (dropped connection, timeout, short body, 5xx) worth resuming."""


# --------------------------------------------------------------------------------------------- HTTP


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turns redirects into HTTPError so that `HttpClient.open` follows them itself."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class HttpClient:
    """urllib with a cookie jar (Google Drive's confirmation) and redirects that drop Authorization off-origin."""

    def __init__(self) -> None:
        self.cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect())

    def open(self, url: str, headers: dict[str, str] | None = None, hint: str | None = None):
        """The response to GET `url` after redirects; raises `_Dropped` for what a retry may cure, else DownloadError."""
        headers = {"User-Agent": USER_AGENT, **(headers or {})}
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                return self._opener.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
            except urllib.error.HTTPError as error:
                location = error.headers.get("Location")
                error.close()
                if error.code in REDIRECT_STATUS and location:
                    url = urllib.parse.urljoin(url, location)
                    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                        raise DownloadError(f"refused a redirect to {url}", hint) from None
                    if _origin(url) != origin:
                        # signed storage URLs need no credentials, and another host must never see them
                        headers = {key: value for key, value in headers.items() if key.lower() != "authorization"}
                    continue
                if error.code in RETRY_STATUS:
                    raise _Dropped(f"{url} answered HTTP {error.code}") from None
                raise HttpStatusError(url, error.code, hint) from None
            except urllib.error.URLError as error:
                if isinstance(error.reason, (TimeoutError, ConnectionResetError, ConnectionAbortedError)):
                    raise _Dropped(f"{url}: {error.reason}") from None
                raise DownloadError(f"cannot open {url} ({error.reason})", hint) from None
            except (http.client.HTTPException, ConnectionError, TimeoutError) as error:
                raise _Dropped(f"{url}: {error!r}") from None
        raise DownloadError(f"{url} redirected more than {MAX_REDIRECTS} times", hint)


def _is_html(response) -> bool:
    return (response.headers.get("Content-Type") or "").lower().startswith("text/html")


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def _hash_file(path: Path, digest=None, task: Task | None = None):
    """`digest` (a new sha256 by default) updated with the bytes of `path`, advancing `task` as it reads."""
    digest = digest or hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
            if task is not None:
                task.update(advance=len(block))
    return digest


def fetch(
    url: str,
    dest: Path,
    *,
    expected_sha256: str | None = None,
    headers: dict[str, str] | None = None,
    hint: str | None = None,
    client: HttpClient | None = None,
    report: Reporter = SILENT,
) -> Fetched:
    """Download `url` (http, https or file) to `dest` through `dest.part`.

    An existing `.part` is resumed with a Range request (appended on 206, restarted on 200); a dropped
    connection is resumed up to ATTEMPTS times. `.part` becomes `dest` only when it has the announced
    size and, with `expected_sha256`, that digest; a mismatch deletes it. `hint` ends every error message.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    client = client or HttpClient()
    for attempt in range(ATTEMPTS):
        try:
            digest, size = _fetch_once(client, url, part, headers or {}, hint, report)
            break
        except _Dropped as error:
            if attempt + 1 == ATTEMPTS:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"download of {url} failed {ATTEMPTS} times ({error}); {part} keeps the {kept} bytes received",
                    "Run the same command again to resume it, or pass --url MIRROR",
                ) from None
            delay = RETRY_BACKOFF_S * 2**attempt
            report.warn(f"{error}; resuming in {delay:g} s (try {attempt + 2} of {ATTEMPTS})")
            time.sleep(delay)
    if expected_sha256 and digest != expected_sha256.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {dest.name}: expected sha256 {expected_sha256}, got {digest}",
            "The download is corrupt or --sha256 is wrong; the partial file was deleted, run again or pass --url MIRROR",
        )
    os.replace(part, dest)
    return Fetched(dest, size, digest)


def _fetch_once(client: HttpClient, url: str, part: Path, headers: dict[str, str], hint: str | None, report: Reporter):
    """One request: append to or restart `part`; returns (sha256 hex, size) or raises `_Dropped`."""
    offset = part.stat().st_size if part.exists() else 0
    if offset:
        headers = {**headers, "Range": f"bytes={offset}-"}
    try:
        response = client.open(url, headers, hint)
    except HttpStatusError as error:
        if error.status != 416 or not offset:
            raise
        part.unlink()  # the server cannot resume from there: the next try starts from zero
        raise _Dropped(f"{url} cannot resume at byte {offset}") from None
    with response:
        if _is_html(response):
            raise DownloadError(f"{url} answered with a web page instead of the file", hint)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if getattr(response, "status", None) == 206:
            if _content_range_start(response.headers.get("Content-Range")) != offset:
                part.unlink()
                raise _Dropped(f"{url} resumed at the wrong offset")
            digest, mode = _hash_file(part), "ab"
        else:  # 200, or a file:// URL: the whole file again
            offset, digest, mode = 0, hashlib.sha256(), "wb"
        total = offset + length if length is not None else None
        received = offset
        with report.task(f"Downloading {part.name.removesuffix('.part')}", total=total, unit="B") as task, open(part, mode) as out:
            task.update(completed=offset)
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except http.client.IncompleteRead as error:
                    out.write(error.partial)  # keep what arrived: the next try resumes after it
                    digest.update(error.partial)
                    raise _Dropped(f"connection dropped after {received + len(error.partial)} bytes") from None
                except (ConnectionError, TimeoutError, http.client.HTTPException) as error:
                    raise _Dropped(f"connection dropped after {received} bytes ({error!r})") from None
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                task.update(advance=len(chunk))
    if total is not None and received < total:
        raise _Dropped(f"connection closed after {received} of {total} bytes")
    return digest.hexdigest(), received


# --------------------------------------------------------------------------------------------- Kaggle and Drive


def kaggle_credentials() -> tuple[str, str, str]:
    """(username, key, where they came from): KAGGLE_USERNAME/KAGGLE_KEY, else $KAGGLE_CONFIG_DIR or ~/.kaggle/kaggle.json."""
    username, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if username and key:
        return username, key, "KAGGLE_USERNAME and KAGGLE_KEY"
    path = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"
    how = f"Create an API token on kaggle.com (Settings > API > Create New Token) and save it as {path}, or set KAGGLE_USERNAME and KAGGLE_KEY"
    if not path.is_file():
        raise DownloadError(f"no Kaggle credentials: {path} does not exist and KAGGLE_USERNAME/KAGGLE_KEY are unset", how)
    try:
        document = json.loads(path.read_text())
        return str(document["username"]), str(document["key"]), str(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise DownloadError(f'{path} is not a JSON object with "username" and "key"', how) from None


class _FormParser(HTMLParser):
    """Collects every form's action and hidden fields."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append((values.get("action", ""), {}))
        elif tag == "input" and self.forms and values.get("name") and values.get("type", "").lower() == "hidden":
            self.forms[-1][1][values["name"]] = values.get("value", "")


def _drive_download_url(client: HttpClient, start_url: str, hint: str) -> str:
    """The URL that serves the file: Google Drive first answers large files with a "can't scan for viruses" page.

    Newer pages hold a form (action plus hidden id, export, confirm, uuid); older ones set a download_warning
    cookie or link to the file with `confirm=TOKEN`.
    """
    try:
        response = client.open(start_url, hint=hint)
    except _Dropped as error:
        raise DownloadError(f"Google Drive did not answer ({error})", hint) from None
    with response:
        if not _is_html(response):
            return start_url
        page = response.read(MAX_PAGE_BYTES).decode("utf-8", "replace")
    parser = _FormParser()
    parser.feed(page)
    for action, fields in parser.forms:
        if action and "id" in fields:
            target = urllib.parse.urljoin(start_url, action)
            return f"{target}{'&' if '?' in target else '?'}{urllib.parse.urlencode(fields)}"
    token = next((cookie.value for cookie in client.cookies if cookie.name.startswith("download_warning")), None)
    if token is None:
        match = re.search(r"confirm=([0-9A-Za-z_-]+)", page)
        token = match.group(1) if match else None
    if token is None:
        raise DownloadError("Google Drive answered with a page that offers no download", hint)
    return f"{start_url}&confirm={urllib.parse.quote(token)}"


# --------------------------------------------------------------------------------------------- archives


def archive_kind(path: Path) -> str | None:
    """"zip", "7z" or "tar" (plain or compressed) from the file's content, or None for anything else."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if magic[:4] == b"PK\x03\x04" or zipfile.is_zipfile(path):  # a cut-off zip has lost its directory, not its magic
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    return None


def _members(handle, kind: str) -> list[tuple[str, str | None]]:
    """(name, why it is not a plain file or directory, or None) for every member."""
    if kind == "zip":
        return [(info.filename, "is a symlink" if (info.external_attr >> 16) & 0o170000 == 0o120000 else None) for info in handle.infolist()]
    if kind == "tar":
        members = []
        for info in handle.getmembers():
            odd = "is a symlink" if info.issym() else "is a hard link" if info.islnk() else None
            if odd is None and not (info.isfile() or info.isdir()):
                odd = "is a device or fifo"
            members.append((info.name, odd))
        return members
    return [(info.filename, "is a symlink" if info.is_symlink else None) for info in handle.list()]


def _unsafe(name: str, odd: str | None) -> str | None:
    """Why a member could write outside the extraction directory, or None."""
    if odd:
        return odd
    if name.startswith(("/", "\\")):
        return "has an absolute path"
    if re.match(r"[A-Za-z]:", name):
        return "has a drive letter"
    if ".." in re.split(r"[\\/]", name):
        return "has a '..' component"
    if "\0" in name:
        return "has a NUL byte in its name"
    return None


def _open_archive(path: Path, kind: str):
    if kind == "zip":
        return zipfile.ZipFile(path)
    if kind == "tar":
        return tarfile.open(path)
    import py7zr  # imports many codecs: only when a 7z archive is opened

    return py7zr.SevenZipFile(path)


def _archive_errors() -> tuple[type[BaseException], ...]:
    import gzip
    import lzma
    import zlib

    import py7zr.exceptions

    return (zipfile.BadZipFile, tarfile.TarError, py7zr.exceptions.ArchiveError, lzma.LZMAError, EOFError, gzip.BadGzipFile, zlib.error)


def extract(archive: Path, out_dir: Path, report: Reporter = SILENT) -> list[Path]:
    """Unpack a zip, 7z or tar `archive` into `out_dir`; returns the files, sorted.

    The whole archive is refused, before anything is written, if a member has an absolute path, a drive
    letter, a '..' component, or is a link or special file. Members go to a temporary directory inside
    `out_dir` first and are moved into place once all of them are out.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    kind = archive_kind(archive)
    if kind is None:
        raise DownloadError(f"{archive} is not a zip, 7z or tar archive", "Check that it is the right file, or download it again with --force")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _open_archive(archive, kind) as handle:
            for name, odd in _members(handle, kind):
                reason = _unsafe(name, odd)
                if reason:
                    raise DownloadError(
                        f"{archive.name}: member {name!r} {reason}; refused the whole archive, nothing was extracted",
                        "Get the archive from the official source (tron download NAME --force)",
                    )
            scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=out_dir))
            try:
                report.info(f"Extracting {archive.name}")
                if kind == "tar":
                    # the "data" filter (Python 3.11.4+) re-checks what `_unsafe` checked: defence in depth
                    handle.extractall(scratch, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
                    # gzip checks its CRC only at the end of the stream, which extraction need not reach
                    while handle.fileobj is not None and handle.fileobj.read(1 << 20):
                        pass
                else:
                    handle.extractall(scratch)
                return _move_into(scratch, out_dir)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    except _archive_errors() as error:
        raise DownloadError(f"{archive} is corrupt ({error})", "Download it again with --force, or pass --url MIRROR") from None


def _move_into(scratch: Path, out_dir: Path) -> list[Path]:
    """Move every file under `scratch` to the same relative place under `out_dir`."""
    moved = []
    for path in sorted(scratch.rglob("*")):
        if path.is_file():
            target = out_dir / path.relative_to(scratch)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            moved.append(target)
    return moved


# --------------------------------------------------------------------------------------------- datasets


def _file_records(out_dir: Path, files: list[Path], report: Reporter) -> list[dict[str, Any]]:
    """{path (relative to out_dir), size, sha256} of every file, with one progress bar over all of them."""
    sizes = [path.stat().st_size for path in files]
    records = []
    with report.task("Checksumming", total=sum(sizes), unit="B") as task:
        for path, size in zip(files, sizes):
            digest = _hash_file(path, task=task).hexdigest()
            records.append({"path": path.relative_to(out_dir).as_posix(), "size": size, "sha256": digest})
    return records


def _read_manifest(out_dir: Path) -> dict[str, Any] | None:
    from tron_cli.artifacts import read_json  # pulls numpy and pyarrow: not at import, so --help stays fast

    try:
        return read_json(out_dir / MANIFEST, "manifest")
    except ArtifactError:
        return None


def is_complete(out_dir: Path, manifest: dict[str, Any]) -> bool:
    """Whether every file `manifest` lists is in `out_dir` with its recorded size."""
    try:
        return all((out_dir / entry["path"]).stat().st_size == entry["size"] for entry in manifest["files"])
    except (OSError, KeyError, TypeError):
        return False


def _conflict(manifest: dict[str, Any], parameters: dict[str, Any], sha256: str | None) -> str | None:
    """How a complete download differs from what was asked, or None when it is what was asked."""
    if manifest.get("parameters", {}) != parameters:
        recorded = ", ".join(f"{key}={value}" for key, value in manifest.get("parameters", {}).items())
        return f"generated with {recorded}"
    recorded_sha = (manifest.get("archive") or {}).get("sha256")
    if sha256 and recorded_sha != sha256:
        return f"downloaded with sha256 {recorded_sha}, not the --sha256 {sha256}"
    return None


def _flags(names) -> str:
    flags = [f"--{name.replace('_', '-')}" for name in names]
    return flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} and {flags[-1]}"


def _check_options(spec: DatasetSpec, url: str | None, from_path: Path | None, sha256: str | None, parameters: dict[str, Any]) -> str | None:
    """Refuse options that do not go together; returns `sha256` in lower case."""
    name = spec.name
    declared = {parameter.name: parameter for parameter in spec.parameters}
    if spec.generated and (url or from_path or sha256):
        own = f"Use {_flags(declared)}" if declared else f"{name} takes no other options"
        raise UsageError(f"--url, --from and --sha256 apply to real datasets, not {name}", own)
    unknown = [key for key in parameters if key not in declared]
    if unknown:
        owners = [other.name for _, other in DATASETS.items() if any(p.name in unknown for p in other.parameters)]
        verb = "applies" if len(unknown) == 1 else "apply"
        raise UsageError(f"{_flags(unknown)} {verb} to {', '.join(owners) or 'no dataset'}, not {name}", "Drop them")
    for key, value in parameters.items():
        minimum = declared[key].minimum
        if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
            raise UsageError(f"{_flags([key])} {value!r} is not an integer >= {minimum}" if minimum is not None else f"{_flags([key])} {value!r} is not an integer")
    if url and from_path:
        raise UsageError("--url and --from exclude each other", "Pass one of them")
    if url and urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise UsageError(f"--url {url} is not an http://, https:// or file:// URL", "Pass a full URL, e.g. file:///path/to/archive")
    if sha256 is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise UsageError(f"--sha256 {sha256} is not 64 hexadecimal digits", "Pass the SHA-256 digest as printed by sha256sum")
    return sha256.lower()


def download_dataset(
    name: str,
    out_dir: Path | None = None,
    *,
    url: str | None = None,
    from_path: Path | None = None,
    sha256: str | None = None,
    force: bool = False,
    parameters: dict[str, int] | None = None,
    report: Reporter = SILENT,
) -> Download:
    """Download (or generate) the registered dataset `name` into `out_dir` (default `$TRON_HOME/data/raw/NAME`).

    A complete download is left alone unless `force`. Real datasets come from their source, from mirror
    `url` (http, https or file) or from the local file `from_path`; `sha256` (or the digest the source
    declares) checks the archive. Generated data takes `parameters`; the declared defaults fill the gaps.
    """
    spec = DATASETS.get(name)
    sha256 = _check_options(spec, url, from_path, sha256, parameters or {})
    out_dir = Path(out_dir) if out_dir is not None else raw_root() / name
    parameters = {**spec.defaults(), **(parameters or {})}
    try:
        existing = _read_manifest(out_dir)
        if existing is not None and not force:
            if existing.get("name") != name:
                raise ArtifactError(f"{out_dir} holds a download of {existing.get('name')}", "Choose another --out, or pass --force to download into it anyway")
            if is_complete(out_dir, existing):
                conflict = _conflict(existing, parameters, sha256)
                if conflict:
                    raise ArtifactError(f"{out_dir} holds {name} {conflict}", "Pass --force to replace it, or choose another --out")
                report.info(f"{name} is already complete in {out_dir} ({len(existing['files'])} files); pass --force to download it again")
                return Download(out_dir, existing, True)
        out_dir.mkdir(parents=True, exist_ok=True)
        # from here on the directory must not look complete until the new manifest is written
        (out_dir / MANIFEST).unlink(missing_ok=True)
        for stale in out_dir.glob(".extract-*"):  # left by an extraction that was killed
            shutil.rmtree(stale, ignore_errors=True)
        if spec.generated:
            origin, archive, files = name, None, _generate(spec, out_dir, parameters, report)
        else:
            origin, archive, files = _obtain(spec.source, out_dir, url, from_path, sha256, force, report)
        manifest = {
            "name": name,
            "source": origin,
            "archive": archive,
            "files": _file_records(out_dir, files, report),
            "parameters": parameters,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        from tron_cli.artifacts import write_json

        write_json(out_dir / MANIFEST, manifest, kind="manifest")
    except OSError as error:
        where = error.filename or out_dir
        raise DownloadError(f"{where}: {error.strerror or error}", "Check free disk space and permissions, or choose another --out") from None
    report.info(f"Downloaded {name} to {out_dir}: {', '.join(entry['path'] for entry in manifest['files'])}")
    return Download(out_dir, _read_manifest(out_dir) or manifest, False)


def _generate(spec: DatasetSpec, out_dir: Path, parameters: dict[str, int], report: Reporter) -> list[Path]:
    """Generated data, written into a scratch directory beside `out_dir`, then moved into it."""
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        spec.generate(scratch, report=report, **parameters)
        return _move_into(scratch, out_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _obtain(
    source: Source, out_dir: Path, url: str | None, from_path: Path | None, sha256: str | None, force: bool, report: Reporter
) -> tuple[str, dict[str, Any], list[Path]]:
    """(source, archive record, usable files) of a real dataset, from `from_path`, a mirror or its source."""
    manual = f"Download {source.archive} by hand from {source.page} and pass --from PATH, or pass --url MIRROR"
    if from_path is not None:
        archive = Path(from_path).expanduser().resolve()
        if not archive.is_file():
            raise MissingInputError(f"--from {from_path}: no such file", f"Pass the path of the downloaded {source.archive}")
        digest = _hash_file(archive).hexdigest()
        if sha256 and digest != sha256:
            raise DownloadError(f"checksum mismatch for {archive}: expected sha256 {sha256}, got {digest}", "Download the file again, or check --sha256")
        origin, record_path = str(archive), str(archive)
    else:
        archive = out_dir / source.archive
        expected = sha256 or source.sha256  # what comes over the network, from the source or a mirror of it
        if force:
            archive.unlink(missing_ok=True)
            archive.with_name(archive.name + ".part").unlink(missing_ok=True)
        # a file under the final name was verified when it was renamed there: an interrupted extraction reuses it
        digest = _hash_file(archive).hexdigest() if archive.is_file() else None
        if digest is not None and (expected is None or digest == expected):
            report.info(f"Reusing {archive} (pass --force to download it again)")
        else:
            archive.unlink(missing_ok=True)
            digest = _fetch_source(source, url, archive, expected, manual, report).sha256
        origin, record_path = url or source.url, source.archive
    record = {"path": record_path, "size": archive.stat().st_size, "sha256": digest}
    if archive_kind(archive) is not None:
        files = extract(archive, out_dir, report)
    elif archive.name in source.expected:  # the user passed the data file itself, e.g. train-item-views.csv
        target = out_dir / archive.name
        if target.resolve() != archive:
            shutil.copyfile(archive, target)
        files = [target]
    else:
        raise DownloadError(f"{archive} is neither a zip, 7z or tar archive nor one of {', '.join(source.expected)}", manual)
    missing = sorted(set(source.expected) - {path.name for path in files})
    if missing:
        raise DownloadError(f"{archive} holds no {', '.join(missing)}: not the expected archive", manual)
    return origin, record, files


def _fetch_source(source: Source, url: str | None, archive: Path, sha256: str | None, manual: str, report: Reporter) -> Fetched:
    """Download the archive from mirror `url`, or from the source with its credentials or confirmation step."""
    client = HttpClient()
    if url is not None:
        return fetch(url, archive, expected_sha256=sha256, hint=manual, client=client, report=report)
    if source.access == "drive":
        manual = f"Download {source.archive} by hand from {source.page} and pass --from PATH"
        target = _drive_download_url(client, source.url, manual)
        return fetch(target, archive, expected_sha256=sha256, hint=manual, client=client, report=report)
    headers, where = {}, None
    if source.access == "kaggle":
        username, key, where = kaggle_credentials()
        headers["Authorization"] = "Basic " + base64.b64encode(f"{username}:{key}".encode()).decode()
    try:
        return fetch(source.url, archive, expected_sha256=sha256, headers=headers, hint=manual, client=client, report=report)
    except HttpStatusError as error:
        if source.access == "kaggle" and error.status in (401, 403):
            raise DownloadError(
                f"Kaggle refused the download of {source.page} (HTTP {error.status})",
                f"Check the username and key in {where}, and accept the dataset's rules on {source.page} while logged in",
            ) from None
        raise
