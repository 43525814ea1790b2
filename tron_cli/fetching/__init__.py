"""Getting files: HTTP and file:// downloads (`http`), safe archive extraction (`archives`), and the access
steps some sources need, Kaggle credentials and Google Drive's confirmation page (`sources`).

Nothing here knows a dataset by name or writes a manifest: that is the download stage (tron_cli/download.py).
Nothing here imports click or rich.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tron_cli.reporting import Task

CHUNK_BYTES = 1 << 20


def hash_file(path: Path, digest=None, task: Task | None = None):
    """`digest` (a new sha256 by default) updated with the bytes of `path`, advancing `task` as it reads."""
    digest = digest or hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
            if task is not None:
                task.update(advance=len(block))
    return digest
