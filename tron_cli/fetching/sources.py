"""Access steps of particular sources: Kaggle's API token and Google Drive's "can't scan for viruses" page;
`fetch_source` downloads a dataset's archive from its source (or a mirror) with the right one."""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

from tron_cli.datasets import Source
from tron_cli.errors import DownloadError
from tron_cli.fetching.http import Fetched, HttpClient, HttpStatusError, Transient, fetch, is_html
from tron_cli.reporting import Reporter

MAX_PAGE_BYTES = 1 << 20  # a confirmation page larger than this is not one


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


def drive_download_url(client: HttpClient, start_url: str, hint: str) -> str:
    """The URL that serves the file: Google Drive first answers large files with a "can't scan for viruses" page.

    Newer pages hold a form (action plus hidden id, export, confirm, uuid); older ones set a download_warning
    cookie or link to the file with `confirm=TOKEN`.
    """
    try:
        response = client.open(start_url, hint=hint)
    except Transient as error:
        raise DownloadError(f"Google Drive did not answer ({error})", hint) from None
    with response:
        if not is_html(response):
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


def fetch_source(source: Source, url: str | None, archive: Path, sha256: str | None, manual: str, report: Reporter) -> Fetched:
    """Download the archive from mirror `url`, or from the source with its credentials or confirmation step."""
    client = HttpClient()
    if url is not None:
        return fetch(url, archive, expected_sha256=sha256, hint=manual, client=client, report=report)
    if source.access == "drive":
        manual = f"Download {source.archive} by hand from {source.page} and pass --from PATH"
        target = drive_download_url(client, source.url, manual)
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
