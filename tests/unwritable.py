"""Directories that cannot be written, for tests that run as root (where chmod stops no write) and without a mount.

`read_only(monkeypatch, root)` makes every way Python creates, opens for writing, renames, removes or
changes a file under `root` fail with EROFS, as a read-only mount does; `full_disk(monkeypatch, root)` lets files
be created but makes every fsync of a file under `root` fail with ENOSPC, as a full disk does once the written
data must reach it (tron fsyncs every file it writes before renaming it into place). Native writers (pyarrow,
safetensors) write into files that Python created first, so the first refused call comes before them.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _under(path, root: Path) -> bool:
    try:
        target = Path(os.path.abspath(os.fsdecode(path)))
    except TypeError:  # a file descriptor
        return False
    return target == root or root in target.parents


def _refuse(code: int, path) -> OSError:
    return OSError(code, os.strerror(code), os.fsdecode(path))


def read_only(monkeypatch, root: Path, code: int = errno.EROFS) -> None:
    """Every write under `root` fails with `code` (EROFS: a read-only file system; EACCES: no permission)."""
    root = Path(os.path.abspath(root))

    def guard(real, *which):
        def wrapped(*args, **kwargs):
            for index in which:
                if index < len(args) and _under(args[index], root):
                    raise _refuse(code, args[index])
            return real(*args, **kwargs)

        return wrapped

    real_open = os.open

    def os_open(path, flags, *args, **kwargs):
        if flags & WRITE_FLAGS and _under(path, root):
            raise _refuse(code, path)
        return real_open(path, flags, *args, **kwargs)

    real_builtin_open = builtins.open

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and _under(file, root):
            raise _refuse(code, file)
        return real_builtin_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)
    for name, which in (("mkdir", (0,)), ("rename", (0, 1)), ("replace", (0, 1)), ("unlink", (0,)), ("remove", (0,)), ("rmdir", (0,)), ("chmod", (0,))):
        monkeypatch.setattr(os, name, guard(getattr(os, name), *which))


def full_disk(monkeypatch, root: Path) -> None:
    """Files under `root` can be created and written, but never made durable: fsync fails with ENOSPC."""
    root = Path(os.path.abspath(root))
    real_fsync = os.fsync

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}")
        if _under(path, root):
            raise _refuse(errno.ENOSPC, path)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
