"""The download stage: a dataset's raw files into `$TRON_HOME/data/raw/NAME/` with a `manifest.json`.

A download directory (or `--out DIR`) holds the archive as fetched, the files extracted from it and
`manifest.json`, written last: the directory is complete exactly when its manifest exists and every file it
lists is there with the recorded size. A complete directory is left alone (idempotence); the archive comes
from the dataset's source, a mirror (`--url`) or a local file (`--from`), or the data is generated. How
files are fetched and unpacked is `tron_cli.fetching`'s job. Nothing here imports click or rich.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tron_cli.datasets import DATASETS, DatasetSpec, Source
from tron_cli.errors import ArtifactError, DownloadError, MissingInputError, UsageError
from tron_cli.fetching import hash_file
from tron_cli.fetching.archives import archive_kind, extract, move_into
from tron_cli.fetching.sources import fetch_source
from tron_cli.reporting import SILENT, Reporter
from tron_cli.workspace.home import raw_root

MANIFEST = "manifest.json"


@dataclass
class Download:
    """What `download_dataset` did: the directory, its manifest, and whether it was complete already."""

    path: Path
    manifest: dict[str, Any]
    skipped: bool


def _file_records(out_dir: Path, files: list[Path], report: Reporter) -> list[dict[str, Any]]:
    """{path (relative to out_dir), size, sha256} of every file, with one progress bar over all of them."""
    sizes = [path.stat().st_size for path in files]
    records = []
    with report.task("Checksumming", total=sum(sizes), unit="B") as task:
        for path, size in zip(files, sizes):
            digest = hash_file(path, task=task).hexdigest()
            records.append({"path": path.relative_to(out_dir).as_posix(), "size": size, "sha256": digest})
    return records


def _read_manifest(out_dir: Path) -> dict[str, Any] | None:
    from tron_cli.artifacts.documents import read_json  # pulls numpy and pyarrow: not at import, so --help stays fast

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


def _conflict(manifest: dict[str, Any], parameters: dict[str, Any], sha256: str | None, defaults: dict[str, Any]) -> str | None:
    """How a complete download differs from what was asked, or None when it is what was asked (a parameter declared
    after the download was made counts with its default)."""
    if {**defaults, **manifest.get("parameters", {})} != parameters:
        recorded = ", ".join(f"{key}={value}" for key, value in manifest.get("parameters", {}).items())
        return f"generated with {recorded}"
    recorded_sha = (manifest.get("archive") or {}).get("sha256")
    if sha256 and recorded_sha != sha256:
        return f"downloaded with sha256 {recorded_sha}, not the --sha256 {sha256}"
    return None


def _flags(names) -> str:
    flags = [f"--{name.replace('_', '-')}" for name in names]
    return flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} and {flags[-1]}"


def _scheme(url: str) -> str | None:
    try:
        return urllib.parse.urlsplit(url).scheme
    except ValueError:  # e.g. an unclosed [ of an IPv6 host
        return None


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
        verb, pronoun = ("applies", "it") if len(unknown) == 1 else ("apply", "them")
        raise UsageError(f"{_flags(unknown)} {verb} to {', '.join(owners) or 'no dataset'}, not {name}", f"Drop {pronoun}")
    for key, value in parameters.items():  # click checks the flags; this is for callers of the library
        minimum = declared[key].minimum
        if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
            need = "an integer" if minimum is None else f"an integer >= {minimum}"
            raise UsageError(f"{_flags([key])} {value!r} is not {need}")
    if url and from_path:
        raise UsageError("--url and --from exclude each other", "Pass one of them")
    if url and _scheme(url) not in ("http", "https", "file"):
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
    sha256 = _check_options(spec, url, from_path=from_path, sha256=sha256, parameters=parameters or {})
    out_dir = Path(out_dir) if out_dir is not None else raw_root() / name
    parameters = {**spec.defaults(), **(parameters or {})}
    try:
        existing = _read_manifest(out_dir)
        if existing is not None and not force:
            if existing.get("name") != name:
                raise ArtifactError(f"{out_dir} holds a download of {existing.get('name')}", "Choose another --out, or pass --force to download into it anyway")
            if is_complete(out_dir, existing):
                conflict = _conflict(existing, parameters, sha256, spec.defaults())
                if conflict:
                    raise ArtifactError(f"{out_dir} holds {name} {conflict}", "Pass --force to replace it, or choose another --out")
                report.info(f"{name} is already complete in {out_dir} ({len(existing['files'])} files); pass --force to download it again")
                return Download(out_dir, existing, True)
        # from here on the directory must not look complete until the new manifest is written
        (out_dir / MANIFEST).unlink(missing_ok=True)
        for stale in out_dir.glob(".extract-*"):  # left by an extraction that was killed
            shutil.rmtree(stale, ignore_errors=True)
        if spec.source is None:  # generated beside out_dir first: a refused or failed generation leaves no directory
            origin, archive, files = name, None, _generate(spec, out_dir, parameters, report)
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            origin, archive, files = _obtain(spec.source, out_dir, url=url, from_path=from_path, sha256=sha256, force=force, report=report)
        manifest: dict[str, Any] = {
            "name": name,
            "source": origin,
            "archive": archive,
            "files": _file_records(out_dir, files, report),
            "parameters": parameters,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        from tron_cli.artifacts.documents import write_json

        write_json(out_dir / MANIFEST, manifest, kind="manifest")
    except OSError as error:
        where = error.filename or out_dir
        raise DownloadError(f"{where}: {error.strerror or error}", "Check free disk space and permissions, or choose another --out") from None
    report.info(f"Downloaded {name} to {out_dir}: {', '.join(entry['path'] for entry in manifest['files'])}")
    return Download(out_dir, _read_manifest(out_dir) or manifest, False)


def _generate(spec: DatasetSpec, out_dir: Path, parameters: dict[str, int], report: Reporter) -> list[Path]:
    """Generated data, written into a scratch directory beside `out_dir`, then moved into it."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        if spec.generate is None:
            raise ValueError(f"dataset {spec.name} is not generated")
        spec.generate(scratch, report=report, **parameters)
        out_dir.mkdir(exist_ok=True)
        return move_into(scratch, out_dir)
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
        digest = hash_file(archive).hexdigest()
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
        digest = hash_file(archive).hexdigest() if archive.is_file() else None
        if digest is not None and (expected is None or digest == expected):
            report.info(f"Reusing {archive} (pass --force to download it again)")
        else:
            archive.unlink(missing_ok=True)
            digest = fetch_source(source, url, archive=archive, sha256=expected, manual=manual, report=report).sha256
        origin, record_path = url or source.url, source.archive
    record = {"path": record_path, "size": archive.stat().st_size, "sha256": digest}
    if archive_kind(archive) is not None:
        files = extract(archive, out_dir, report)
    elif archive.name in source.expected:  # the user passed the data file itself, e.g. train-item-views.csv
        target = out_dir / archive.name
        if target.resolve() != archive:
            partial = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(archive, partial)
            os.replace(partial, target)
        files = [target]
    else:
        raise DownloadError(f"{archive} is neither a zip, 7z or tar archive nor one of {', '.join(source.expected)}", manual)
    missing = sorted(set(source.expected) - {path.name for path in files})
    if missing:
        raise DownloadError(f"{archive} holds no {', '.join(missing)}: not the expected archive", manual)
    return origin, record, files
