"""Sessions as flat arrays and their Parquet files (`train/valid/test.parquet`, schema sessions/2), the catalogue
(`items.parquet`) and a dataset directory (`Dataset`, `read_dataset`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tron_cli.artifacts.documents import read_json
from tron_cli.artifacts.files import atomic_path
from tron_cli.artifacts.schemas import SCHEMA_KEY, readable, redo_hint, schema_tag
from tron_cli.errors import ArtifactError

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


@dataclass
class ExtraEvents:
    """A session's events beside its clicks (carts and orders), as flat arrays: session s owns
    offsets[s]:offsets[s+1] of items/ts/types, in time order."""

    offsets: np.ndarray  # int64 (S+1,)
    items: np.ndarray  # int32 (X,)
    ts: np.ndarray  # int64 (X,)
    types: np.ndarray  # int8 (X,): CART or ORDER

    @classmethod
    def none(cls, n_sessions: int) -> ExtraEvents:
        """No such event in any of `n_sessions` sessions."""
        return cls(np.zeros(n_sessions + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int8))

    def select(self, index: np.ndarray) -> ExtraEvents:
        """The events of sessions `index` (integer positions), in that order."""
        lengths = np.diff(self.offsets)[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        events = range_indices(self.offsets[:-1][index], lengths)
        return ExtraEvents(offsets, self.items[events], self.ts[events], self.types[events])

    def keep(self, mask: np.ndarray) -> ExtraEvents:
        """Only the events where `mask` holds; sessions keep their place."""
        owner = np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))
        offsets = np.zeros(len(self.offsets), dtype=np.int64)
        np.cumsum(np.bincount(owner[mask], minlength=len(self.offsets) - 1), out=offsets[1:])
        return ExtraEvents(offsets, self.items[mask], self.ts[mask], self.types[mask])

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
    extra: ExtraEvents | None = None

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
        events = range_indices(starts, lengths)
        extra = None if self.extra is None else self.extra.select(index)
        return Sessions(self.session[index], offsets, items=self.items[events], ts=self.ts[events], extra=extra)


def range_indices(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate arange(start, start + length) for every pair, without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(starts - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


def _list_array(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))


def sessions_table(sessions: Sessions) -> pa.Table:
    """Sessions as a table of schema sessions/2; sessions without other events get empty lists."""
    extra = sessions.extra if sessions.extra is not None else ExtraEvents.none(len(sessions))
    return pa.Table.from_arrays(
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


def write_sessions(path: Path, sessions: Sessions, row_group_size: int = 1 << 20) -> None:
    """Write sessions Parquet (schema sessions/2) atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(sessions_table(sessions), tmp, row_group_size=row_group_size, compression="zstd")


@contextlib.contextmanager
def sessions_writer(path: Path) -> Iterator[Callable[[pa.Table], None]]:
    """Write sessions Parquet (schema sessions/2) atomically, a row group per table (of `sessions_table`) given to
    the function yielded, so that the sessions never need to be in memory at once."""
    with atomic_path(path) as tmp:
        schema = SESSIONS_SCHEMA.with_metadata({SCHEMA_KEY: schema_tag("sessions").encode()})
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            yield lambda table: writer.write_table(table.replace_schema_metadata(schema.metadata), row_group_size=max(1, table.num_rows))


