"""What the pipeline's functions return: a handle on one directory a stage wrote (a download, dataset, run or
bundle), with the figures `tron ls` and `tron info` show of it, read from its small JSON files when the handle is
made. A handle is path-like (`os.fspath`), so it goes wherever a path does: `tron_cli.train(dataset)`.

`ls()` lists the handles under $TRON_HOME, `info(path)` describes one artifact or file in full.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from tron_cli.errors import MissingInputError, UsageError
from tron_cli.safe_json import JsonRefused, parse
from tron_cli.workspace import inventory

PathLike = str | os.PathLike[str]


def _document(path: Path) -> dict[str, Any]:
    """A JSON document of the artifact, or {} when it is missing or unreadable (the figures show what they can)."""
    try:
        document = parse(path.read_text())
    except (OSError, UnicodeDecodeError, JsonRefused):
        return {}
    return document if isinstance(document, dict) else {}


def _without_tags(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key not in ("schema", "tron_version")}


class Artifact:
    """A directory a stage wrote: kind, name, path (absolute), size in bytes, created (ISO 8601, UTC), status
    ("complete", or how far an unfinished run got) and `figures`, the columns of its `tron ls` row."""

    kind: ClassVar[str] = ""
    name: str
    path: Path
    size: int
    created: str | None
    status: str
    figures: dict[str, Any]

    def __init__(self, path: PathLike) -> None:
        """The artifact at `path`, or of that name under $TRON_HOME (`Run("synthetic-sasrec-1")`)."""
        given = Path(path)
        where = given
        if not given.exists() and len(given.parts) == 1:
            where = inventory.ROOTS[self.kind]() / given
        found = inventory.artifact(self.kind, where)
        if found is None:
            marker = inventory.MARKERS[self.kind]
            raise MissingInputError(
                f"{given} is not a tron {self.kind} (no {marker} of schema {inventory.SCHEMAS[self.kind]}/...)",
                f"tron_cli.ls('{self.kind}s') lists the {self.kind}s under $TRON_HOME",
            )
        self._set(found)

    @classmethod
    def _of(cls, found: inventory.Artifact) -> Artifact:
        handle = cls.__new__(cls)
        handle._set(found)
        return handle

    def _set(self, found: inventory.Artifact) -> None:
        self.name = found.name
        self.path = found.path
        self.size = found.size
        self.created = found.created
        self.status = found.status
        self.figures = found.figures

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and isinstance(other, Artifact) and other.path == self.path

    def __hash__(self) -> int:
        return hash((type(self), self.path))

    def to_dict(self) -> dict[str, Any]:
        """What `tron ls --json` lists of it."""
        return {"kind": self.kind, "name": self.name, "path": str(self.path), "size": self.size, "created": self.created, "status": self.status, **self.figures}

    def info(self) -> dict[str, Any]:
        """Everything `tron info --json` shows: its files with their schemas, and its documents."""
        return inventory.describe(self.path)


class Download(Artifact):
    """A download (`tron_cli.download`): its files and `manifest.json`."""

    kind = "download"
    skipped: bool = False  # set by `tron_cli.download`: the download was complete already, nothing was fetched

    @property
    def manifest(self) -> dict[str, Any]:
        return _document(self.path / "manifest.json")

    @property
    def source(self) -> str | None:
        return self.figures.get("source")


class Dataset(Artifact):
    """A dataset (`tron_cli.preprocess`): sessions split into train, valid and test, and a catalogue of items."""

    kind = "dataset"

    @property
    def n_items(self) -> int:
        return int(self.figures.get("items") or 0)

    @property
    def sessions(self) -> dict[str, int | None]:
        """Sessions per split."""
        return dict(self.figures.get("sessions") or {})

    @property
    def targets(self) -> str | None:
        """Which clicks are targets: "all" (every click after a session's first) or "last" (leave-one-out)."""
        return self.figures.get("targets")

    @property
    def summary(self) -> dict[str, Any]:
        """What `tron preprocess --json` prints: the dataset's path, name, items, targets, unknown test targets and
        each split's sessions, events and targets, and the lineage of a catalogue grown from another's."""
        document = _document(self.path / "dataset.json")
        lineage = document.get("catalogue_from")
        return {
            "dataset": str(self.path),
            "name": document.get("name", self.name),
            "n_items": document.get("n_items"),
            "targets": document.get("targets"),
            "unknown_test_targets": document.get("unknown_test_targets"),
            **(document.get("counts") or {}),
            **({} if lineage is None else {"catalogue_from": lineage}),
        }


class Run(Artifact):
    """A training run (`tron_cli.train`): its config, history, selected weights and, once finished, its summary."""

    kind = "run"

    @property
    def model(self) -> str | None:
        return self.figures.get("model")

    @property
    def dataset(self) -> str | None:
        """The name of the dataset it trained on."""
        return self.figures.get("dataset")

    @property
    def epochs(self) -> int:
        """Epochs trained so far."""
        return int(self.figures.get("epochs") or 0)

    @property
    def best_epoch(self) -> int | None:
        return self.figures.get("best_epoch")

    @property
    def valid_recall(self) -> float | None:
        """Validation Recall@20 of the selected epoch."""
        return self.figures.get("valid_recall@20")

    @property
    def config(self) -> dict[str, Any]:
        """config.json: the dataset, the model's settings and every training option."""
        return _document(self.path / "config.json")

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per epoch (history.jsonl): loss, validation metrics, seconds."""
        return inventory.history(self.path)

    @property
    def summary(self) -> dict[str, Any] | None:
        """What `tron train --json` prints (summary.json), or None while the run is not finished."""
        document = _document(self.path / "summary.json")
        return _without_tags(document) if document else None


class Bundle(Artifact):
    """An exported model (`tron_cli.export`): weights, catalogue and config, maybe an item index; `tron_cli.load` it."""

    kind = "bundle"

    @property
    def model(self) -> str | None:
        return self.figures.get("model")

    @property
    def dataset(self) -> str | None:
        return self.figures.get("dataset")

    @property
    def n_items(self) -> int:
        return int(self.figures.get("items") or 0)

    @property
    def run(self) -> str | None:
        """The name of the run it was exported from."""
        return self.figures.get("run")

    @property
    def summary(self) -> dict[str, Any]:
        """What `tron export --json` prints: the bundle's path, files and format (and its item index's kind)."""
        document = _document(self.path / "config.json")
        index = document.get("index")
        files = sorted(p.name for p in self.path.iterdir() if p.is_file() and not p.name.startswith("."))
        return {
            "bundle": str(self.path),
            "files": files,
            "format": "onnx" if document.get("onnx") else "safetensors",
            **({"index": index["kind"]} if isinstance(index, dict) and "kind" in index else {}),
        }


HANDLES: dict[str, type[Artifact]] = {handle.kind: handle for handle in (Download, Dataset, Run, Bundle)}


def ls(*kinds: str) -> list[Artifact]:
    """The downloads, datasets, runs and bundles under $TRON_HOME (default: the current directory), newest first
    within each kind, as `tron ls` lists them; `kinds` ("downloads", "datasets", "runs", "bundles") narrow it."""
    wanted = []
    for kind in kinds:
        if kind not in inventory.PLURALS:
            raise UsageError(f"unknown kind {kind!r}", f"Use one of: {', '.join(inventory.PLURALS)}")
        wanted.append(inventory.PLURALS[kind])
    return [HANDLES[found.kind]._of(found) for found in inventory.list_artifacts(tuple(wanted) or inventory.KINDS)]


def info(path: PathLike) -> dict[str, Any]:
    """Everything `tron info --json` shows of a download, dataset, run or bundle (or its name under $TRON_HOME), or
    of one file: its figures, files with their schemas, and documents."""
    return inventory.describe(Path(path))
