"""Sessions to recommend for, read batch by batch: JSON lines, OTTO's event lines, or Parquet.

JSON lines are `{"session": ID, "items": [ITEM, ...]}` or OTTO's `{"session": ID, "events": [{"aid", "ts",
"type"}, ...]}` (kept: the event types the model's dataset kept, in time order); Parquet has columns `session`
and `items`. Item ids are raw ids compared in the catalogue's type: an integer catalogue takes integers (or
strings of one), a string catalogue strings (or integers by their decimal spelling). A malformed record is an
`InputFormatError` naming the file and line (or row). Used by `tron recommend` and the server.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tron_cli.errors import InputFormatError, UsageError
from tron_cli.reporting import Reporter
from tron_cli.safe_json import JsonRefused, parse

INT64_RANGE = (-(1 << 63), (1 << 63) - 1)
_INTEGER = re.compile(r"-?[0-9]+")
LINE_HINT = 'Each line must be {"session": ID, "items": [ITEM, ...]} or OTTO\'s {"session": ID, "events": [{"aid": ITEM, "ts": MS, "type": "clicks"}, ...]}'


@dataclass
class Batch:
    """Sessions read from the input: session s has raw ids items[offsets[s]:offsets[s+1]] in click order."""

    sessions: list | pa.Array  # as given: JSON values, or the Parquet column
    where: list[str]  # "FILE:LINE" (or "FILE: row N") of each session, for messages
    offsets: np.ndarray  # int64 (S+1,)
    items: np.ndarray  # raw ids in the catalogue's type (int64 or str)
    dropped: np.ndarray | None = None  # int64 (S,): ids left out before `items` because no catalogue id can equal them
    order_weights: np.ndarray | None = None  # float64 (S,): a JSON line's "order_weight", NaN where it has none

    def __len__(self) -> int:
        return len(self.where)


class RecordProblem(Exception):
    """A problem with one input record; the reader adds where it is."""


def raw_ids(values: list, numeric: bool, label) -> list:
    """Raw ids as the catalogue compares them: an int catalogue takes integers or strings of one, a string
    catalogue takes strings or integers (by their decimal spelling). `label(i)` names value i in messages."""
    wanted = int if numeric else str
    if all(type(value) is wanted for value in values):
        return values
    out = []
    for index, value in enumerate(values):
        if type(value) is wanted:
            out.append(value)
        elif numeric and isinstance(value, str) and _INTEGER.fullmatch(value):
            out.append(int(value))
        elif not numeric and type(value) is int:
            out.append(str(value))
        else:
            raise RecordProblem(
                f"{label(index)} is {json.dumps(value)}, not {'an integer' if numeric else 'a string'} id (the catalogue's ids are {'integers' if numeric else 'strings'})"
            )
    return out


def usable_ids(values: list, numeric: bool, label) -> tuple[list, list[int]]:
    """(raw ids, positions in `values`) of the values that can be ids of the catalogue: a string that is no integer
    can never be one of an integer catalogue's ids, so it is an unknown id (skipped and counted by the caller), not a
    malformed record. Other values of the wrong type, and integers beyond 64 bits, are a `RecordProblem`."""
    positions = [i for i, value in enumerate(values) if not (numeric and isinstance(value, str) and not _INTEGER.fullmatch(value))]
    ids = raw_ids([values[i] for i in positions], numeric, lambda i: label(positions[i]))
    if numeric:
        for index, value in enumerate(ids):
            if not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
                raise RecordProblem(f"{label(positions[index])} is {value}, outside the range of the catalogue's 64-bit ids")
    return ids, positions


def record_items(record: Any, expect: str, numeric: bool, event_types: tuple[str, ...]) -> tuple[list, int]:
    """(the raw ids of one JSON line, oldest first; the ids left out as unknown because they cannot be the
    catalogue's: strings that are no integer, for an integer catalogue). `expect` is ndjson, otto or auto (by the
    record's keys).

    OTTO events keep the types the model's dataset kept, sorted by time (stably, as tron preprocess sorts)."""
    if not isinstance(record, dict):
        raise RecordProblem("a line must be a JSON object")
    if "session" not in record:
        raise RecordProblem('field "session" is missing')
    kind = expect if expect != "auto" else ("otto" if "events" in record and "items" not in record else "ndjson")
    if kind == "ndjson":
        items = record.get("items")
        if not isinstance(items, list):
            raise RecordProblem('field "items" is missing or not a list' + ("" if expect != "auto" else ' (and there are no OTTO "events")'))
        ids, positions = usable_ids(items, numeric, lambda i: f"items[{i}]")
        return ids, len(items) - len(positions)
    events = record.get("events")
    if not isinstance(events, list):
        raise RecordProblem('field "events" is missing or not a list')
    for index, event in enumerate(events):
        if not isinstance(event, dict) or "aid" not in event:
            raise RecordProblem(f'events[{index}] is not an object with an "aid"')
        ts, kind_of_event = event.get("ts"), event.get("type")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool):
            raise RecordProblem(f"events[{index}].ts is missing or not a number (got {json.dumps(ts)})")
        if not isinstance(kind_of_event, str):
            raise RecordProblem(f"events[{index}].type is missing or not a string (got {json.dumps(kind_of_event)})")
    aids, positions = usable_ids([event["aid"] for event in events], numeric, lambda i: f"events[{i}].aid")
    kept = [(events[i]["ts"], aid) for i, aid in zip(positions, aids) if events[i]["type"] in event_types]
    kept.sort(key=lambda pair: pair[0])  # by time only: events at the same time keep their order
    dropped = sum(1 for event in events if event["type"] in event_types) - len(kept)
    return [aid for _, aid in kept], dropped


