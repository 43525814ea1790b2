"""HTTP(S) and file:// downloads to `FILE.part`: streaming, redirects, retries of transient failures, Range resume.

httpx does the HTTP: it streams, keeps cookies (Google Drive's confirmation step) and follows redirects,
dropping the Authorization header whenever a redirect leaves the origin (only an http -> https upgrade of the
same host keeps it), so credentials never reach another host. The rest is ours because no client does it:
resuming `FILE.part` with Range requests across tries and across invocations, and file:// URLs (httpx has no
file transport). `FILE.part` becomes `FILE` only once it has the announced size and the expected digest.
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import os
import re
import time
import urllib.parse
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

import httpx

from tron_cli.errors import DownloadError
from tron_cli.fetching import CHUNK_BYTES, hash_file
from tron_cli.reporting import SILENT, Reporter
from tron_cli.version import __version__

ATTEMPTS = 5  # tries per file within one invocation; each one resumes where the last stopped
RETRY_BACKOFF_S = 0.5  # doubled after every failed try
TIMEOUT_S = 60
MAX_REDIRECTS = 10
RETRY_STATUS = {429, 500, 502, 503, 504}  # the server's trouble, likely to pass
USER_AGENT = f"tron/{__version__}"


class Fetched(NamedTuple):
    """A file that `fetch` downloaded and verified."""

    path: Path
    size: int
    sha256: str


class HttpStatusError(DownloadError):
    """The server answered with an HTTP error status (kept in `status`)."""

    def __init__(self, url: str, status: int, hint: str | None):
        self.status = status
        super().__init__(f"{url} answered HTTP {status}", hint)


class Transient(Exception):
    """A transient failure (dropped connection, timeout, short body, 429/5xx) worth resuming."""


# what a retry may cure, while the body streams or before the answer came
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class HttpClient:
    """One httpx client for the requests of one download; its cookie jar carries Drive's confirmation to the file."""

    def __init__(self) -> None:
        self._client = httpx.Client(
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            timeout=TIMEOUT_S,
            # identity: Content-Length and Range offsets must count the bytes that end up in FILE.part
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def cookies(self) -> http.cookiejar.CookieJar:
        return self._client.cookies.jar

    def get(self, url: str, *, headers: dict[str, str] | None = None, auth: tuple[str, str] | None = None, hint: str | None = None) -> httpx.Response:
        """The streamed response to GET `url` after redirects, 2xx only (close it); raises `Transient` for what a
        retry may cure, `HttpStatusError` for another status, DownloadError for the rest. `hint` ends every message."""
        request = None
        try:
            request = self._client.build_request("GET", url, headers=headers)
            response = self._client.send(request, auth=auth, stream=True)
        except httpx.TooManyRedirects:
            raise DownloadError(f"{url} redirected more than {MAX_REDIRECTS} times", hint) from None
        except httpx.UnsupportedProtocol as error:
            followed = _request_of(error)
            if followed is not None and followed is not request:  # a redirect to file:, ftp:, ...: nothing was sent there
                raise DownloadError(f"refused a redirect to {followed.url}", hint) from None
            raise DownloadError(f"cannot open {url} ({error})", hint) from None
        except httpx.ConnectError as error:  # refused, unknown host: retrying will not help
            raise DownloadError(f"cannot open {url} ({error})", hint) from None
        except _TRANSIENT as error:
            raise Transient(f"{url}: {error or type(error).__name__}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise DownloadError(f"cannot open {url} ({error})", hint) from None
        if not response.is_success:
            response.close()
            final = str(response.url)
            if response.status_code in RETRY_STATUS:
                raise Transient(f"{final} answered HTTP {response.status_code}")
            raise HttpStatusError(final, response.status_code, hint)
        return response

    def page(self, url: str, limit: int, hint: str | None = None) -> str | None:
        """The text of the web page at `url` (at most `limit` bytes), or None when the answer is not a web page."""
        with closing(self.get(url, hint=hint)) as response:
            if not is_html(response):
                return None
            body = bytearray()
            try:
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) >= limit:
                        break
            except _TRANSIENT as error:
                raise Transient(f"{url}: {error or type(error).__name__}") from None
        return body[:limit].decode("utf-8", "replace")


def _request_of(error: httpx.RequestError) -> httpx.Request | None:
    try:
        return error.request
    except RuntimeError:  # httpx raises when the error carries no request
        return None


def is_html(response: httpx.Response) -> bool:
    return response.headers.get("Content-Type", "").lower().startswith("text/html")


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def fetch(
    url: str,
    dest: Path,
    *,
    expected_sha256: str | None = None,
    auth: tuple[str, str] | None = None,
    hint: str | None = None,
    client: HttpClient | None = None,
    report: Reporter = SILENT,
) -> Fetched:
    """Download `url` (http, https or file) to `dest` through `dest.part`, with basic `auth` if given.

    An existing `.part` is resumed with a Range request (appended on 206, restarted on 200); a dropped
    connection is resumed up to ATTEMPTS times. `.part` becomes `dest` only when it has the announced
    size and, with `expected_sha256`, that digest; a mismatch deletes it. `hint` ends every error message.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if urllib.parse.urlsplit(url).scheme == "file":
        digest, size = _copy_file_url(url, part, hint, report)
    else:
        owned = client is None
        client = client or HttpClient()
        try:
            digest, size = _fetch_with_retries(client, url, part=part, auth=auth, hint=hint, report=report)
        finally:
            if owned:
                client.close()
    if expected_sha256 and digest != expected_sha256.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {dest.name}: expected sha256 {expected_sha256}, got {digest}",
            "The download is corrupt or the expected digest (--sha256) is wrong; the partial file was deleted, run again or pass --url MIRROR",
        )
    os.replace(part, dest)
    return Fetched(dest, size, digest)


def _fetch_with_retries(client: HttpClient, url: str, part: Path, auth, hint: str | None, report: Reporter) -> tuple[str, int]:
    for attempt in range(ATTEMPTS):
        try:
            return _fetch_once(client, url, part=part, auth=auth, hint=hint, report=report)
        except Transient as error:
            if attempt + 1 == ATTEMPTS:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"download of {url} failed {ATTEMPTS} times ({error}); {part} keeps the {kept} bytes received",
                    "Run the same command again to resume it, or pass --url MIRROR",
                ) from None
            delay = RETRY_BACKOFF_S * 2**attempt
            report.warn(f"{error}; resuming in {delay:g} s (try {attempt + 2} of {ATTEMPTS})")
            time.sleep(delay)
    raise AssertionError("unreachable: the last try returns or raises")


def _fetch_once(client: HttpClient, url: str, part: Path, auth, hint: str | None, report: Reporter) -> tuple[str, int]:
    """One request: append to or restart `part`; returns (sha256 hex, size) or raises `Transient`."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = client.get(url, headers=headers, auth=auth, hint=hint)
    except HttpStatusError as error:
        if error.status != 416 or not offset:
            raise
        part.unlink()  # the server cannot resume from there: the next try starts from zero
        raise Transient(f"{url} cannot resume at byte {offset}") from None
    with closing(response):
        if is_html(response):
            raise DownloadError(f"{url} answered with a web page instead of the file", hint)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if response.status_code == 206:
            if _content_range_start(response.headers.get("Content-Range")) != offset:
                part.unlink()
                raise Transient(f"{url} resumed at the wrong offset")
            digest, mode = hash_file(part), "ab"
        else:  # 200: the whole file again
            offset, digest, mode = 0, hashlib.sha256(), "wb"
        total = offset + length if length is not None else None
        received = offset
        with report.task(f"Downloading {part.name.removesuffix('.part')}", total=total, unit="B") as task, open(part, mode) as out:
            task.update(completed=offset)
            try:
                # chunks as they arrive (no re-chunking buffer): when the connection drops, every byte that
                # came is in FILE.part and the next try resumes right after it
                for chunk in response.iter_raw():
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    task.update(advance=len(chunk))
            except _TRANSIENT as error:
                raise Transient(f"connection dropped after {received} bytes ({error or type(error).__name__})") from None
    if total is not None and received < total:
        raise Transient(f"connection closed after {received} of {total} bytes")
    return digest.hexdigest(), received


def _copy_file_url(url: str, part: Path, hint: str | None, report: Reporter) -> tuple[str, int]:
    """A file:// mirror, copied to `part` from its start (a local copy is not worth resuming)."""
    path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    try:
        source = open(path, "rb")
    except OSError as error:
        raise DownloadError(f"cannot open {url} ({error.strerror or error})", hint) from None
    digest, received = hashlib.sha256(), 0
    with (
        source,
        report.task(f"Downloading {part.name.removesuffix('.part')}", total=os.fstat(source.fileno()).st_size, unit="B") as task,
        open(part, "wb") as out,
    ):
        while block := source.read(CHUNK_BYTES):
            out.write(block)
            digest.update(block)
            received += len(block)
            task.update(advance=len(block))
    return digest.hexdigest(), received
