"""HTTP(S) and file:// downloads to `FILE.part`: redirects, retries of transient failures, Range resume.

`fetch` is the whole job: `FILE.part` becomes `FILE` only once it has the announced size (and the expected
digest, when one is given). HTTP goes through the standard library (urllib), with redirects followed by hand
so that credentials never reach another host.
"""

from __future__ import annotations

import hashlib
import http.client
import http.cookiejar
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import NamedTuple

from tron_cli import __version__
from tron_cli.errors import DownloadError
from tron_cli.fetching import CHUNK_BYTES, hash_file
from tron_cli.reporting import SILENT, Reporter

ATTEMPTS = 5  # tries per file within one invocation; each one resumes where the last stopped
RETRY_BACKOFF_S = 0.5  # doubled after every failed try
TIMEOUT_S = 60
MAX_REDIRECTS = 10
REDIRECT_STATUS = {301, 302, 303, 307, 308}
RETRY_STATUS = {429, 500, 502, 503, 504}  # the server's trouble, likely to pass
USER_AGENT = f"tron/{__version__} (python-urllib)"


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
    """A transient failure (dropped connection, timeout, short body, 5xx) worth resuming."""


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
        """The response to GET `url` after redirects; raises `Transient` for what a retry may cure, else DownloadError."""
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
                    raise Transient(f"{url} answered HTTP {error.code}") from None
                raise HttpStatusError(url, error.code, hint) from None
            except urllib.error.URLError as error:
                if isinstance(error.reason, (TimeoutError, ConnectionResetError, ConnectionAbortedError)):
                    raise Transient(f"{url}: {error.reason}") from None
                raise DownloadError(f"cannot open {url} ({error.reason})", hint) from None
            except (http.client.HTTPException, ConnectionError, TimeoutError) as error:
                raise Transient(f"{url}: {error!r}") from None
        raise DownloadError(f"{url} redirected more than {MAX_REDIRECTS} times", hint)


def is_html(response) -> bool:
    return (response.headers.get("Content-Type") or "").lower().startswith("text/html")


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


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
    if expected_sha256 and digest != expected_sha256.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {dest.name}: expected sha256 {expected_sha256}, got {digest}",
            "The download is corrupt or --sha256 is wrong; the partial file was deleted, run again or pass --url MIRROR",
        )
    os.replace(part, dest)
    return Fetched(dest, size, digest)


def _fetch_once(client: HttpClient, url: str, part: Path, headers: dict[str, str], hint: str | None, report: Reporter):
    """One request: append to or restart `part`; returns (sha256 hex, size) or raises `Transient`."""
    offset = part.stat().st_size if part.exists() else 0
    if offset:
        headers = {**headers, "Range": f"bytes={offset}-"}
    try:
        response = client.open(url, headers, hint)
    except HttpStatusError as error:
        if error.status != 416 or not offset:
            raise
        part.unlink()  # the server cannot resume from there: the next try starts from zero
        raise Transient(f"{url} cannot resume at byte {offset}") from None
    with response:
        if is_html(response):
            raise DownloadError(f"{url} answered with a web page instead of the file", hint)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if getattr(response, "status", None) == 206:
            if _content_range_start(response.headers.get("Content-Range")) != offset:
                part.unlink()
                raise Transient(f"{url} resumed at the wrong offset")
            digest, mode = hash_file(part), "ab"
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
                    raise Transient(f"connection dropped after {received + len(error.partial)} bytes") from None
                except (ConnectionError, TimeoutError, http.client.HTTPException) as error:
                    raise Transient(f"connection dropped after {received} bytes ({error!r})") from None
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                task.update(advance=len(chunk))
    if total is not None and received < total:
        raise Transient(f"connection closed after {received} of {total} bytes")
    return digest.hexdigest(), received