def _id_array(values: list, numeric: bool) -> np.ndarray:
    if not numeric:
        return np.array(values, dtype=str) if values else np.zeros(0, dtype=str)
    return np.array(values, dtype=np.int64)  # every value was checked to be a 64-bit integer


def _json_batches(
    stream, name: str, expect: str, numeric: bool, event_types: tuple[str, ...], batch_size: int, skip: Callable[[str, str], None] | None = None
) -> Iterator[Batch]:
    """Batches of the JSON lines of `stream`. A malformed line is an `InputFormatError`, or with `skip`, reported
    to `skip(where, reason)` and left out."""

    def batch() -> Batch:
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        given = np.array(weights, dtype=np.float64) if any(not np.isnan(w) for w in weights) else None
        return Batch(sessions, where, offsets=offsets, items=_id_array(flat, numeric), dropped=np.array(dropped, dtype=np.int64), order_weights=given)

    sessions, where, lengths, flat, dropped, weights = [], [], [], [], [], []
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            try:
                record = parse(line)
            except JsonRefused as error:
                raise RecordProblem(str(error)) from None
            ids, unknown = record_items(record, expect, numeric, event_types)
            weight = record.get("order_weight")
            if weight is not None and not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and 0 <= weight <= 1):
                raise RecordProblem(f"order_weight is {json.dumps(weight)}, not a number from 0 to 1 (the order weight of the preference [1 - w, w])")
        except RecordProblem as problem:
            if skip is None:
                raise InputFormatError(f"{name}:{number}: {problem}", LINE_HINT) from None
            skip(f"{name}:{number}", str(problem))
            continue
        sessions.append(record["session"])
        where.append(f"{name}:{number}")
        lengths.append(len(ids))
        dropped.append(unknown)
        flat.extend(ids)
        weights.append(np.nan if weight is None else float(weight))
        if len(sessions) == batch_size:
            yield batch()
            sessions, where, lengths, flat, dropped, weights = [], [], [], [], [], []
    if sessions:
        yield batch()


def _parquet_values(values: pa.Array, numeric: bool, path: Path | str, row_of) -> tuple[np.ndarray, np.ndarray | None]:
    """(raw ids of the catalogue's type, which of the flat `items` values of a table's batch they are, or None for
    all): strings that are no integer cannot be an integer catalogue's ids, and are left out as unknown ids."""
    if values.null_count:
        raise InputFormatError(
            f"{path}: row {row_of(int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0]))}: items holds a null id", "Remove the nulls"
        )
    if pa.types.is_integer(values.type):
        if pa.types.is_uint64(values.type) and numeric and pc.max(values).as_py() is not None and pc.max(values).as_py() > INT64_RANGE[1]:
            raise InputFormatError(f"{path}: an item id is outside the range of the catalogue's 64-bit ids")
        return (values.to_numpy().astype(np.int64) if numeric else values.cast(pa.string()).to_numpy(zero_copy_only=False).astype(str)), None
    if not numeric:
        return values.to_numpy(zero_copy_only=False).astype(str), None
    integer = pc.match_substring_regex(values, r"^-?[0-9]+$").to_numpy(zero_copy_only=False)
    try:
        return values.filter(pa.array(integer)).cast(pa.int64()).to_numpy(), integer
    except pa.ArrowInvalid:
        raise InputFormatError(f"{path}: an item id is outside the range of the catalogue's 64-bit ids") from None


