"""The recommend stage: sessions of raw item ids in, each session's top-k raw item ids out, batch by batch.

A model is a bundle (`tron export`) or a run dir; its catalogue (`items.parquet`) maps raw ids to dense ids
and back. Input is JSON lines (`{"session": ..., "items": [...]}` or OTTO's `{"session": ..., "events":
[...]}`) or Parquet (`session`, `items`); output is JSON lines, Parquet or OTTO's submission CSV. Input is
read `batch_size` sessions at a time and each batch's output is written before the next is read, so an
input larger than memory streams through. docs/serving.md describes the formats.

Scoring: the last `max_length` known clicks of a session, left-padded, give its state (SASRec: `last_hidden`;
GRU4Rec: the state after the last click of the right-aligned sequence), scored in fp32 against the whole
catalogue in chunks of items while a running top-k is kept, so at most batch x chunk scores exist at once.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor

from tron_cli import artifacts, home
from tron_cli.artifacts import Sessions
from tron_cli.batching import SessionStore
from tron_cli.errors import ArtifactError, InputFormatError, MissingInputError, UsageError
from tron_cli.reporting import SILENT, Reporter
from tron_cli.runtime import exact_fp32, resolve_device

INPUT_FORMATS = ("auto", "ndjson", "otto", "parquet")
OUTPUT_FORMATS = ("ndjson", "parquet", "csv")
# scores held at once (rows x catalogue chunk), 64 MB on CPU and 256 MB on CUDA: memory stays bounded whatever
# the catalogue, and each chunk's product is still large enough to run at full speed (benchmarks/recommend.py)
SCORE_BUDGET = {"cpu": 1 << 24, "cuda": 1 << 26}
INT64_RANGE = (-(1 << 63), (1 << 63) - 1)
_INTEGER = re.compile(r"-?[0-9]+")
LINE_HINT = 'Each line must be {"session": ID, "items": [ITEM, ...]} or OTTO\'s {"session": ID, "events": [{"aid": ITEM, "ts": MS, "type": "clicks"}, ...]}'


# ------------------------------------------------------------------------------------------------ scoring core


def gru_last_state(model, windows: Tensor) -> Tensor:
    """GRU4Rec: (B, T) left-padded dense ids -> (B, d) the state after each row's last click.

    Padding fed to a GRU would change its state, so every row is first rotated to put its clicks in front
    (right-padded, as GRU4Rec reads sessions). The rotation is a gather from the row written twice, not a
    modulo, so that the same code exports to ONNX.
    """
    t = windows.shape[1]
    lengths = (windows != 0).sum(1)
    column = torch.arange(t, device=windows.device)
    right = torch.gather(torch.cat([windows, windows], 1), 1, column[None, :] + (t - lengths)[:, None])
    states = model(right)  # (B, T, d)
    last = (lengths - 1).clamp(min=0)
    return torch.gather(states, 1, last[:, None, None].expand(-1, 1, states.shape[-1])).squeeze(1)


def last_states(model, windows: Tensor) -> Tensor:
    """(B, T) left-padded dense ids (0 = padding) -> (B, d): the state that predicts each session's next click."""
    return model.last_hidden(windows) if hasattr(model, "blocks") else gru_last_state(model, windows)


