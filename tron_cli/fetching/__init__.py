"""Getting files: HTTP and file:// downloads (`http`), safe archive extraction (`archives`), and the access
steps some sources need, Kaggle credentials and Google Drive's confirmation page (`sources`).

Nothing here knows a dataset by name or writes a manifest: that is the download stage (tron_cli/stages/download.py).
Nothing here imports click or rich.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from tron_cli.reporting import Task

CHUNK_BYTES = 1 << 20


class _Progress(io.RawIOBase):
    """A binary file that advances a progress task by every byte read through it."""

    def __init__(self, raw, task: Task):
        self._raw, self._task = raw, task

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = self._raw.readinto(buffer)
        self._task.update(advance=size or 0)
        return size


def _read_digest(fileobj, name: str):
    """hashlib.file_digest for Python 3.10, which lacks it."""
    digest = hashlib.new(name)
    while block := fileobj.read(CHUNK_BYTES):
        digest.update(block)
    return digest


_file_digest = getattr(hashlib, "file_digest", _read_digest)


def hash_file(path: Path, task: Task | None = None):
    """The sha256 object of the bytes of `path`, advancing `task` as it reads; `.update` continues it."""
    with open(path, "rb") as handle:
        return _file_digest(handle if task is None else _Progress(handle, task), "sha256")
