"""Every on-disk schema of `tron`, its readers and writers, and atomic writes (version 1 of the contract).

Stages meet only through these files (docs/artifacts.md describes them):

- sessions Parquet (`train.parquet`, `valid.parquet`, `test.parquet`): one row per session,
  `session: int64`, `items: list<int32>` (dense ids 1..N, 0 = padding), `ts: list<int64>` (ms);
- `items.parquet`: `item: int32` (dense id), `id` (raw id in its source type), `count: int64` (train clicks);
- JSON documents (`dataset.json`, `manifest.json`, run `config.json`, `summary.json`, `metrics.json`, bundle
  `config.json`, checkpoint `state.json`), each with a `"schema": "<kind>/<version>"` field;
- tensors as safetensors, never pickle.

Readers check the version and say which command makes the file; writers go to a temporary name and rename,
so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tron_cli import __version__
from tron_cli.errors import ArtifactError, OutputError
from tron_cli.workspace.home import is_safe_name

SCHEMA_VERSION = 1
# kinds whose current version is not 1, and the earlier versions their readers still accept
VERSIONS = {"sessions": 2, "dataset": 2}
READABLE = {"sessions": (1, 2), "dataset": (1, 2)}
SCHEMA_KEY = b"tron.schema"

# Which command makes each kind of artifact: readers name it when a file is missing or outdated.
MADE_BY = {
    "manifest": "tron download NAME",
    "dataset": "tron preprocess",
    "sessions": "tron preprocess",
    "items": "tron preprocess",
    "run": "tron train",
    "summary": "tron train",
    "checkpoint": "tron train",
    "bundle": "tron export",
    "metrics": "tron evaluate",
    "tracking": "tron train --track",
    "study": "tron tune",
    "pareto": "tron pareto",
}

SESSIONS_V1 = pa.schema(
    [
        pa.field("session", pa.int64(), nullable=False),
        pa.field("items", pa.list_(pa.int32()), nullable=False),
        pa.field("ts", pa.list_(pa.int64()), nullable=False),
    ]
)
# version 2 adds the session's other events (carts, orders), in time order, beside its clicks
SESSIONS_SCHEMA = pa.schema(
    [
        *SESSIONS_V1,
        pa.field("extra_items", pa.list_(pa.int32()), nullable=False),
        pa.field("extra_ts", pa.list_(pa.int64()), nullable=False),
        pa.field("extra_types", pa.list_(pa.int8()), nullable=False),
    ]
)
CART, ORDER = 1, 2  # type codes of `extra_types`
EXTRA_TYPES = {"carts": CART, "orders": ORDER}

SPLITS = ("train", "valid", "test")

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # a header larger than this is hostile or corrupt


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def schema_tag(kind: str) -> str:
    """The tag written into a new artifact of `kind`: its current version."""
    return f"{kind}/{VERSIONS.get(kind, SCHEMA_VERSION)}"


def readable(kind: str, found: object) -> bool:
    """Whether a file tagged `found` is of a version of `kind` that this tron reads."""
    return found in {f"{kind}/{version}" for version in READABLE.get(kind, (VERSIONS.get(kind, SCHEMA_VERSION),))}


def _redo_hint(kind: str) -> str:
    return f"Re-run: {MADE_BY.get(kind, 'the command that made it')} (add --force to replace it)"


# --------------------------------------------------------------------------------------------- atomic writes

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


# --------------------------------------------------------------------------------------------- JSON documents


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
        raise ArtifactError(f"{path} is missing", _redo_hint(kind))
    try:
        document = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        line = getattr(error, "lineno", None)
        where = f"{path}:{line}" if line else str(path)
        raise ArtifactError(f"{where} is not valid JSON (truncated or corrupt)", _redo_hint(kind)) from None
    if not isinstance(document, dict):
        raise ArtifactError(f"{path} is not a JSON object", _redo_hint(kind))
    found = document.get("schema")
    if not readable(kind, found):
        raise ArtifactError(f"{path} has schema {found!r}, expected {schema_tag(kind)!r}", _redo_hint(kind))
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


# --------------------------------------------------------------------------------------------- document fields

MAX_ITEMS = (1 << 31) - 1  # dense item ids are int32


@dataclass(frozen=True)
class Field:
    """What a field of a JSON document must hold: `test` on its value, `expected` said when it fails."""

    expected: str
    test: Callable[[Any], bool]
    required: bool = True
    fields: Mapping[str, Field] | None = None  # an object's own fields, checked in turn


def _integer(low: int, high: int | None = None) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)


def _object(fields: Mapping[str, Field], required: bool = True) -> Field:
    return Field("an object", lambda v: isinstance(v, dict), required, fields)


_TEXT = Field("a string", lambda v: isinstance(v, str))
_NAME = Field("a name without a path separator", lambda v: isinstance(v, str) and is_safe_name(v))
_ITEMS = Field(f"a whole number of items from 1 to {MAX_ITEMS:,}", _integer(1, MAX_ITEMS))
_COUNT = Field("a whole number >= 0", _integer(0))
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
        "max_length": Field("a whole number >= 1", _integer(1), required=False),
        "catalogue_sha256": _DIGEST,
        "event_types": Field("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), required=False),
        "index": _OPTIONAL_OBJECT,
    },
    "summary": {"epochs": _COUNT, "best_epoch": Field("a whole number or null", lambda v: v is None or _integer(0)(v), required=False)},
    "checkpoint": {
        "epoch": _COUNT,
        "done": _COUNT,
        "global_step": _COUNT,
        "world": Field("a whole number >= 1", _integer(1), required=False),
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
                and all(isinstance(e, dict) and isinstance(e.get("path"), str) and _integer(0)(e.get("size")) and isinstance(e.get("sha256"), str) for e in v)
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
                raise ArtifactError(f"{path}: field {name!r} is missing", _redo_hint(kind))
            continue
        value = document[key]
        if not field.test(value):
            raise ArtifactError(f"{path}: field {name!r} is {_shown(value)}, expected {field.expected}", _redo_hint(kind))
        if field.fields is not None and isinstance(value, dict):
            check_fields(value, field.fields, path, kind, f"{name}.")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    if not Path(path).exists():
        return records
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line torn by a kill: everything before it is intact
    return records


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- sessions


@dataclass
class Events:
    """A session's events beside its clicks (carts and orders), as flat arrays: session s owns
    offsets[s]:offsets[s+1] of items/ts/types, in time order."""

    offsets: np.ndarray  # int64 (S+1,)
    items: np.ndarray  # int32 (X,)
    ts: np.ndarray  # int64 (X,)
    types: np.ndarray  # int8 (X,): CART or ORDER

    @classmethod
    def none(cls, n_sessions: int) -> Events:
        """No such event in any of `n_sessions` sessions."""
        return cls(np.zeros(n_sessions + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int8))

    def select(self, index: np.ndarray) -> Events:
        """The events of sessions `index` (integer positions), in that order."""
        lengths = np.diff(self.offsets)[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        events = expand_ranges(self.offsets[:-1][index], lengths)
        return Events(offsets, self.items[events], self.ts[events], self.types[events])

    def keep(self, mask: np.ndarray) -> Events:
        """Only the events where `mask` holds; sessions keep their place."""
        owner = np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))
        offsets = np.zeros(len(self.offsets), dtype=np.int64)
        np.cumsum(np.bincount(owner[mask], minlength=len(self.offsets) - 1), out=offsets[1:])
        return Events(offsets, self.items[mask], self.ts[mask], self.types[mask])

    def count(self, kind: int) -> int:
        return int((self.types == kind).sum())


@dataclass
class Sessions:
    """Sessions as flat arrays: ids (S,), offsets (S+1,) into items/ts (E,). Session s is items[offsets[s]:offsets[s+1]].

    `items` are the clicks, the sequence a model reads and predicts; `extra` holds the session's other events
    (carts, orders) when the data has them (sessions schema version 2), None otherwise."""

    session: np.ndarray  # int64 (S,)
    offsets: np.ndarray  # int64 (S+1,)
    items: np.ndarray  # int32 (E,)
    ts: np.ndarray  # int64 (E,)
    extra: Events | None = None

    def __len__(self) -> int:
        return len(self.session)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    def select(self, index: np.ndarray) -> Sessions:
        """The sessions at `index` (integer positions or a boolean mask), in that order."""
        if index.dtype == bool and index.all():
            return self  # nothing dropped: no copy of the events
        index = np.flatnonzero(index) if index.dtype == bool else np.asarray(index, dtype=np.int64)
        starts = self.offsets[:-1][index]
        lengths = self.lengths[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        events = expand_ranges(starts, lengths)
        extra = None if self.extra is None else self.extra.select(index)
        return Sessions(self.session[index], offsets, self.items[events], self.ts[events], extra)


def expand_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate arange(start, start + length) for every pair, without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(starts - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


def _list_array(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))


def write_sessions(path: Path, sessions: Sessions, row_group_size: int = 1 << 20) -> None:
    """Write sessions Parquet (schema sessions/2) atomically; sessions without other events get empty lists."""
    extra = sessions.extra if sessions.extra is not None else Events.none(len(sessions))
    table = pa.Table.from_arrays(
        [
            pa.array(np.asarray(sessions.session, dtype=np.int64)),  # asarray: no copy when the type is right already
            _list_array(sessions.offsets, np.asarray(sessions.items, dtype=np.int32)),
            _list_array(sessions.offsets, np.asarray(sessions.ts, dtype=np.int64)),
            _list_array(extra.offsets, np.asarray(extra.items, dtype=np.int32)),
            _list_array(extra.offsets, np.asarray(extra.ts, dtype=np.int64)),
            _list_array(extra.offsets, np.asarray(extra.types, dtype=np.int8)),
        ],
        schema=SESSIONS_SCHEMA.with_metadata({SCHEMA_KEY: schema_tag("sessions").encode()}),
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")


def _open_parquet(path: Path, kind: str) -> pq.ParquetFile:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing", _redo_hint(kind))
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise ArtifactError(f"{path} is not a readable Parquet file ({error})", _redo_hint(kind)) from None
    found = (parquet.schema_arrow.metadata or {}).get(SCHEMA_KEY, b"none").decode()
    if not readable(kind, found):
        raise ArtifactError(f"{path} has schema {found!r}, expected {schema_tag(kind)!r}", _redo_hint(kind))
    return parquet


def _flat(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 (S+1,), values) of a list column, whatever its chunking."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    offsets = np.asarray(array.offsets, dtype=np.int64)
    values = np.asarray(array.values)[offsets[0] : offsets[-1]]
    return offsets - offsets[0], values


def read_sessions(path: Path) -> Sessions:
    """Read sessions Parquet written by `write_sessions` (version 2, or 1: clicks only), checking column types."""
    parquet = _open_parquet(path, "sessions")
    version = (parquet.schema_arrow.metadata or {}).get(SCHEMA_KEY, b"").decode()
    if parquet.schema_arrow.remove_metadata() != (SESSIONS_V1 if version == "sessions/1" else SESSIONS_SCHEMA):
        raise ArtifactError(f"{path} has columns {parquet.schema_arrow.names} of unexpected types", _redo_hint("sessions"))
    try:
        table = parquet.read()
    except (pa.ArrowException, OSError) as error:
        raise ArtifactError(f"{path} is truncated or corrupt ({error})", _redo_hint("sessions")) from None
    offsets, items = _flat(table.column("items"))
    ts_offsets, ts = _flat(table.column("ts"))
    if not np.array_equal(offsets, ts_offsets):
        raise ArtifactError(f"{path}: items and ts lists differ in length", _redo_hint("sessions"))
    extra = None
    if version != "sessions/1":
        extra_offsets, extra_items = _flat(table.column("extra_items"))
        lists = [_flat(table.column(name)) for name in ("extra_ts", "extra_types")]
        if any(not np.array_equal(extra_offsets, other) for other, _ in lists):
            raise ArtifactError(f"{path}: extra_items, extra_ts and extra_types lists differ in length", _redo_hint("sessions"))
        types = lists[1][1].astype(np.int8, copy=False)
        if len(types) and not np.isin(types, list(EXTRA_TYPES.values())).all():
            raise ArtifactError(f"{path}: extra_types holds codes other than {sorted(EXTRA_TYPES.values())}", _redo_hint("sessions"))
        extra = Events(extra_offsets, extra_items.astype(np.int32, copy=False), lists[0][1].astype(np.int64, copy=False), types)
    return Sessions(
        np.asarray(table.column("session").combine_chunks(), dtype=np.int64),
        offsets,
        items.astype(np.int32, copy=False),
        ts.astype(np.int64, copy=False),
        extra,
    )


# --------------------------------------------------------------------------------------------- items


def write_items(path: Path, raw_ids: pa.Array, counts: np.ndarray) -> None:
    """Write the catalogue: dense id i (1..N) is raw id raw_ids[i-1] with `counts[i-1]` train clicks."""
    n = len(raw_ids)
    table = pa.table(
        {
            "item": pa.array(np.arange(1, n + 1, dtype=np.int32)),
            "id": raw_ids,
            "count": pa.array(np.asarray(counts, dtype=np.int64)),
        }
    ).replace_schema_metadata({SCHEMA_KEY: schema_tag("items").encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def catalogue_fingerprint(raw_ids: pa.Array) -> str:
    """sha256 of the raw ids in dense-id order: two datasets with the same value share one catalogue."""
    digest = hashlib.sha256(str(raw_ids.type).encode())
    if pa.types.is_integer(raw_ids.type):
        digest.update(np.ascontiguousarray(raw_ids.to_numpy(zero_copy_only=False), dtype=np.int64).tobytes())
    else:
        digest.update("\n".join(map(str, raw_ids.to_pylist())).encode())
    return digest.hexdigest()


def read_items(path: Path) -> pa.Table:
    """The catalogue table (item, id, count), rows in dense-id order 1..N."""
    parquet = _open_parquet(path, "items")
    try:
        table = parquet.read()
    except (pa.ArrowException, OSError) as error:
        raise ArtifactError(f"{path} is truncated or corrupt ({error})", _redo_hint("items")) from None
    if table.column_names != ["item", "id", "count"] or table.schema.field("item").type != pa.int32():
        raise ArtifactError(f"{path} has columns {table.column_names}, expected item, id, count", _redo_hint("items"))
    items = np.asarray(table.column("item"))
    if not np.array_equal(items, np.arange(1, len(items) + 1)):
        raise ArtifactError(f"{path}: item ids are not 1..N in order", _redo_hint("items"))
    return table


# --------------------------------------------------------------------------------------------- datasets


@dataclass
class Dataset:
    """A preprocessed dataset directory: dataset.json plus its Parquet files."""

    path: Path
    info: dict[str, Any]

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def n_items(self) -> int:
        return int(self.info["n_items"])

    @property
    def targets(self) -> str:
        """'all' (every position after the first is a target) or 'last' (leave-one-out)."""
        return self.info["targets"]

    @property
    def extra_types(self) -> tuple[str, ...]:
        """The other event types its sessions hold beside clicks ("carts", "orders"); none for datasets of
        version 1 or sources without them."""
        return tuple(self.info.get("extra_types", ()))

    def has(self, split: str) -> bool:
        return split in self.info["splits"]

    def sessions(self, split: str) -> Sessions:
        if not self.has(split):
            raise ArtifactError(
                f"{self.path} has no {split} split (it has {', '.join(self.info['splits'])})",
                "Re-run tron preprocess with a validation split (--valid-days or --valid-fraction)" if split == "valid" else None,
            )
        sessions = read_sessions(self.path / f"{split}.parquet")
        for items in (sessions.items, np.zeros(0, np.int32) if sessions.extra is None else sessions.extra.items):
            if len(items) and (items.min() < 1 or items.max() > self.n_items):
                raise ArtifactError(f"{self.path / split}.parquet has item ids outside 1..{self.n_items}", _redo_hint("dataset"))
        if sessions.extra is not None and not self.extra_types:
            # a click-only dataset of sessions schema 2 stores empty event lists: read as no events at all, so
            # that it reports no order metrics and a loss that needs orders is refused
            sessions = Sessions(sessions.session, sessions.offsets, sessions.items, sessions.ts)
        return sessions

    def items(self) -> pa.Table:
        table = read_items(self.path / "items.parquet")
        if table.num_rows != self.n_items:
            raise ArtifactError(f"{self.path}/items.parquet has {table.num_rows} items, dataset.json says {self.n_items}", _redo_hint("dataset"))
        return table


def read_dataset(path: Path) -> Dataset:
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"dataset {path} does not exist", "Run: tron preprocess")
    return Dataset(path, read_json(path / "dataset.json", "dataset"))


# --------------------------------------------------------------------------------------------- tensors

# safetensors' dtype names, as its header spells them
SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def save_tensors(path: Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    """Write torch tensors as safetensors atomically (shared storage is copied, never pickled)."""
    from safetensors.torch import save_file

    contiguous = {name: tensor.detach().contiguous().clone() for name, tensor in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=dict(metadata or {}))


@dataclass
class TensorHeader:
    """What a safetensors file declares before any tensor is read: each tensor's shape and dtype name, and the
    file's string metadata."""

    tensors: dict[str, tuple[tuple[int, ...], str]]
    metadata: dict[str, str]


