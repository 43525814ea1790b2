"""JSON documents of the contract (`dataset.json`, `manifest.json`, a run's `config.json`, `summary.json`,
`metrics.json`, a bundle's `config.json`, a checkpoint's `state.json`): written with their schema tag and strict
JSON, read back with the fields each kind declares (`DOCUMENT_FIELDS`) checked before any value is used."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tron_cli.artifacts.files import write_bytes, writing
from tron_cli.artifacts.schemas import SPLITS, is_safe_name, readable, redo_hint, schema_tag, whole_number
from tron_cli.errors import ArtifactError
from tron_cli.safe_json import JsonRefused, parse
from tron_cli.version import __version__


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float (at any depth) replaced by None: JSON has no such numbers, and a
    record that holds one must still parse everywhere (null is what JSON has for "no value")."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def write_json(path: Path, document: Mapping[str, Any], kind: str | None = None) -> None:
    """Write `document` atomically; with `kind`, stamp `"schema": "<kind>/1"` and the tron version first."""
    body: dict[str, Any] = {}
    if kind is not None:
        body["schema"] = schema_tag(kind)
        body["tron_version"] = __version__
    body.update(document)
    write_bytes(path, (json.dumps(finite(body), indent=2, allow_nan=False) + "\n").encode())


def read_json(path: Path, kind: str) -> dict[str, Any]:
    """Read a JSON document of `kind`, checking that it exists, parses, has the current schema version and that
    the fields its kind declares (`DOCUMENT_FIELDS`) have the declared types and ranges."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing", redo_hint(kind))
    try:
        document = parse(path.read_bytes())
    except JsonRefused as error:
        raise ArtifactError(f"{error.at(path)} (truncated or corrupt?)", redo_hint(kind)) from None
    if not isinstance(document, dict):
        raise ArtifactError(f"{path} is not a JSON object", redo_hint(kind))
    found = document.get("schema")
    if not readable(kind, found):
        raise ArtifactError(f"{path} has schema {found!r}, expected {schema_tag(kind)!r}", redo_hint(kind))
    check_fields(document, DOCUMENT_FIELDS.get(kind, {}), path, kind)
    return document


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one line to a JSON-lines log (history.jsonl). A failed write is cut off again (an `OutputError`),
    so the log never keeps half a line."""
    line = json.dumps(finite(record), allow_nan=False) + "\n"
    with writing(path):
        with open(path, "a") as handle:
            size = handle.tell()
            try:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                with contextlib.suppress(OSError):
                    handle.truncate(size)
                raise


MAX_ITEMS = (1 << 31) - 1  # dense item ids are int32


@dataclass(frozen=True)
class Field:
    """What a field of a JSON document must hold: `test` on its value, `expected` said when it fails."""

    expected: str
    test: Callable[[Any], bool]
    required: bool = True
    fields: Mapping[str, Field] | None = None  # an object's own fields, checked in turn


def _object(fields: Mapping[str, Field], required: bool = True) -> Field:
    return Field("an object", lambda v: isinstance(v, dict), required, fields)


_TEXT = Field("a string", lambda v: isinstance(v, str))
_NAME = Field("a name without a path separator", lambda v: isinstance(v, str) and is_safe_name(v))
_ITEMS = Field(f"a whole number of items from 1 to {MAX_ITEMS:,}", whole_number(1, MAX_ITEMS))
_COUNT = Field("a whole number >= 0", whole_number(0))
_DIGEST = Field("a sha256 (64 hex digits) or null", lambda v: v is None or (isinstance(v, str) and len(v) == 64), required=False)
_OPTIONAL_OBJECT = Field("an object or null", lambda v: v is None or isinstance(v, dict), required=False)
_MODEL = _object({"type": _TEXT, "n_items": _ITEMS})

# The fields each kind of document must have (or, `required=False`, may have) and what they hold; other fields
# are free. A reader relies on these, so a document that breaks them is refused when it is read, naming the field,
# before any of its sizes is used (a dataset.json claiming 10^12 items allocates nothing).
DOCUMENT_FIELDS: dict[str, Mapping[str, Field]] = {
    "dataset": {
        "name": _NAME,
        "n_items": _ITEMS,
        "splits": Field(f"a list of split names ({', '.join(SPLITS)})", lambda v: isinstance(v, list) and bool(v) and all(x in SPLITS for x in v)),
        "targets": Field("'all' or 'last'", lambda v: v in ("all", "last")),
        "catalogue_sha256": _DIGEST,
        "parameters": _OPTIONAL_OBJECT,
        "evaluation": _object(
            {"select_on": _TEXT, "exclude_seen": Field("true or false", lambda v: isinstance(v, bool))},
            required=False,
        ),
    },
    "run": {
        "name": Field(_NAME.expected, _NAME.test, required=False),
        "dataset": _object({"path": _TEXT, "n_items": Field(_ITEMS.expected, _ITEMS.test, required=False), "catalogue_sha256": _DIGEST}),
        "model": _MODEL,
        "train": _OPTIONAL_OBJECT,
    },
    "bundle": {
        "name": Field(_NAME.expected, _NAME.test, required=False),
        "model": _MODEL,
        "n_items": _ITEMS,
        "max_length": Field("a whole number >= 1", whole_number(1), required=False),
        "catalogue_sha256": _DIGEST,
        "event_types": Field("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), required=False),
        "index": _OPTIONAL_OBJECT,
    },
    "summary": {"epochs": _COUNT, "best_epoch": Field("a whole number or null", lambda v: v is None or whole_number(0)(v), required=False)},
    "checkpoint": {
        "epoch": _COUNT,
        "done": _COUNT,
        "global_step": _COUNT,
        "world": Field("a whole number >= 1", whole_number(1), required=False),
        "history": Field("a list of objects", lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), required=False),
        "optimizers": Field("a list of objects", lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v)),
        "rng": _object({"cpu": _TEXT, "generator": _TEXT}),
        "partial": _OPTIONAL_OBJECT,
    },
    "manifest": {
        "name": _NAME,
        "files": Field(
            "a list of {path, size, sha256}",
            lambda v: (
                isinstance(v, list)
                and all(
                    isinstance(e, dict) and isinstance(e.get("path"), str) and whole_number(0)(e.get("size")) and isinstance(e.get("sha256"), str) for e in v
                )
            ),
        ),
    },
    "metrics": {"metrics": _object({})},
}


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_fields(document: Mapping[str, Any], fields: Mapping[str, Field], path: Path, kind: str, prefix: str = "") -> None:
    """Refuse a document whose declared fields are missing or hold something else, naming the first such field."""
    for key, field in fields.items():
        name = f"{prefix}{key}"
        if key not in document:
            if field.required:
                raise ArtifactError(f"{path}: field {name!r} is missing", redo_hint(kind))
            continue
        value = document[key]
        if not field.test(value):
            raise ArtifactError(f"{path}: field {name!r} is {_shown(value)}, expected {field.expected}", redo_hint(kind))
        if field.fields is not None and isinstance(value, dict):
            check_fields(value, field.fields, path=path, kind=kind, prefix=f"{name}.")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    if not Path(path).exists():
        return records
    for line in Path(path).read_text().splitlines():
        try:
            records.append(parse(line))
        except JsonRefused:
            break  # a line torn by a kill: everything before it is intact
    return records
