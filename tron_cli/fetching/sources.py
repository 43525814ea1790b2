"""Access steps of particular sources: Kaggle's API token and Google Drive's "can't scan for viruses" page;
`fetch_source` downloads a dataset's archive from its source (or a mirror) with the right one.

Kaggle needs no client library: the OTTO download is one GET with basic auth, which then redirects to a
signed storage URL. kagglehub would download into its own cache and extract there, outside our archive
safety checks, checksums, resume and manifest, so it is not used.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

from tron_cli.datasets import Source
from tron_cli.errors import DownloadError
from tron_cli.fetching.http import Fetched, HttpClient, HttpStatusError, Transient, fetch
from tron_cli.reporting import Reporter
from tron_cli.safe_json import JsonRefused, parse

MAX_PAGE_BYTES = 1 << 20  # a confirmation page larger than this is not one
GDOWN_LINK_ORIGIN = "https://docs.google.com"  # where gdown puts a relative /uc?export=download link


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
        document = parse(path.read_text())
        return str(document["username"]), str(document["key"]), str(path)
    except (OSError, UnicodeDecodeError, JsonRefused, KeyError, TypeError):
        raise DownloadError(f'{path} is not a JSON object with "username" and "key"', how) from None


def _gdown_link(page: str, page_url: str, hint: str) -> str | None:
    """The download URL that gdown reads from a confirmation page (its form, its download link or its
    downloadUrl), or None when it finds none.

    gdown reads the page line by line, expecting Google's markup on one line, so the lines are joined first (a
    form spread over several lines works too). It pins a relative /uc?export=download link to docs.google.com;
    that link is resolved against the page it came from instead, as a browser would.
    """
    from gdown.download import get_url_from_gdrive_confirmation  # requests and bs4: only on this path
    from gdown.exceptions import FileURLRetrievalError

    joined = " ".join(page.splitlines())
    try:
        url = get_url_from_gdrive_confirmation(joined)
    except FileURLRetrievalError as error:
        if "uc-error-subcaption" in joined:  # Drive's own refusal, e.g. too many downloads of the file today
            raise DownloadError(f"Google Drive refused the download: {error}", hint) from None
        return None
    except (KeyError, AssertionError, TypeError, ValueError):  # a form that lacks what gdown expects: no link
        return None
    link = re.search(r'href="(/uc\?export=download[^"]+)', joined)
    if link and url == GDOWN_LINK_ORIGIN + link.group(1).replace("&amp;", "&"):
        url = link.group(1).replace("&amp;", "&")
    return urllib.parse.urljoin(page_url, url)


def drive_download_url(client: HttpClient, start_url: str, hint: str) -> str:
    """The URL that serves the file: Google Drive first answers large files with a "can't scan for viruses" page.

    Newer pages hold a form (action plus hidden id, export, confirm, uuid), read by gdown; older ones set a
    download_warning cookie or link to the file with `confirm=TOKEN`.
    """
    try:
        page = client.page(start_url, MAX_PAGE_BYTES, hint=hint)
    except Transient as error:
        raise DownloadError(f"Google Drive did not answer ({error})", hint) from None
    if page is None:  # the file itself: no confirmation needed
        return start_url
    url = _gdown_link(page, start_url, hint)
    if url is not None:
        return url
    token = next((cookie.value for cookie in client.cookies if cookie.name.startswith("download_warning")), None)
    if token is None:
        match = re.search(r"confirm=([0-9A-Za-z_-]+)", page)
        token = match.group(1) if match else None
    if token is None:
        raise DownloadError("Google Drive answered with a page that offers no download", hint)
    return f"{start_url}&confirm={urllib.parse.quote(token)}"


def fetch_source(source: Source, url: str | None, archive: Path, sha256: str | None, manual: str, report: Reporter) -> Fetched:
    """Download the archive from mirror `url`, or from the source with its credentials or confirmation step."""
    with HttpClient() as client:
        if url is not None:
            return fetch(url, archive, expected_sha256=sha256, hint=manual, client=client, report=report)
        if source.access == "drive":
            manual = f"Download {source.archive} by hand from {source.page} and pass --from PATH"
            target = drive_download_url(client, source.url, manual)
            return fetch(target, archive, expected_sha256=sha256, hint=manual, client=client, report=report)
        auth, where = None, None
        if source.access == "kaggle":
            username, key, where = kaggle_credentials()
            auth = (username, key)  # basic auth; httpx drops it when Kaggle redirects to its storage host
        try:
            return fetch(source.url, archive, expected_sha256=sha256, auth=auth, hint=manual, client=client, report=report)
        except HttpStatusError as error:
            if source.access == "kaggle" and error.status in (401, 403):
                raise DownloadError(
                    f"Kaggle refused the download of {source.page} (HTTP {error.status})",
                    f"Check the username and key in {where}, and accept the dataset's rules on {source.page} while logged in",
                ) from None
            raise