def _open_parquet_input(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise InputFormatError(f"{path} is not a readable Parquet file ({error})") from None


def check_session_table(schema: pa.Schema, path: Path | str) -> None:
    """A table of sessions has columns session and items, items a list of integer or string ids."""
    missing = [column for column in ("session", "items") if column not in schema.names]
    if missing:
        raise InputFormatError(
            f"{path} has no column {missing[0]!r} (it has {', '.join(schema.names)})", "Give a table with columns session and items (a list of item ids)"
        )
    items_type = schema.field("items").type
    if not (pa.types.is_list(items_type) or pa.types.is_large_list(items_type)) or not (
        pa.types.is_integer(items_type.value_type) or pa.types.is_string(items_type.value_type) or pa.types.is_large_string(items_type.value_type)
    ):
        raise InputFormatError(f"{path}: column items is {items_type}, expected a list of integer or string ids")


def table_batches(record_batches: Iterable[pa.RecordBatch], path: Path | str, numeric: bool) -> Iterator[Batch]:
    """One `Batch` per record batch of a table of sessions (`check_session_table`); `path` names it in messages."""
    first_row = 0
    for record_batch in record_batches:
        items = record_batch.column("items")
        if items.null_count:
            null_row = first_row + int(np.flatnonzero(items.is_null().to_numpy(zero_copy_only=False))[0]) + 1
            raise InputFormatError(f"{path}: row {null_row}: items is null", "Give every session a list (possibly empty)")
        offsets = np.asarray(items.offsets, dtype=np.int64)
        offsets = offsets - offsets[0]
        base = first_row

        def row_of(position: int, offsets=offsets, base=base) -> int:
            return base + int(np.searchsorted(offsets, position, side="right"))

        values, usable = _parquet_values(items.flatten(), numeric, path, row_of)
        dropped = None
        if usable is not None:  # unknown ids left out: each session's share of them, and the offsets of the rest
            owner = np.repeat(np.arange(len(items)), np.diff(offsets))
            dropped = np.bincount(owner[~usable], minlength=len(items)).astype(np.int64)
            offsets = np.concatenate([[0], np.cumsum(np.bincount(owner[usable], minlength=len(items)))]).astype(np.int64)
        where = [f"{path}: row {first_row + i + 1}" for i in range(len(items))]
        yield Batch(record_batch.column("session"), where, offsets=offsets, items=values, dropped=dropped)
        first_row += len(items)


def _parquet_batches(parquet: pq.ParquetFile, path: Path, numeric: bool, batch_size: int) -> Iterator[Batch]:
    check_session_table(parquet.schema_arrow, path)
    try:
        yield from table_batches(parquet.iter_batches(batch_size=batch_size, columns=["session", "items"]), path, numeric)
    except (pa.ArrowException, OSError) as error:
        raise InputFormatError(f"{path} is truncated or corrupt ({error})") from None


def input_kind(input_path: str, input_format: str) -> str:
    if input_format == "parquet" and input_path == "-":
        raise UsageError("Parquet input needs a file: --input FILE.parquet, not stdin")
    if input_format == "auto":
        return "parquet" if input_path != "-" and Path(input_path).suffix.lower() in (".parquet", ".pq") else "auto"
    return input_format


@contextlib.contextmanager
def read_batches(
    input_path: str,
    input_format: str,
    numeric: bool,
    event_types: tuple[str, ...],
    batch_size: int,
    report: Reporter,
    skip: Callable[[str, str], None] | None = None,
) -> Iterator[tuple[Iterator[Batch], int | None]]:
    """(batches, number of sessions when the input says so) of `input_path` ('-' = stdin); with `skip`, malformed
    JSON lines are reported to it and left out (`_json_batches`)."""
    kind = input_kind(input_path, input_format)
    if kind == "parquet":
        parquet = _open_parquet_input(Path(input_path))
        yield _parquet_batches(parquet, Path(input_path), numeric, batch_size), parquet.metadata.num_rows
        return
    if input_path == "-":
        if sys.stdin.isatty():
            report.info("Reading sessions from stdin (one JSON object a line; Ctrl-D ends the input).")
        yield _json_batches(sys.stdin.buffer, "stdin", expect=kind, numeric=numeric, event_types=event_types, batch_size=batch_size, skip=skip), None
        return
    with open(input_path, "rb") as handle:
        yield _json_batches(handle, input_path, expect=kind, numeric=numeric, event_types=event_types, batch_size=batch_size, skip=skip), None