def _open_parquet(path: Path, kind: str) -> tuple[pq.ParquetFile, str | None]:
    """(the file, its `tron.schema` tag); the tag is None for a file another tool wrote without one (Spark cannot
    set it), which its reader then checks by its columns alone (docs/artifacts.md: writing a dataset elsewhere)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing", redo_hint(kind))
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise ArtifactError(f"{path} is not a readable Parquet file ({error})", redo_hint(kind)) from None
    tag = (parquet.schema_arrow.metadata or {}).get(SCHEMA_KEY)
    if tag is None:
        return parquet, None
    if not readable(kind, tag.decode()):
        raise ArtifactError(f"{path} has schema {tag.decode()!r}, expected {schema_tag(kind)!r}", redo_hint(kind))
    return parquet, tag.decode()


def _plain_type(kind: pa.DataType) -> pa.DataType:
    """A column's type without what writers spell differently: a list's element name and nullability (pyarrow's
    `item`, Spark's `element`)."""
    return pa.list_(kind.value_type) if pa.types.is_list(kind) or pa.types.is_large_list(kind) else kind


def _has_columns(schema: pa.Schema, expected: pa.Schema) -> bool:
    return schema.names == expected.names and all(_plain_type(field.type) == _plain_type(want.type) for field, want in zip(schema, expected))


def _flat(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 (S+1,), values) of a list column, whatever its chunking."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    offsets = np.asarray(array.offsets, dtype=np.int64)
    values = np.asarray(array.values)[offsets[0] : offsets[-1]]
    return offsets - offsets[0], values


def _files(path: Path, kind: str) -> list[Path]:
    """A Parquet file, or the parts of the directory that Spark writes in its place (`train.parquet/part-…`), in
    name order; what writers leave beside the parts (`_SUCCESS`, `.crc` checksums) is no part."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    files = sorted(entry for entry in path.iterdir() if entry.is_file() and not entry.name.startswith((".", "_")) and not entry.name.endswith(".crc"))
    if not files:
        raise ArtifactError(f"{path} is a directory without Parquet parts", redo_hint(kind))
    return files


def _read_checked(path: Path, kind: str, expected: Callable[[pq.ParquetFile, str | None], tuple[pa.Schema, str]]) -> tuple[pa.Table, str]:
    """The table of a file or directory of parts, each part's tag and columns checked (`expected`: the schema and
    version a part must have) and its types spelled as tron's; no value may be null."""
    tables, versions = [], set()
    for file in _files(path, kind):
        parquet, tag = _open_parquet(file, kind)
        schema, version = expected(parquet, tag)
        if not _has_columns(parquet.schema_arrow, schema):
            raise ArtifactError(f"{file} has columns {parquet.schema_arrow.names} of unexpected types", redo_hint(kind))
        try:
            table = parquet.read()
        except (pa.ArrowException, OSError) as error:
            raise ArtifactError(f"{file} is truncated or corrupt ({error})", redo_hint(kind)) from None
        for name in table.column_names:
            column = table.column(name)
            if column.null_count or (pa.types.is_list(column.type) and any(chunk.values.null_count for chunk in column.chunks)):
                raise ArtifactError(f"{file}: column {name!r} holds nulls", "Write every value; a session without other events has empty lists")
        tables.append(table.cast(schema))
        versions.add(version)
    if len(versions) > 1:
        raise ArtifactError(f"{path}: its parts are of different versions ({', '.join(sorted(versions))})", redo_hint(kind))
    return pa.concat_tables(tables), versions.pop()


def _sessions_expected(parquet: pq.ParquetFile, tag: str | None) -> tuple[pa.Schema, str]:
    """The schema a sessions file must have: its tag's, or for another tool's file the version its columns are."""
    version = tag or ("sessions/1" if parquet.schema_arrow.names == SESSIONS_V1.names else schema_tag("sessions"))
    return (SESSIONS_V1 if version == "sessions/1" else SESSIONS_SCHEMA), version