def top_items(model, hidden: Tensor, k: int, excluded: tuple[Tensor, Tensor] | None = None, budget: int | None = None) -> tuple[Tensor, Tensor]:
    """(scores (Q, k) fp32 best first, dense ids (Q, k)) of catalogue items 1..N for each row of `hidden` (Q, d).

    The catalogue is scored in chunks and merged into a running top-k, so at most Q x chunk scores exist.
    `excluded` = (rows, items): pairs whose score becomes -inf (a session's own clicks); with fewer than k
    items left, the last ones of a row are -inf.
    """
    n = model.n_items
    k = min(k, n)
    budget = budget or SCORE_BUDGET.get(hidden.device.type, SCORE_BUDGET["cpu"])
    chunk = max(k, budget // max(1, hidden.shape[0]))
    best_scores = best_ids = None
    with exact_fp32():
        for start in range(1, n + 1, chunk):
            stop = min(start + chunk, n + 1)
            scores = model.score_all(hidden, start, stop)  # (Q, C) fp32
            if excluded is not None:
                rows, items = excluded
                inside = (items >= start) & (items < stop)
                scores[rows[inside], items[inside] - start] = float("-inf")
            values, index = torch.topk(scores, min(k, stop - start), dim=1)
            index = index + start
            if best_scores is not None:
                values, merged = torch.topk(torch.cat([best_scores, values], 1), k, dim=1)
                index = torch.gather(torch.cat([best_ids, index], 1), 1, merged)
            best_scores, best_ids = values, index
    return best_scores, best_ids


@torch.no_grad()
def score_sessions(model, windows: Tensor, k: int, excluded: tuple[Tensor, Tensor] | None = None, budget: int | None = None) -> tuple[Tensor, Tensor]:
    """The scoring core of `tron recommend`: (B, T) left-padded windows -> (scores (B, k), dense ids (B, k))."""
    return top_items(model, last_states(model, windows), k, excluded, budget)


# ------------------------------------------------------------------------------------------------ the catalogue


class Catalogue:
    """Raw ids <-> dense ids 1..N of a model's `items.parquet`, and the items ranked by train clicks."""

    def __init__(self, table: pa.Table):
        column = table.column("id")
        self.numeric = pa.types.is_integer(column.type)
        self.id_type = pa.int64() if self.numeric else pa.string()
        values = column.to_numpy()
        self.raw = values.astype(np.int64) if self.numeric else values.astype(str)  # raw[d - 1] is dense id d
        # `tron preprocess` numbers items in raw-id order, so the ids are usually sorted already
        increasing = len(self.raw) < 2 or bool(np.all(self.raw[1:] > self.raw[:-1]))
        self._order = None if increasing else np.argsort(self.raw, kind="stable")
        self._sorted = self.raw if increasing else self.raw[self._order]
        counts = np.asarray(table.column("count"), dtype=np.int64)
        self.by_clicks = np.argsort(-counts, kind="stable") + 1  # dense ids, most clicked first (ties: lower id)

    def __len__(self) -> int:
        return len(self.raw)

    def dense(self, raw: np.ndarray) -> np.ndarray:
        """Dense ids (int64) of raw ids of the catalogue's type; 0 for an id not in the catalogue."""
        if len(raw) == 0 or len(self._sorted) == 0:
            return np.zeros(len(raw), dtype=np.int64)
        position = np.searchsorted(self._sorted, raw).clip(max=len(self._sorted) - 1)
        found = self._sorted[position] == raw
        index = position if self._order is None else self._order[position]
        return np.where(found, index + 1, 0).astype(np.int64)

    def raw_ids(self, dense: np.ndarray) -> np.ndarray:
        return self.raw[np.asarray(dense, dtype=np.int64) - 1]


@dataclass
class Servable:
    """What recommending needs: the model in eval mode, its catalogue and how it reads sessions."""

    model: Any
    catalogue: Catalogue
    max_length: int  # clicks of a session the model reads (the most recent ones)
    event_types: tuple[str, ...]  # OTTO event types the training dataset kept
    path: Path
    kind: str  # "bundle" or "run"


def load_servable(path: Path, device: torch.device) -> Servable:
    """A bundle (its own items.parquet) or a run dir (the items.parquet of the dataset it was trained on)."""
    from tron_cli.modelio import load_model

    path = Path(path)
    if not path.is_dir():
        raise MissingInputError(f"model {path} does not exist", "Give a bundle (tron export) or a run dir (tron train)")
    model, document, kind = load_model(path, device)
    if kind == "bundle":
        table = artifacts.read_items(path / "items.parquet")
        max_length = int(document["max_length"])
        event_types = tuple(document.get("event_types", ["clicks"]))
        expected = document.get("n_items")
    else:
        trained = document.get("dataset", {})
        dataset = artifacts.read_dataset(Path(trained.get("path", "")))
        if dataset.info.get("catalogue_sha256") != trained.get("catalogue_sha256"):
            raise ArtifactError(f"the dataset of {path} changed since it was trained ({dataset.path})", "Recommend from a bundle made when the run finished (tron export)")
        table = dataset.items()
        max_length = int(document["train"]["max_length"])
        event_types = tuple(dataset.info.get("parameters", {}).get("event_types", ["clicks"]))
        expected = dataset.n_items
    if table.num_rows != model.n_items or expected != model.n_items:
        raise ArtifactError(f"{path}: the model scores {model.n_items} items but its catalogue has {table.num_rows}", "Re-run: tron export")
    return Servable(model, Catalogue(table), max_length, event_types, path, kind)


# ------------------------------------------------------------------------------------------------ input


@dataclass
class Batch:
    """Sessions read from the input: session s has raw ids items[offsets[s]:offsets[s+1]] in click order."""

    sessions: list | pa.Array  # as given: JSON values, or the Parquet column
    where: list[str]  # "FILE:LINE" (or "FILE: row N") of each session, for messages
    offsets: np.ndarray  # int64 (S+1,)
    items: np.ndarray  # raw ids in the catalogue's type (int64 or str)

    def __len__(self) -> int:
        return len(self.where)


class _Malformed(Exception):
    """A problem with one input record; the reader adds where it is."""


def _ids(values: list, numeric: bool, label) -> list:
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
            raise _Malformed(f"{label(index)} is {json.dumps(value)}, not {'an integer' if numeric else 'a string'} id (the catalogue's ids are {'integers' if numeric else 'strings'})")
    return out


def _record_items(record: Any, expect: str, numeric: bool, event_types: tuple[str, ...]) -> list:
    """The raw ids of one JSON line, oldest first; `expect` is ndjson, otto or auto (by the record's keys).

    OTTO events keep the types the model's dataset kept, sorted by time (stably, as tron preprocess sorts)."""
    if not isinstance(record, dict):
        raise _Malformed("a line must be a JSON object")
    if "session" not in record:
        raise _Malformed('field "session" is missing')
    kind = expect if expect != "auto" else ("otto" if "events" in record and "items" not in record else "ndjson")
    if kind == "ndjson":
        items = record.get("items")
        if not isinstance(items, list):
            raise _Malformed('field "items" is missing or not a list' + ("" if expect != "auto" else ' (and there are no OTTO "events")'))
        return _ids(items, numeric, lambda i: f"items[{i}]")
    events = record.get("events")
    if not isinstance(events, list):
        raise _Malformed('field "events" is missing or not a list')
    for index, event in enumerate(events):
        if not isinstance(event, dict) or "aid" not in event:
            raise _Malformed(f'events[{index}] is not an object with an "aid"')
        ts, kind_of_event = event.get("ts"), event.get("type")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool):
            raise _Malformed(f"events[{index}].ts is missing or not a number (got {json.dumps(ts)})")
        if not isinstance(kind_of_event, str):
            raise _Malformed(f"events[{index}].type is missing or not a string (got {json.dumps(kind_of_event)})")
    aids = _ids([event["aid"] for event in events], numeric, lambda i: f"events[{i}].aid")
    kept = [(event["ts"], aid) for event, aid in zip(events, aids) if event["type"] in event_types]
    kept.sort(key=lambda pair: pair[0])  # by time only: events at the same time keep their order
    return [aid for _, aid in kept]


