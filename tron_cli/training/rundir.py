"""The run directory: an exclusive lock while training, config.json at the start, history as the checkpoint knows it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock

from tron_cli.artifacts.documents import read_json, write_json
from tron_cli.artifacts.files import write_bytes, writing
from tron_cli.artifacts.sessions import Dataset
from tron_cli.errors import TrainingError

LOCK = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run dir: a second `tron train` on it fails at once (the OS frees it on kill).

    filelock rather than fcntl by hand: the same lock on Linux, macOS and Windows."""
    fresh = not run_dir.exists()
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(run_dir / LOCK, timeout=0)
    with writing(run_dir):  # filelock.Timeout is an OSError too: it must not read as an unwritable dir
        try:
            lock.acquire()
        except filelock.Timeout:
            raise TrainingError(f"{run_dir} is being written by another tron train", "Wait for it, or train into another --out") from None
    try:
        yield
    except BaseException:
        if fresh and [p.name for p in run_dir.iterdir()] in ([LOCK], []):  # failed before writing anything: leave no empty run dir
            lock.release()
            (run_dir / LOCK).unlink(missing_ok=True)
            run_dir.rmdir()
        raise
    finally:
        lock.release()


def dataset_record(dataset: Dataset) -> dict[str, Any]:
    return {"path": str(dataset.path.resolve()), "name": dataset.name, "n_items": dataset.n_items, "catalogue_sha256": dataset.info.get("catalogue_sha256")}


def start_new(run_dir: Path, document: dict[str, Any]) -> None:
    """An empty run dir (but for its lock) with config.json."""
    for entry in run_dir.iterdir():
        if entry.name != LOCK:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    write_json(run_dir / "config.json", {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **document}, kind="run")


def start_resumed(run_dir: Path, train_section: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """config.json with the resumed options, summary.json removed, history.jsonl as the checkpoint knows it
    (a kill may have left a line the checkpoint never saw)."""
    document = read_json(run_dir / "config.json", "run")
    (run_dir / "summary.json").unlink(missing_ok=True)
    document["train"] = train_section
    write_json(run_dir / "config.json", {k: v for k, v in document.items() if k not in ("schema", "tron_version")}, kind="run")
    lines = "".join(json.dumps(record, allow_nan=False) + "\n" for record in history)
    write_bytes(run_dir / "history.jsonl", lines.encode())