def read_sessions(path: Path) -> Sessions:
    """Read sessions Parquet written by `write_sessions` (version 2, or 1: clicks only) or by another tool (a file
    or a directory of parts, docs/artifacts.md), checking column types."""
    table, version = _read_checked(path, "sessions", _sessions_expected)
    offsets, items = _flat(table.column("items"))
    ts_offsets, ts = _flat(table.column("ts"))
    if not np.array_equal(offsets, ts_offsets):
        raise ArtifactError(f"{path}: items and ts lists differ in length", redo_hint("sessions"))
    extra = None
    if version != "sessions/1":
        extra_offsets, extra_items = _flat(table.column("extra_items"))
        lists = [_flat(table.column(name)) for name in ("extra_ts", "extra_types")]
        if any(not np.array_equal(extra_offsets, other) for other, _ in lists):
            raise ArtifactError(f"{path}: extra_items, extra_ts and extra_types lists differ in length", redo_hint("sessions"))
        types = lists[1][1].astype(np.int8, copy=False)
        if len(types) and not np.isin(types, list(EXTRA_TYPES.values())).all():
            raise ArtifactError(f"{path}: extra_types holds codes other than {sorted(EXTRA_TYPES.values())}", redo_hint("sessions"))
        extra = ExtraEvents(extra_offsets, extra_items.astype(np.int32, copy=False), lists[0][1].astype(np.int64, copy=False), types)
    return Sessions(
        np.asarray(table.column("session").combine_chunks(), dtype=np.int64),
        offsets,
        items=items.astype(np.int32, copy=False),
        ts=ts.astype(np.int64, copy=False),
        extra=extra,
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
    """The catalogue table (item, id, count), rows in dense-id order 1..N (a file, or a directory of parts)."""

    def expected(parquet: pq.ParquetFile, tag: str | None) -> tuple[pa.Schema, str]:
        schema = parquet.schema_arrow
        if schema.names != ["item", "id", "count"] or schema.field("item").type != pa.int32() or not pa.types.is_integer(schema.field("count").type):
            raise ArtifactError(f"{path} has columns {schema.names} ({schema.types}), expected item int32, id, count int64", redo_hint("items"))
        return pa.schema([pa.field("item", pa.int32()), schema.field("id"), pa.field("count", pa.int64())]), tag or schema_tag("items")

    table, _ = _read_checked(path, "items", expected)
    items = np.asarray(table.column("item"))
    if not np.array_equal(items, np.arange(1, len(items) + 1)):
        raise ArtifactError(f"{path}: item ids are not 1..N in order", redo_hint("items"))
    return table


def dataset_digest(path: Path) -> str:
    """sha256 of what a dataset directory holds: its splits' sessions, its catalogue and dataset.json but for when
    (`created`) and from which files (`source`) it was made. Two datasets with the same digest hold the same
    sessions, whatever their row groups (each column is hashed as one stream of list lengths and values)."""
    path = Path(path)
    digest = hashlib.sha256()
    document = json.loads((path / "dataset.json").read_text())
    digest.update(json.dumps({key: value for key, value in document.items() if key not in ("created", "source")}, sort_keys=True).encode())
    for split in document["splits"]:
        parquet = pq.ParquetFile(path / f"{split}.parquet")
        streams = {name: (hashlib.sha256(), hashlib.sha256()) for name in parquet.schema_arrow.names}
        for batch in parquet.iter_batches():
            for name, (lengths, values) in streams.items():
                column = batch.column(name)
                if pa.types.is_list(column.type):
                    offsets = np.asarray(column.offsets, dtype=np.int64)
                    lengths.update(np.diff(offsets).tobytes())
                    values.update(np.ascontiguousarray(column.values.slice(offsets[0], offsets[-1] - offsets[0])).tobytes())
                else:
                    values.update(np.ascontiguousarray(column).tobytes())
        for name, (lengths, values) in streams.items():
            digest.update(f"{split}.{name}".encode() + lengths.digest() + values.digest())
    items = pq.read_table(path / "items.parquet")
    for name in items.column_names:
        digest.update(name.encode() + str(items.schema.field(name).type).encode() + "\n".join(map(str, items.column(name).to_pylist())).encode())
    return digest.hexdigest()


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
    def evaluation(self) -> dict[str, Any]:
        """How this dataset is scored unless told otherwise: {"select_on": the validation metric that picks a run's
        epoch, "exclude_seen": whether a session's own clicks leave the ranking}, as dataset.json records it, else
        by its targets (`evaluation_protocol`)."""
        return dict(self.info.get("evaluation") or evaluation_protocol(self.targets))

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
                raise ArtifactError(f"{self.path / split}.parquet has item ids outside 1..{self.n_items}", redo_hint("dataset"))
        if sessions.extra is not None and not self.extra_types:
            # a click-only dataset of sessions schema 2 stores empty event lists: read as no events at all, so
            # that it reports no order metrics and a loss that needs orders is refused
            sessions = Sessions(sessions.session, sessions.offsets, sessions.items, sessions.ts)
        return sessions

    def items(self) -> pa.Table:
        table = read_items(self.path / "items.parquet")
        if table.num_rows != self.n_items:
            raise ArtifactError(f"{self.path}/items.parquet has {table.num_rows} items, dataset.json says {self.n_items}", redo_hint("dataset"))
        return table


def evaluation_protocol(targets: str) -> dict[str, Any]:
    """`Dataset.evaluation` by a dataset's `targets`: leave-one-out data ("last") is scored as its literature scores
    its test, by NDCG@10 without seen items; the rest by Recall@20 over every item."""
    return {"select_on": "ndcg@10", "exclude_seen": True} if targets == "last" else {"select_on": "recall@20", "exclude_seen": False}


def read_dataset(path: Path) -> Dataset:
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"dataset {path} does not exist", "Run: tron preprocess")
    return Dataset(path, read_json(path / "dataset.json", "dataset"))