def _id_array(values: list, numeric: bool, where: list[str], offsets: np.ndarray) -> np.ndarray:
    if not numeric:
        return np.array(values, dtype=str) if values else np.zeros(0, dtype=str)
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:
        bad = next(i for i, value in enumerate(values) if not INT64_RANGE[0] <= value <= INT64_RANGE[1])
        session = int(np.searchsorted(offsets, bad, side="right")) - 1
        raise InputFormatError(f"{where[session]}: item id {values[bad]} is outside the range of the catalogue's 64-bit ids", "Fix or remove that line") from None


def _json_batches(stream, name: str, expect: str, numeric: bool, event_types: tuple[str, ...], batch_size: int) -> Iterator[Batch]:
    def batch() -> Batch:
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return Batch(sessions, where, offsets, _id_array(flat, numeric, where, offsets))

    sessions, where, lengths, flat = [], [], [], []
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            raise InputFormatError(f"{name}:{number}: not valid JSON ({error})", LINE_HINT) from None
        try:
            ids = _record_items(record, expect, numeric, event_types)
        except _Malformed as problem:
            raise InputFormatError(f"{name}:{number}: {problem}", LINE_HINT) from None
        sessions.append(record["session"])
        where.append(f"{name}:{number}")
        lengths.append(len(ids))
        flat.extend(ids)
        if len(sessions) == batch_size:
            yield batch()
            sessions, where, lengths, flat = [], [], [], []
    if sessions:
        yield batch()