def read_tensor_header(path: Path, kind: str) -> TensorHeader:
    """The header of a safetensors file, refusing an oversized or truncated header, one that is not JSON, and
    tensors whose data would lie beyond the file; reads only the header, so nothing is allocated for the tensors."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing", _redo_hint(kind))
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ArtifactError(f"{path} is truncated (no safetensors header)", _redo_hint(kind))
        (header_size,) = struct.unpack("<Q", head)
        if header_size > MAX_SAFETENSORS_HEADER or header_size > size - 8:
            raise ArtifactError(f"{path} declares a {header_size}-byte header in a {size}-byte file: refused", _redo_hint(kind))
        raw = handle.read(header_size)
    bad = f"{path} is not a valid safetensors file"
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactError(f"{bad} (its header is not JSON)", _redo_hint(kind)) from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{bad} (its header is not a JSON object)", _redo_hint(kind))
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ArtifactError(f"{bad} (its metadata is not a map of strings)", _redo_hint(kind))
    tensors: dict[str, tuple[tuple[int, ...], str]] = {}
    data_size = size - 8 - header_size
    for name, entry in header.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if (
            dtype not in SAFETENSORS_DTYPES
            or not isinstance(shape, list)
            or not all(_integer(0)(n) for n in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_integer(0)(n) for n in offsets)
        ):
            raise ArtifactError(f"{bad} (tensor {name!r} is not described by a dtype, a shape and two offsets)", _redo_hint(kind))
        if offsets[0] > offsets[1] or offsets[1] > data_size:
            raise ArtifactError(f"{bad} (tensor {name!r} lies beyond the end of the file: truncated or corrupt)", _redo_hint(kind))
        tensors[name] = (tuple(shape), dtype)
    return TensorHeader(tensors, metadata)


def check_tensor_header(header: TensorHeader, path: Path, kind: str, expected: Mapping[str, tuple[tuple[int, ...], Any]]) -> None:
    """Refuse a file whose tensors differ in name, shape or dtype from `expected` ({name: (shape, torch dtype)})."""
    missing = sorted(set(expected) - set(header.tensors))
    extra = sorted(set(header.tensors) - set(expected))
    if missing or extra:
        raise ArtifactError(f"{path}: tensors {missing or extra} {'missing' if missing else 'unexpected'}", _redo_hint(kind))
    for name, (shape, dtype) in expected.items():
        found_shape, found_dtype = header.tensors[name]
        wanted = str(dtype).removeprefix("torch.")
        if tuple(found_shape) != tuple(shape) or SAFETENSORS_DTYPES[found_dtype] != wanted:
            raise ArtifactError(
                f"{path}: tensor {name} is {tuple(found_shape)} torch.{SAFETENSORS_DTYPES[found_dtype]}, expected {tuple(shape)} {dtype}",
                _redo_hint(kind),
            )


def load_tensors(path: Path, kind: str, expected: Mapping[str, tuple[tuple[int, ...], Any]] | None = None) -> dict[str, Any]:
    """Read safetensors, refusing oversized headers, truncation, and (with `expected`) wrong names, shapes or
    dtypes; the header is checked before any tensor is read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    header = read_tensor_header(path, kind)
    if expected is not None:
        check_tensor_header(header, path, kind, expected)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ArtifactError(f"{path} is not a valid safetensors file ({error})", _redo_hint(kind)) from None
    if expected is not None:
        for name, (shape, dtype) in expected.items():
            tensor = tensors[name]
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ArtifactError(
                    f"{path}: tensor {name} is {tuple(tensor.shape)} {tensor.dtype}, expected {tuple(shape)} {dtype}",
                    _redo_hint(kind),
                )
    return tensors
