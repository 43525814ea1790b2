"""Archives: zip, 7z (py7zr) or tar, recognised by content and extracted only when every member is safe.

The whole archive is refused, before anything is written, if one member could land outside the output
directory (absolute path, drive letter, '..') or is a link or special file, if two members have the same name
(which one is kept would depend on the extractor), or if what it declares would extract to more than
`MAX_EXTRACTED` bytes, or to more than `MAX_RATIO` times its own size once that is over `RATIO_FROM` bytes (a zip
bomb). The public datasets extract to a few GB, at ratios under 20.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from tron_cli.errors import DownloadError
from tron_cli.reporting import SILENT, Reporter


def archive_kind(path: Path) -> str | None:
    """ "zip", "7z" or "tar" (plain or compressed) from the file's content, or None for anything else."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if magic[:4] == b"PK\x03\x04" or zipfile.is_zipfile(path):  # a cut-off zip has lost its directory, not its magic
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    return None


MAX_EXTRACTED = 256 << 30  # bytes an archive may extract to
MAX_RATIO = 200  # extracted bytes per archive byte, checked once the extraction is over RATIO_FROM bytes
RATIO_FROM = 1 << 30


def _members(handle, kind: str) -> list[tuple[str, str | None, int]]:
    """(name, why it is not a plain file or directory or None, declared size in bytes) for every member."""
    if kind == "zip":
        return [(info.filename, "is a symlink" if (info.external_attr >> 16) & 0o170000 == 0o120000 else None, info.file_size) for info in handle.infolist()]
    if kind == "tar":
        members = []
        for info in handle.getmembers():
            odd = "is a symlink" if info.issym() else "is a hard link" if info.islnk() else None
            if odd is None and not (info.isfile() or info.isdir()):
                odd = "is a device or fifo"
            members.append((info.name, odd, info.size))
        return members
    return [(info.filename, "is a symlink" if info.is_symlink else None, int(info.uncompressed or 0)) for info in handle.list()]


def _too_much(archive: Path, members: list[tuple[str, str | None, int]]) -> str | None:
    """Why the members as a whole are refused (a name twice, a zip bomb), or None."""
    seen: set[str] = set()
    for name, _, _ in members:
        plain = "/".join(part for part in re.split(r"[\\/]", name) if part not in ("", "."))
        if plain and plain in seen and not name.endswith(("/", "\\")):
            return f"member {name!r} appears twice"
        seen.add(plain)
    total, size = sum(max(member[2], 0) for member in members), max(archive.stat().st_size, 1)
    if total > MAX_EXTRACTED or (total > RATIO_FROM and total / size > MAX_RATIO):
        return f"would extract to {total:,} bytes from {size:,} ({total / size:,.0f} times its size; the limits are {MAX_EXTRACTED:,} bytes, {MAX_RATIO} times)"
    return None


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
            members = _members(handle, kind)
            for name, odd, _ in members:
                reason = _unsafe(name, odd)
                if reason:
                    raise DownloadError(
                        f"{archive.name}: member {name!r} {reason}; refused the whole archive, nothing was extracted",
                        "Get the archive from the official source (tron download NAME --force)",
                    )
            reason = _too_much(archive, members)
            if reason:
                raise DownloadError(
                    f"{archive.name} {reason}; refused the whole archive, nothing was extracted",
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
                return move_into(scratch, out_dir)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    except _archive_errors() as error:
        raise DownloadError(f"{archive} is corrupt ({error})", "Download it again with --force, or pass --url MIRROR") from None


def move_into(scratch: Path, out_dir: Path) -> list[Path]:
    """Move every file under `scratch` to the same relative place under `out_dir`."""
    moved = []
    for path in sorted(scratch.rglob("*")):
        if path.is_file():
            target = out_dir / path.relative_to(scratch)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            moved.append(target)
    return moved
