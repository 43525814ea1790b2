"""Files that appear whole or not at all: writes go to a temporary name beside the target and are renamed when
complete (a file, or a directory built in full), and any OSError of a write becomes one line naming the output."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tron_cli.artifacts.schemas import MARKERS, SCHEMAS
from tron_cli.errors import ArtifactError, OutputError, UsageError
from tron_cli.safe_json import parse


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# errors that only a write can cause: whatever file an OSError names, these mean the output could not be written
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
_WHY = {
    errno.ENOSPC: ("no space is left on the device", "Free some space, or write elsewhere"),
    errno.EDQUOT: ("the disk quota is exhausted", "Free some space, or write elsewhere"),
    errno.EROFS: ("the file system is read-only", "Write elsewhere (another --out, -o or $TRON_HOME)"),
    errno.EACCES: ("permission denied", "Check the permissions of its directory, or write elsewhere"),
    errno.EPERM: ("operation not permitted", "Check the permissions of its directory, or write elsewhere"),
    errno.EISDIR: ("it is a directory", "Give the path of a file"),
    errno.ENOTDIR: ("a part of its path is a file, not a directory", "Give a path whose parents are directories"),
    errno.EFBIG: ("the file is too large for the file system", "Write elsewhere"),
    errno.ENAMETOOLONG: ("its name is too long", "Give a shorter path"),
}


def output_error(error: OSError, path: Path) -> OutputError:
    """The one-line error of an output `path` that could not be written, saying why and what to do."""
    why, hint = _WHY.get(error.errno or 0, (error.strerror or str(error), "Check the path, free space and permissions, or write elsewhere"))
    return OutputError(f"cannot write {path}: {why}; nothing was written", hint)


def _is_within(name: Any, places: tuple[Path, ...]) -> bool:
    try:
        target = Path(os.fsdecode(name))
    except TypeError:
        return False
    return any(target == place or place in target.parents for place in places)


@contextlib.contextmanager
def writing(path: Path, *places: Path) -> Iterator[None]:
    """Turn an OSError of writing `path` into an `OutputError` naming it. With `places` (where the block writes),
    an error that names another file (one being read, say) is left alone unless only a write can cause it."""
    try:
        yield
    except OSError as error:
        if isinstance(error, BrokenPipeError):
            raise
        names = [name for name in (error.filename, error.filename2) if name is not None]
        if not places or not names or error.errno in WRITE_ERRNOS or any(_is_within(name, places) for name in names):
            raise output_error(error, path) from None
        raise


def _prepare(path: Path) -> None:
    """Create the parents of an output and refuse a directory in its place, before any work is done for it."""
    if path.is_dir():
        raise output_error(OSError(errno.EISDIR, "Is a directory", str(path)), path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`.

    Any OSError of writing it (a read-only or full file system, no permission, a directory in the way) becomes an
    `OutputError` naming `path`, and the temporary file is removed: `path` keeps its previous content or stays absent."""
    path = Path(path)
    _prepare(path)
    with writing(path):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        with writing(path, tmp, path):
            yield tmp
            # mkstemp makes 0600, and some writers (safetensors) replace the file with one of their own: the final
            # file gets the usual permissions whatever wrote it
            os.chmod(tmp, 0o666 & ~_umask())
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def directory_kind(path: Path) -> str | None:
    """The kind of tron artifact a directory is, by the schema of its marker document (None: not one)."""
    for kind, marker in MARKERS.items():
        try:
            document = parse((path / marker).read_bytes())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(document, dict) and str(document.get("schema", "")).startswith(f"{SCHEMAS[kind]}/"):
            return kind
    return None


def _overlaps(a: Path, b: Path) -> bool:
    """Whether one of two paths is the other or lies inside it."""
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def check_replaceable(out: Path, kind: str, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse, before any work and touching nothing, to write the `kind` artifact `out` over an input of the same
    command (or a directory inside or around one), or, when it exists, over anything but an empty directory or a
    tron artifact of the same kind: --force replaces tron's own output, never a user's files."""
    out = Path(out)
    for source in inputs:
        if _overlaps(out, Path(source)):
            where = "is" if out.resolve() == Path(source).resolve() else "overlaps"
            raise UsageError(f"--out {out} {where} {source}, which this command reads: nothing was written", "Write elsewhere (another --out)")
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a {kind} directory: nothing was touched", "Write elsewhere (another --out)")
    found = directory_kind(out)
    if found == kind or not any(entry.name != ".lock" for entry in out.iterdir()):
        return
    what = f"a {found}" if found else f"files tron did not write ({', '.join(sorted(entry.name for entry in out.iterdir())[:3])})"
    raise UsageError(f"--out {out} holds {what}, not a {kind}: --force replaces only a {kind}, so nothing was touched", "Write elsewhere (another --out)")


@contextlib.contextmanager
def atomic_directory(path: Path, force: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place only when it is complete.

    An existing `path` is replaced only with `force`; until the rename a reader sees the old directory or none.
    An OSError of writing it becomes an `OutputError` naming `path`, and the temporary directory is removed.
    """
    path = Path(path)
    if path.exists() and not force:
        raise ArtifactError(f"{path} exists already", "Pass --force to replace it, or choose another output")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with writing(path, tmp, path):
            os.chmod(tmp, 0o777 & ~_umask())
            yield tmp
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()
