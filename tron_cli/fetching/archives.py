"""Archives: zip, 7z (py7zr) or tar, recognised by content and extracted only when every member is safe.

The whole archive is refused, before anything is written, if one member could land outside the output
directory (absolute path, drive letter, '..') or is a link or special file.
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