def _parquet_values(values: pa.Array, numeric: bool, path: Path, row_of) -> np.ndarray:
    """The flat `items` values of a Parquet batch as raw ids of the catalogue's type."""
    if values.null_count:
        raise InputFormatError(f"{path}: row {row_of(int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0]))}: items holds a null id", "Remove the nulls")
    if pa.types.is_integer(values.type):
        return values.to_numpy().astype(np.int64) if numeric else values.cast(pa.string()).to_numpy(zero_copy_only=False).astype(str)
    if not numeric:
        return values.to_numpy(zero_copy_only=False).astype(str)
    integer = pc.match_substring_regex(values, r"^-?[0-9]+$").to_numpy(zero_copy_only=False)
    if not integer.all():
        first = int(np.flatnonzero(~integer)[0])
        raise InputFormatError(f"{path}: row {row_of(first)}: item id {values[first].as_py()!r} is not an integer (the catalogue's ids are integers)")
    try:
        return values.cast(pa.int64()).to_numpy()
    except pa.ArrowInvalid:
        raise InputFormatError(f"{path}: an item id is outside the range of the catalogue's 64-bit ids") from None


def _open_parquet_input(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise InputFormatError(f"{path} is not a readable Parquet file ({error})") from None


def _parquet_batches(parquet: pq.ParquetFile, path: Path, numeric: bool, batch_size: int) -> Iterator[Batch]:
    schema = parquet.schema_arrow
    missing = [column for column in ("session", "items") if column not in schema.names]
    if missing:
        raise InputFormatError(f"{path} has no column {missing[0]!r} (it has {', '.join(schema.names)})", "Give a table with columns session and items (a list of item ids)")
    items_type = schema.field("items").type
    if not (pa.types.is_list(items_type) or pa.types.is_large_list(items_type)) or not (
        pa.types.is_integer(items_type.value_type) or pa.types.is_string(items_type.value_type) or pa.types.is_large_string(items_type.value_type)
    ):
        raise InputFormatError(f"{path}: column items is {items_type}, expected a list of integer or string ids")
    first_row = 0
    try:
        for record_batch in parquet.iter_batches(batch_size=batch_size, columns=["session", "items"]):
            items = record_batch.column("items")
            if items.null_count:
                null_row = first_row + int(np.flatnonzero(items.is_null().to_numpy(zero_copy_only=False))[0]) + 1
                raise InputFormatError(f"{path}: row {null_row}: items is null", "Give every session a list (possibly empty)")
            offsets = np.asarray(items.offsets, dtype=np.int64)
            offsets = offsets - offsets[0]
            base = first_row

            def row_of(position: int, offsets=offsets, base=base) -> int:
                return base + int(np.searchsorted(offsets, position, side="right"))

            values = _parquet_values(items.flatten(), numeric, path, row_of)
            where = [f"{path}: row {first_row + i + 1}" for i in range(len(items))]
            yield Batch(record_batch.column("session"), where, offsets, values)
            first_row += len(items)
    except (pa.ArrowException, OSError) as error:
        raise InputFormatError(f"{path} is truncated or corrupt ({error})") from None


def _input_kind(input_path: str, input_format: str) -> str:
    if input_format == "parquet" and input_path == "-":
        raise UsageError("Parquet input needs a file: --input FILE.parquet, not stdin")
    if input_format == "auto":
        return "parquet" if input_path != "-" and Path(input_path).suffix.lower() in (".parquet", ".pq") else "auto"
    return input_format


@contextlib.contextmanager
def _batches(input_path: str, input_format: str, numeric: bool, event_types: tuple[str, ...], batch_size: int, report: Reporter) -> Iterator[tuple[Iterator[Batch], int | None]]:
    """(batches, number of sessions when the input says so) of `input_path` ('-' = stdin)."""
    kind = _input_kind(input_path, input_format)
    if kind == "parquet":
        parquet = _open_parquet_input(Path(input_path))
        yield _parquet_batches(parquet, Path(input_path), numeric, batch_size), parquet.metadata.num_rows
        return
    if input_path == "-":
        if sys.stdin.isatty():
            report.info("Reading sessions from stdin (one JSON object a line; Ctrl-D ends the input).")
        yield _json_batches(sys.stdin.buffer, "stdin", kind, numeric, event_types, batch_size), None
        return
    with open(input_path, "rb") as handle:
        yield _json_batches(handle, input_path, kind, numeric, event_types, batch_size), None


# ------------------------------------------------------------------------------------------------ output


@dataclass
class Recommended:
    """One batch's answer: session s gets raw ids ids[offsets[s]:offsets[s+1]] with those scores, best first.

    A `fallback` session had no known item and got the most popular items: its scores mean nothing and are
    written as null."""

    sessions: list | pa.Array
    where: list[str]
    offsets: np.ndarray
    ids: np.ndarray
    scores: np.ndarray  # float32
    fallback: np.ndarray  # bool (S,)

    def session_values(self) -> list:
        return self.sessions.to_pylist() if isinstance(self.sessions, pa.Array) else self.sessions

    def id_lists(self) -> list[list]:
        ids, offsets = self.ids.tolist(), self.offsets.tolist()
        return [ids[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


class _JsonLines:
    """One line per session: {"session": ..., "items": [...], "scores": [...]}, scores to 6 significant digits."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, batch: Recommended) -> None:
        # formatted by hand, not json.dumps of a dict: several times faster, which matters once scoring is
        # fast (a GPU); "{:.6g}" of a finite float is a valid JSON number
        scores, offsets = batch.scores.tolist(), batch.offsets.tolist()
        lines = []
        for s, (session, ids) in enumerate(zip(batch.session_values(), batch.id_lists())):
            listed = "null" if batch.fallback[s] else "[" + ", ".join(map("{:.6g}".format, scores[offsets[s] : offsets[s + 1]])) + "]"
            lines.append(f'{{"session": {json.dumps(session, default=str)}, "items": {json.dumps(ids)}, "scores": {listed}}}\n')
        self.handle.write("".join(lines))
        self.handle.flush()

    def close(self) -> None:
        pass


class _SubmissionCsv:
    """OTTO's Kaggle submission: `session_type,labels`, then <session>_clicks, _carts and _orders, each with the
    same space-separated ids (the model predicts the next interaction; a submission needs all three rows)."""

    TYPES = ("clicks", "carts", "orders")

    def __init__(self, handle):
        self.handle = handle
        self.writer = csv.writer(handle, lineterminator="\n")
        self.writer.writerow(["session_type", "labels"])

    def write(self, batch: Recommended) -> None:
        rows = []
        for session, ids in zip(batch.session_values(), batch.id_lists()):
            name = session if isinstance(session, str) else json.dumps(session, default=str)
            labels = " ".join(map(str, ids))
            rows += [[f"{name}_{kind}", labels] for kind in self.TYPES]
        self.writer.writerows(rows)
        self.handle.flush()

    def close(self) -> None:
        pass


class _ParquetOutput:
    """Columns session (as given), items (list of raw ids), scores (list<float32>, null for a popular fallback).

    The session column's type comes from the first batch: the input's Parquet type, else int64 when every
    session id is a JSON integer, else string (strings as they are, other JSON values as JSON text).
    """

    def __init__(self, path: Path, id_type: pa.DataType):
        self.path = path
        self.id_type = id_type
        self.writer: pq.ParquetWriter | None = None
        self.session_type: pa.DataType | None = None

    def _sessions(self, batch: Recommended) -> pa.Array:
        if isinstance(batch.sessions, pa.Array):
            return batch.sessions if self.session_type is None else batch.sessions.cast(self.session_type)
        values = batch.sessions
        integers = all(type(v) is int and INT64_RANGE[0] <= v <= INT64_RANGE[1] for v in values)
        if self.session_type is None:
            self.session_type = pa.int64() if integers and values else pa.string()
        if self.session_type == pa.int64():
            if not integers:
                bad = next(i for i, v in enumerate(values) if not (type(v) is int and INT64_RANGE[0] <= v <= INT64_RANGE[1]))
                raise InputFormatError(
                    f"{batch.where[bad]}: session {json.dumps(values[bad], default=str)} is not an integer, but the Parquet output's session column is int64 (from the first sessions)",
                    "Use one type of session id, or --format ndjson",
                )
            return pa.array(values, type=pa.int64())
        return pa.array([v if isinstance(v, str) else json.dumps(v, default=str) for v in values], type=pa.string())

    def write(self, batch: Recommended) -> None:
        sessions = self._sessions(batch)
        offsets = pa.array(batch.offsets.astype(np.int32))
        items = pa.ListArray.from_arrays(offsets, pa.array(batch.ids, type=self.id_type))
        scores = pa.ListArray.from_arrays(offsets, pa.array(batch.scores, type=pa.float32()), mask=pa.array(batch.fallback))
        table = pa.table({"session": sessions, "items": items, "scores": scores})
        if self.writer is None:
            self.session_type = sessions.type
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is None:  # no session: an empty table of the same layout
            schema = pa.schema([("session", self.session_type or pa.int64()), ("items", pa.list_(self.id_type)), ("scores", pa.list_(pa.float32()))])
            self.writer = pq.ParquetWriter(self.path, schema, compression="zstd")
        self.writer.close()


def output_format(output_path: str, requested: str | None) -> str:
    """--format, or by the output file's extension: .parquet, .csv, anything else (and stdout) JSON lines."""
    if requested is None:
        suffix = Path(output_path).suffix.lower() if output_path != "-" else ""
        requested = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(suffix, "ndjson")
    if requested not in OUTPUT_FORMATS:
        raise UsageError(f"unknown output format {requested!r}", f"Use one of: {', '.join(OUTPUT_FORMATS)}")
    if requested == "parquet" and output_path == "-":
        raise UsageError("Parquet output needs a file: --output FILE.parquet, not stdout")
    return requested


@contextlib.contextmanager
def _writer(output_path: str, fmt: str, id_type: pa.DataType) -> Iterator[Any]:
    """A writer for the output; a file is written under a temporary name and renamed only when complete."""
    classes = {"ndjson": _JsonLines, "csv": _SubmissionCsv}
    if output_path == "-":
        writer = classes[fmt](sys.stdout)
        yield writer
        writer.close()
        return
    with artifacts.atomic_path(Path(output_path)) as tmp:
        if fmt == "parquet":
            writer = _ParquetOutput(tmp, id_type)
            try:
                yield writer
            finally:
                writer.close()  # on a failure too: the file is closed before its temporary name is removed
            return
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = classes[fmt](handle)
            yield writer
            writer.close()


# ------------------------------------------------------------------------------------------------ the stage


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class RecommendOptions:
    k: int = 20
    exclude_seen: bool = False
    batch_size: int = 1024
    input_format: str = "auto"
    output_format: str | None = None  # None: by the output's extension
    device: str = "auto"


def recommend_batch(servable: Servable, batch: Batch, k: int, exclude_seen: bool, device: torch.device) -> tuple[Recommended, int, int]:
    """One batch's recommendations, the number of unknown ids skipped and the sessions that had some."""
    catalogue = servable.catalogue
    k = min(k, len(catalogue))
    dense = catalogue.dense(batch.items)
    owner = np.repeat(np.arange(len(batch)), np.diff(batch.offsets))
    known = dense > 0
    unknown_ids = int((~known).sum())
    unknown_sessions = int(len(np.unique(owner[~known])))
    lengths = np.bincount(owner[known], minlength=len(batch)).astype(np.int64)
    scored = np.flatnonzero(lengths > 0)
    ids = np.zeros((len(batch), k), dtype=np.int64)
    scores = np.full((len(batch), k), -np.inf, dtype=np.float32)
    ids[lengths == 0] = catalogue.by_clicks[:k]  # no known item: the most popular ones
    if len(scored):
        offsets = np.zeros(len(scored) + 1, dtype=np.int64)
        np.cumsum(lengths[scored], out=offsets[1:])
        store = SessionStore(Sessions(scored, offsets, dense[known].astype(np.int32), np.zeros(int(offsets[-1]), dtype=np.int64)), device)
        windows = store.tail_windows(torch.arange(len(scored), device=device), int(min(servable.max_length, lengths.max())))
        excluded = None
        if exclude_seen:  # every known click of the session, not only those in the window
            excluded = (torch.repeat_interleave(torch.arange(len(scored), device=device), store.lengths), store.items)
        best_scores, best_ids = score_sessions(servable.model, windows, k, excluded)
        ids[scored] = best_ids.cpu().numpy()
        scores[scored] = best_scores.cpu().numpy()
    keep = np.isfinite(scores) | (lengths == 0)[:, None]  # excluded items end a short row with -inf: drop them
    counts = keep.sum(1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    result = Recommended(batch.sessions, batch.where, offsets, catalogue.raw_ids(ids[keep]), scores[keep], lengths == 0)
    return result, unknown_ids, unknown_sessions


def recommend(model_path: Path | None, input_path: str = "-", output_path: str = "-", options: RecommendOptions = RecommendOptions(), report: Reporter = SILENT) -> dict[str, Any]:
    """Run the stage: stream the input's sessions through the model into the output; returns counts."""
    if options.k < 1 or options.batch_size < 1:
        raise UsageError("-k and --batch-size must be at least 1")
    if options.input_format not in INPUT_FORMATS:
        raise UsageError(f"unknown input format {options.input_format!r}", f"Use one of: {', '.join(INPUT_FORMATS)}")
    fmt = output_format(output_path, options.output_format)
    _input_kind(input_path, options.input_format)
    if input_path != "-" and not Path(input_path).is_file():
        raise MissingInputError(f"input {input_path} does not exist")
    device = resolve_device(options.device)
    if model_path is None:
        model_path = home.latest_model()
    elif not Path(model_path).is_dir() and len(Path(model_path).parts) == 1 and (home.bundles_root() / model_path).is_dir():
        model_path = home.bundles_root() / model_path  # a bundle's name
    model_path = Path(model_path)
    servable = load_servable(model_path, device)
    report.detail(f"{model_path}: {servable.model.__class__.__name__}, {len(servable.catalogue):,} items, the last {servable.max_length} clicks of a session")
    totals = {"sessions": 0, "fallback": 0, "unknown_ids": 0, "unknown_sessions": 0}
    started = time.perf_counter()
    numeric = servable.catalogue.numeric
    with _batches(input_path, options.input_format, numeric, servable.event_types, options.batch_size, report) as (batches, total):
        with _writer(output_path, fmt, servable.catalogue.id_type) as writer, report.task("recommending", total=total) as task:
            for batch in batches:
                result, unknown_ids, unknown_sessions = recommend_batch(servable, batch, options.k, options.exclude_seen, device)
                writer.write(result)
                totals["sessions"] += len(batch)
                totals["fallback"] += int(result.fallback.sum())
                totals["unknown_ids"] += unknown_ids
                totals["unknown_sessions"] += unknown_sessions
                task.update(advance=len(batch))
    seconds = time.perf_counter() - started
    if totals["unknown_ids"]:
        report.warn(f"{_count(totals['unknown_ids'], 'unknown item id')} skipped in {_count(totals['unknown_sessions'], 'session')}")
    if totals["fallback"]:
        report.warn(f"{_count(totals['fallback'], 'session')} had no known item: {'they' if totals['fallback'] > 1 else 'it'} got the most popular items")
    if totals["sessions"] == 0:
        report.info(f"{'stdin' if input_path == '-' else input_path} holds no session: nothing to recommend")
    report.detail(f"{totals['sessions']:,} sessions in {seconds:.2f} s ({totals['sessions'] / max(seconds, 1e-9):,.0f} sessions/s)")
    return {**totals, "seconds": seconds, "model": str(model_path), "output_format": fmt}
