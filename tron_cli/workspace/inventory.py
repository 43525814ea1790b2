"""What lies under $TRON_HOME (downloads, datasets, runs, bundles) and what one artifact holds, from the small
files each stage writes beside its data: JSON documents, Parquet footers and safetensors headers. Nothing here
loads a tensor or a table, so listing a home with OTTO in it takes milliseconds. Used by `tron ls` and `tron info`.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tron_cli.artifacts.schemas import MARKERS, SCHEMAS
from tron_cli.errors import MissingInputError, UsageError
from tron_cli.safe_json import JsonRefused, parse
from tron_cli.workspace import home

KINDS = ("download", "dataset", "run", "bundle")
# the figures each kind lists (a damaged entry has them all, empty)
COLUMNS_OF = {
    "download": ("source", "files", "parameters"),
    "dataset": ("items", "sessions", "targets", "source"),
    "run": ("dataset", "model", "loss", "epochs", "epochs_asked", "best_epoch", "valid_recall@20", "test_recall@20", "test_recall@20_measured"),
    "bundle": ("dataset", "model", "items", "run", "valid_recall@20", "onnx"),
}
PLURALS = {f"{kind}s": kind for kind in KINDS}  # `tron ls runs`
ROOTS = {"download": home.raw_root, "dataset": home.datasets_root, "run": home.runs_root, "bundle": home.bundles_root}


@dataclass
class Artifact:
    """One directory a stage wrote: its kind, where, how big, when, and the figures that tell it apart."""

    kind: str
    name: str
    path: Path
    size: int  # bytes of every file under it
    created: str | None  # ISO 8601, from its document (else the marker file's time)
    status: str  # "complete", or what is missing (a run not finished)
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "path": str(self.path), "size": self.size, "created": self.created, "status": self.status, **self.figures}


def _read(path: Path) -> dict[str, Any] | None:
    """A JSON document, or None when it is missing or unreadable (a listing shows what it can)."""
    try:
        document = parse(path.read_text())
    except (OSError, UnicodeDecodeError, JsonRefused):
        return None
    return document if isinstance(document, dict) else None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed while we walked
    return total


def _created(document: dict[str, Any] | None, marker: Path) -> str:
    if document and isinstance(document.get("created"), str):
        return document["created"]
    return dt.datetime.fromtimestamp(marker.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds")


def weights_stamp(run: Path) -> dict[str, Any]:
    """Which weights a run holds now (its model.safetensors's size and modification time): metrics.json records it,
    so a listing tells metrics of these weights from metrics of weights that training has replaced since."""
    stat = (Path(run) / "model.safetensors").stat()
    return {"file": "model.safetensors", "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _test_recall(path: Path) -> tuple[float | None, str | None]:
    """(test Recall@20 of the run's current weights, a label for how it was measured when not the default) from
    its metrics.json; (None, why) when there is none, it was measured on other weights or on another split."""
    document = _read(path / "metrics.json") or {}
    metrics = document.get("metrics") or {}
    if metrics.get("split") != "test" or "recall@20" not in metrics:
        return None, None
    try:
        current = weights_stamp(path)
    except OSError:
        return None, "no weights"
    if document.get("weights") != current:
        return None, "stale: evaluated on earlier weights"
    labels = [
        *(["exclude-seen"] if metrics.get("exclude_seen") else []),
        *([f"protocol {metrics['protocol']}"] if metrics.get("protocol", "all") != "all" else []),
        *([f"limit {metrics['limit']:g}"] if "limit" in metrics else []),
        *([f"transition weight {metrics['transition_weight']:g}"] if "transition_weight" in metrics else []),
    ]
    return metrics["recall@20"], ", ".join(labels) or None


def _valid_recall(valid: Any) -> float | None:
    """Validation Recall@20 (a MultiTRON run's at order weight 0, its click-only point)."""
    return valid.get("recall@20", valid.get("order_weight_0/recall@20")) if isinstance(valid, dict) else None


def _figures(kind: str, path: Path, document: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(status, figures) of one artifact from its documents."""
    if kind == "download":
        files = document.get("files") or []
        return "complete", {"source": document.get("source"), "files": len(files), "parameters": document.get("parameters") or {}}
    if kind == "dataset":
        counts = document.get("counts") or {}
        return "complete", {
            "items": document.get("n_items"),
            "sessions": {split: (counts.get(split) or {}).get("sessions") for split in document.get("splits", [])},
            "targets": document.get("targets"),
            "source": (document.get("source") or {}).get("preset") or (document.get("source") or {}).get("format"),
        }
    if kind == "run":
        summary = _read(path / "summary.json")
        test_recall, test_label = _test_recall(path)
        records = history(path)
        train = document.get("train") or {}
        best = max(records, key=lambda r: _valid_recall(r.get("valid")) or -1.0, default=None) if records else None
        if summary is not None:
            status = "complete"
        elif (path / "checkpoint" / "state.json").is_file():
            status = "unfinished"
        else:
            status = "started"
        return status, {
            "dataset": (document.get("dataset") or {}).get("name"),
            "model": (document.get("model") or {}).get("type"),
            "loss": train.get("loss"),
            "epochs": len(records),
            "epochs_asked": train.get("epochs"),
            "best_epoch": (summary or {}).get("best_epoch", best.get("epoch") if best else None),
            "valid_recall@20": _valid_recall((summary or {}).get("valid")) if summary else _valid_recall(best.get("valid") if best else None),
            "test_recall@20": test_recall,
            "test_recall@20_measured": test_label,
        }
    run = document.get("run") or {}
    return "complete", {
        "dataset": document.get("dataset"),
        "model": (document.get("model") or {}).get("type"),
        "items": document.get("n_items"),
        "run": run.get("name"),
        "valid_recall@20": _valid_recall(run.get("valid")),
        "onnx": document.get("onnx") is not None,
    }


def history(path: Path) -> list[dict[str, Any]]:
    """A run's history.jsonl, one record per epoch, up to a line torn by a kill."""
    records: list[dict[str, Any]] = []
    try:
        lines = (path / "history.jsonl").read_text().splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            records.append(parse(line))
        except JsonRefused:
            break  # a line torn by a kill
    return records


def artifact(kind: str, path: Path) -> Artifact | None:
    """The artifact of `kind` at `path`, or None when the directory is not one (no marker, another schema)."""
    marker = path / MARKERS[kind]
    document = _read(marker)
    if document is None or not str(document.get("schema", "")).startswith(f"{SCHEMAS[kind]}/"):
        return None
    status, figures = _figures(kind, path, document)
    return Artifact(kind, path.name, path=path.resolve(), size=_size(path), created=_created(document, marker), status=status, figures=figures)


def _damaged(kind: str, path: Path) -> Artifact | None:
    """A directory under a kind's root whose marker document is there but unreadable, or of another kind: listed as
    damaged (saying why), never silently left out; None for a directory with no marker at all."""
    marker = path / MARKERS[kind]
    if not marker.is_file():
        return None
    document = _read(marker)
    if document is None:
        why = f"damaged: {marker.name} is not a JSON object"
    else:
        why = f"damaged: {marker.name} has schema {document.get('schema')!r}, not a {kind}'s"
    created = dt.datetime.fromtimestamp(marker.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds")
    return Artifact(kind, path.name, path=path.resolve(), size=_size(path), created=created, status=why, figures=dict.fromkeys(COLUMNS_OF[kind]))


def list_artifacts(kinds: tuple[str, ...] = KINDS) -> list[Artifact]:
    """Every artifact of `kinds` under $TRON_HOME, newest first within each kind; temporary (hidden) dirs are skipped."""
    found: list[Artifact] = []
    for kind in kinds:
        root = ROOTS[kind]()
        if not root.is_dir():
            continue
        entries = []
        for path in root.iterdir():
            if path.is_dir() and not path.name.startswith(".") and not (kind == "dataset" and path == home.raw_root()):
                found_here = artifact(kind, path) or _damaged(kind, path)
                if found_here is not None:
                    entries.append(found_here)
        found += sorted(entries, key=lambda a: (a.created or "", a.name), reverse=True)
    return found


BY_NAME = ("run", "bundle", "dataset", "download")  # which kind a bare name means first (a bundle is named after its run)


def resolve(target: Path) -> tuple[str | None, Path, list[Path]]:
    """(kind, or None for a single file; its path; other artifacts of the same name) of what `tron info` was
    given: a path, or a name under $TRON_HOME (a run before its bundle, a dataset before its download)."""
    path = Path(target)
    if path.exists():
        if path.is_file():
            return None, path, []
        for kind in KINDS:
            if artifact(kind, path) is not None:
                return kind, path, []
        raise UsageError(f"{path} is not a tron download, dataset, run or bundle", "Give one of the paths that tron ls lists")
    if len(path.parts) == 1:
        matches = [(kind, ROOTS[kind]() / path) for kind in BY_NAME if artifact(kind, ROOTS[kind]() / path) is not None]
        if matches:
            return matches[0][0], matches[0][1], [where for _, where in matches[1:]]
    raise MissingInputError(f"{path} does not exist, and no artifact under {home.home()} has that name", "tron ls lists them")


def _file_schema(path: Path) -> dict[str, Any]:
    """What a file holds, from its header only: Parquet columns and rows, safetensors tensors, JSON keys."""
    entry: dict[str, Any] = {"name": path.name, "size": path.stat().st_size}
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as error:  # a corrupt or truncated file: say so, list the rest
            entry["error"] = str(error).splitlines()[0]
            return entry
        entry["rows"] = parquet.metadata.num_rows
        entry["columns"] = {f.name: str(f.type) for f in parquet.schema_arrow}
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as tensors:
                names = tensors.keys()  # a safetensors file, not a dict: it cannot be iterated
                slices = {name: tensors.get_slice(name) for name in names}
                entry["tensors"] = {name: {"shape": part.get_shape(), "dtype": part.get_dtype()} for name, part in slices.items()}
        except Exception as error:
            entry["error"] = str(error).splitlines()[0]
    elif path.suffix == ".json":
        document = _read(path)
        entry["schema"] = (document or {}).get("schema")
    return entry


def _files(path: Path) -> list[dict[str, Any]]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    return [{**_file_schema(p), "path": str(p.resolve())} for p in files]


def describe(target: Path) -> dict[str, Any]:
    """One artifact in full: kind, path, size, created, status and figures (as `tron ls`), its files with their
    schemas, and its documents (a dataset's parameters and counts, a run's config, summary and metrics, ...)."""
    kind, path, others = resolve(target)
    if kind is None:
        return {"kind": "file", "path": str(path.resolve()), **_file_schema(path), **({"document": _read(path)} if path.suffix == ".json" else {})}
    described = artifact(kind, path)
    assert described is not None
    out = {**described.to_dict(), "same_name": [str(other.resolve()) for other in others]}
    document = _read(path / MARKERS[kind]) or {}
    if kind == "download":
        out["manifest"] = document
    elif kind == "dataset":
        out.update({key: document.get(key) for key in ("source", "parameters", "counts", "item_id_type", "catalogue_sha256", "steps")})
        if "catalogue_from" in document:  # a catalogue grown from a parent's (tron preprocess --catalogue-from)
            out["catalogue_from"] = document["catalogue_from"]
    elif kind == "run":
        keys = ("dataset", "model", "train", "world_size", "torch_version", *(("init_from",) if "init_from" in document else ()))  # a warm start's parent
        out.update({"config": {key: document.get(key) for key in keys}})
        summary = _read(path / "summary.json")
        out["summary"] = summary and {**summary, "run": str(path.resolve())}  # where the run is now, not where it was trained from
        out["history"] = history(path)
        out["metrics"] = (_read(path / "metrics.json") or {}).get("metrics")
    else:
        out["config"] = {key: document.get(key) for key in ("model", "max_length", "n_items", "item_id_type", "event_types", "dataset", "run", "onnx")}
    out["files"] = _files(path)
    return out
